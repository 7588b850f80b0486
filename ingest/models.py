"""Model loading: zoo names, TransformerLens config + state-dict files, and cached hub models.

``load_model(spec)`` tries, in order:
  1. a zoo name (``induction-2l``): the atlas home's cache, the shipped weights, else trained now;
     ``NAME@STEP`` loads a training checkpoint (model id ``NAME/step-STEP``);
  2. a path: a directory with ``config.json`` (HookedTransformerConfig fields) and ``model.pt``
     (a state dict), or one ``.pt`` file holding ``{"config": {...}, "state_dict": {...}}``;
  3. a TransformerLens pretrained name whose weights are in the local Hugging Face cache
     (loaded offline; a clear error when they are not cached).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from atlas.errors import ModelError
from atlas.ids import validate_model_id
from atlas.records import ModelRecord

__all__ = ["LoadedModel", "load_model", "model_record"]


@dataclass
class LoadedModel:
    """A HookedTransformer with the id the atlas knows it by and where it came from."""

    model: Any
    model_id: str
    source: str
    info: dict[str, Any]


def _from_config_and_state(config: dict[str, Any], state: dict[str, Any], where: str) -> Any:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    try:
        cfg = HookedTransformerConfig(**config)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ModelError(f"invalid TransformerLens config in {where}: {exc}") from exc
    model = HookedTransformer(cfg)
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError) as exc:
        first = str(exc).splitlines()[0]
        raise ModelError(f"state dict in {where} does not fit its config: {first}") from exc
    model.eval()
    return model


def _torch_load(path: Path) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about unknown pickle protocols before failing
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and EOF errors all mean the same thing to a user
        raise ModelError(f"cannot read checkpoint {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'corrupt file'}") from exc


def _load_path(path: Path) -> LoadedModel:
    if path.is_dir():
        cfg_file, state_file = path / "config.json", path / "model.pt"
        if not cfg_file.exists() or not state_file.exists():
            raise ModelError(f"model directory {path} needs config.json and model.pt")
        try:
            config = json.loads(cfg_file.read_text())
        except json.JSONDecodeError as exc:
            raise ModelError(f"cannot read {cfg_file}: {exc}") from exc
        state = _torch_load(state_file)
        name = path.name
    else:
        blob = _torch_load(path)
        if not isinstance(blob, dict) or "config" not in blob or "state_dict" not in blob:
            raise ModelError(f"checkpoint {path} must hold a dict with 'config' and 'state_dict'")
        config, state = blob["config"], blob["state_dict"]
        name = path.stem
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise ModelError(f"checkpoint {path}: config must be a dict and the state dict a mapping of tensors")
    model = _from_config_and_state(config, state, str(path))
    model_id = validate_model_id(config.get("model_name") if isinstance(config.get("model_name"), str) and config.get("model_name") != "custom" else name)
    return LoadedModel(model, model_id, f"file:{path.resolve()}", {})


def _load_pretrained(name: str) -> LoadedModel:
    from transformer_lens import HookedTransformer
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        official = get_official_model_name(name)
    except ValueError:
        return None  # type: ignore[return-value]
    if not _hub_cached(official):
        raise ModelError(
            f"the weights of {official} are not in the local Hugging Face cache; download them once where there "
            "is network access (e.g. HookedTransformer.from_pretrained) and run again"
        )
    old = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        model = HookedTransformer.from_pretrained(name, device="cpu")
    except Exception as exc:
        raise ModelError(
            f"the weights of {official} are not in the local Hugging Face cache (offline load failed: "
            f"{type(exc).__name__}); download them once where there is network access"
        ) from exc
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    model.eval()
    return LoadedModel(model, validate_model_id(name), f"pretrained:{official}", {})


def load_model(spec: str, home: Path, progress_factory: Any = None) -> LoadedModel:
    """Load a model by zoo name, path, or cached TransformerLens pretrained name.

    Raises:
        ModelError: unknown name, missing or corrupt file, weights not cached.
    """
    from ingest.zoo import ZOO, load_zoo_checkpoint, load_zoo_model

    if "@" in spec and spec.split("@", 1)[0] in ZOO:
        name, step = spec.split("@", 1)
        if not step.isdigit():
            raise ModelError(f"checkpoint spec {spec!r}: expected NAME@STEP, e.g. {name}@300")
        model, info = load_zoo_checkpoint(name, int(step), home)
        return LoadedModel(model, f"{name}/step-{int(step)}", f"zoo:{spec}", info)
    if spec in ZOO:
        model, info = load_zoo_model(spec, home, progress_factory)
        return LoadedModel(model, spec, f"zoo:{spec}", info)
    path = Path(spec).expanduser()
    if path.exists():
        return _load_path(path)
    if spec.endswith((".pt", ".pth", ".bin")) or os.sep in spec and not _looks_like_hub(spec):
        raise ModelError(f"model file {spec} does not exist")
    loaded = _load_pretrained(spec)
    if loaded is None:
        raise ModelError(
            f"unknown model {spec!r}: not a zoo model ({', '.join(sorted(ZOO))}), not an existing file, "
            "and not a TransformerLens pretrained name"
        )
    return loaded


def _hub_cached(repo_id: str) -> bool:
    """Whether the hub repository has at least its config in the local cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return False
    hit = try_to_load_from_cache(repo_id, "config.json")
    return isinstance(hit, str)


def _looks_like_hub(spec: str) -> bool:
    return spec.count("/") == 1 and not spec.startswith((".", "/", "~"))


def model_record(loaded: LoadedModel) -> ModelRecord:
    """The ``:Model`` node of a loaded model."""
    cfg = loaded.model.cfg
    return ModelRecord(
        model_id=loaded.model_id,
        name=loaded.model_id,
        architecture=cfg.original_architecture or ("attn-only" if cfg.attn_only else "HookedTransformer"),
        n_layers=int(cfg.n_layers),
        n_heads=int(cfg.n_heads),
        d_model=int(cfg.d_model),
        d_head=int(cfg.d_head),
        d_mlp=None if cfg.attn_only else int(cfg.d_mlp),
        d_vocab=int(cfg.d_vocab),
        n_ctx=int(cfg.n_ctx),
        source=loaded.source,
    )