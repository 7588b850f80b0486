"""Model loading: zoo names, TransformerLens config + state-dict files, and cached hub models.

``load_model(spec)`` tries, in order:
  1. a zoo name (``induction-2l``): the atlas home's cache, the shipped weights, else trained now;
     ``NAME@STEP`` loads a training checkpoint (model id ``NAME/step-STEP``);
  2. a path: a directory with ``config.json`` (HookedTransformerConfig fields) and ``model.pt``
     (a state dict), a Hugging Face ``save_pretrained`` folder (config.json + safetensors, with its
     tokenizer if it has one) of a family TransformerLens converts, or one ``.pt`` file holding
     ``{"config": {...}, "state_dict": {...}}``
     (``cfg`` is accepted for ``config``; numpy scalars and a ``dtype`` string in the config load);
  3. a TransformerLens pretrained name (``pythia-70m``, ``gpt2``): downloaded through the normal
     Hugging Face cache when online, read from the cache alone when offline (``--offline``,
     ``HF_HUB_OFFLINE=1``); one clear line when the weights are neither reachable nor cached.

Identity: every model carries :func:`weights_hash` (its weights and the config fields that change
its function), recorded on its ``:Model`` node. A zoo model's id is its name for the weights the
package ships and ``NAME-<hash[:8]>`` for weights trained here that differ (:func:`zoo_model_id`);
its checkpoints are ``FINAL_ID/step-S`` after the final model of their training run. A pretrained
model's id is its TransformerLens name, and a model file's its name (the
config's ``model_name``, else the file or folder name) plus the first 8 hex digits of that hash:
two files that share a name are two models, one file reached by two paths is one. ``--model-id``
names a model explicitly; the store refuses an id that already holds other weights.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import pickle
import re
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from atlas.errors import ModelError
from atlas.ids import checkpoint_model_id, validate_model_id
from atlas.records import ModelRecord

__all__ = ["LoadedModel", "hub_offline", "load_model", "model_record", "weights_hash", "zoo_model_id"]


@dataclass
class LoadedModel:
    """A HookedTransformer with the id the atlas knows it by and where it came from."""

    model: Any
    model_id: str
    source: str
    info: dict[str, Any]

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return next(iter(self.model.parameters())).device

    @functools.cached_property
    def weights_hash(self) -> str:
        """:func:`weights_hash` of the model (computed once)."""
        return weights_hash(self.model)


_DTYPES = {"float32": torch.float32, "float": torch.float32, "float64": torch.float64, "double": torch.float64,
           "float16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16}


def _plain_config(config: dict[str, Any], where: str) -> dict[str, Any]:
    """``config`` with numpy scalars made Python numbers and a ``dtype`` string made a torch dtype."""
    import numpy as np

    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, np.generic):
            value = value.item()
        if key == "dtype" and isinstance(value, str):
            name = value.removeprefix("torch.")
            if name not in _DTYPES:
                raise ModelError(f"config field 'dtype' in {where} is {value!r}: use one of {', '.join(sorted(_DTYPES))}")
            value = _DTYPES[name]
        out[key] = value
    return out


def _config_error(exc: Exception, config: dict[str, Any], where: str) -> ModelError:
    """One line naming the config field behind a HookedTransformerConfig error."""
    import inspect

    from transformer_lens import HookedTransformerConfig

    known = set(inspect.signature(HookedTransformerConfig).parameters)
    unknown = sorted(k for k in config if k not in known)
    if unknown:
        return ModelError(f"config in {where} has fields TransformerLens does not know: {', '.join(map(repr, unknown))}")
    required = [k for k, p in inspect.signature(HookedTransformerConfig).parameters.items()
                if p.default is inspect.Parameter.empty and k not in config]
    if required:
        return ModelError(f"config in {where} lacks required fields: {', '.join(map(repr, required))}")
    return ModelError(f"invalid TransformerLens config in {where}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'rejected'}")


def _state_mismatch(expected: dict[str, Any], state: dict[str, Any], where: str) -> str | None:
    """A one-line summary of how ``state`` differs from the model its config builds, or None."""

    def some(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    shapes = [f"{k} {tuple(state[k].shape)} in the file vs {tuple(expected[k].shape)} from the config"
              for k in sorted(expected) if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(expected[k].shape)]
    parts = []
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es): {some(shapes)}")
    if missing:
        parts.append(f"{len(missing)} missing key(s): {some(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {some(unexpected)}")
    return f"the state dict in {where} does not fit its config: " + "; ".join(parts) if parts else None


def _from_config_and_state(config: dict[str, Any], state: dict[str, Any], where: str) -> Any:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    config = _plain_config(config, where)
    try:
        cfg = HookedTransformerConfig(**config)
        model = HookedTransformer(cfg)
    except (TypeError, ValueError, AssertionError, KeyError, AttributeError) as exc:
        raise _config_error(exc, config, where) from exc
    # buffers TransformerLens rebuilds from the config (masks) may be absent from a saved state dict
    rebuilt = {k for k, _ in model.named_buffers()}
    expected = {k: v for k, v in model.state_dict().items() if k not in rebuilt or k in state}
    problem = _state_mismatch(expected, state, where)
    if problem:
        raise ModelError(problem)
    try:
        model.load_state_dict(state, strict=False)
    except (RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).replace("\n", " ").replace("\t", " ")
        raise ModelError(f"state dict in {where} does not fit its config: {first[:300]}") from exc
    model.eval()
    return model


def _numpy_globals() -> list[Any]:
    """The numpy classes a checkpoint needs to hold numpy scalars (e.g. ``np.int64(4)`` in a config)."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    return [core.multiarray.scalar, np.dtype, *(getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType"))]


def _torch_load(path: Path) -> Any:
    """``torch.load`` without running code from the file: tensors, plain containers and numpy scalars."""
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(_numpy_globals()):
            warnings.simplefilter("ignore")  # torch warns about unknown pickle protocols before failing
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if detail:
            raise ModelError(f"checkpoint {path} holds a Python object of type {detail.group(1)}, which the atlas does not unpickle "
                             "(it could run code): save plain dicts, numbers, strings and tensors") from exc
        raise ModelError(f"cannot read checkpoint {path}: {_first_line(exc)}") from exc
    except Exception as exc:  # zip and EOF errors all mean the same thing to a user
        raise ModelError(f"cannot read checkpoint {path}: {type(exc).__name__}: {_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else "corrupt file"


def weights_hash(model: Any) -> str:
    """SHA-256 of a model's weights (every state-dict tensor's name, dtype, shape and bytes) and of
    the config fields that change what it computes without changing a weight's shape."""
    cfg = model.cfg
    h = hashlib.sha256(json.dumps({k: getattr(cfg, k, None) for k in IDENTITY_FIELDS}, sort_keys=True, default=str).encode())
    for key, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


IDENTITY_FIELDS = ("act_fn", "normalization_type", "positional_embedding_type", "rotary_dim", "rotary_base", "attention_dir",
                   "parallel_attn_mlp", "gated_mlp", "attn_only", "use_qk_norm", "eps", "final_rms", "original_architecture",
                   "use_attn_scale", "attn_scale", "attn_scores_soft_cap", "output_logits_soft_cap", "d_vocab_out")
"""Config fields in a model's identity next to its weights (two models equal in every weight but
their activation function are different models)."""


HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


def _is_hf_folder(path: Path) -> bool:
    """A folder ``transformers``' ``save_pretrained`` wrote: config.json naming a model type, and weights."""
    try:
        conf = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(conf, dict) and "model_type" in conf and any((path / w).exists() for w in HF_WEIGHTS)


def _load_hf_folder(path: Path) -> LoadedModel:
    """A Hugging Face model folder, converted to a HookedTransformer by TransformerLens's own
    converters (no weight processing: the model computes what the Hugging Face model computes), with
    the folder's tokenizer when it has one.

    TransformerLens 3.9 picks a converter from the folder *name* for some families (a path containing
    "llama" never reads its config) and reads ``n_ctx`` from GPT-2 configs that recent
    ``transformers`` no longer writes, so the converter is given a neutrally named view of the folder
    (links to its files) whose config.json has ``n_ctx`` filled in from ``n_positions``.
    """
    import tempfile

    import transformer_lens.loading_from_pretrained as loading
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    conf = json.loads((path / "config.json").read_text())
    arch = (conf.get("architectures") or [conf.get("model_type")])[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with quiet_transformers():
                hf = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        except Exception as exc:
            raise ModelError(f"cannot load the Hugging Face model in {path} ({arch}): {_first_line(exc)}") from exc
        with tempfile.TemporaryDirectory() as tmp:
            view = Path(tmp) / "model"
            view.mkdir()
            for f in path.iterdir():
                if f.name != "config.json":
                    os.symlink(f.resolve(), view / f.name)
            if conf.get("model_type") == "gpt2" and "n_ctx" not in conf:
                conf = {**conf, "n_ctx": conf.get("n_positions")}
            (view / "config.json").write_text(json.dumps(conf))
            try:
                cfg_dict = loading.convert_hf_model_config(str(view))
                cfg_dict["tokenizer_name"] = None  # the folder's own tokenizer, below, not one fetched by name
                cfg = HookedTransformerConfig(**cfg_dict, device="cpu")
                state = loading.get_pretrained_state_dict(str(view), cfg, hf_model=hf)
            except Exception as exc:
                raise ModelError(f"TransformerLens cannot convert the {arch} model in {path}: {type(exc).__name__}: {_first_line(exc)}") from exc
        model = HookedTransformer(cfg)
        model.load_and_process_state_dict(state, fold_ln=False, center_writing_weights=False, center_unembed=False,
                                          fold_value_biases=False, refactor_factored_attn_matrices=False)
        if any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
            try:
                model.set_tokenizer(AutoTokenizer.from_pretrained(path, local_files_only=True))
            except Exception as exc:
                raise ModelError(f"the tokenizer in {path} does not load: {_first_line(exc)}") from exc
    model.eval()
    return LoadedModel(model, _file_model_id(path.name, weights_hash(model)), f"hf-folder:{path.resolve()}", {"architecture": arch})


def _load_path(path: Path) -> LoadedModel:
    from ingest.model.encoder import is_encoder_folder, load_encoder

    if path.is_dir() and is_encoder_folder(path):
        model = load_encoder(path)
        return LoadedModel(model, _file_model_id(path.name, weights_hash(model)), f"hf-folder:{path.resolve()}",
                           {"architecture": model.cfg.original_architecture, "encoder": True})
    if path.is_dir() and _is_hf_folder(path):
        return _load_hf_folder(path)
    if path.is_dir():
        cfg_file, state_file = path / "config.json", path / "model.pt"
        if not cfg_file.exists() or not state_file.exists():
            found = sorted(p.name for p in path.iterdir())[:8]
            raise ModelError(f"model directory {path} needs config.json (TransformerLens config) and model.pt (state dict), or "
                             f"config.json with a model_type and {HF_WEIGHTS[0]} (a Hugging Face save_pretrained folder); "
                             f"found: {', '.join(found) or 'nothing'}")
        try:
            config = json.loads(cfg_file.read_text())
        except json.JSONDecodeError as exc:
            raise ModelError(f"cannot read {cfg_file}: {exc}") from exc
        state = _torch_load(state_file)
        name = path.name
    else:
        blob = _torch_load(path)
        keys = sorted(map(str, blob)) if isinstance(blob, dict) else []
        config_key = next((k for k in ("config", "cfg") if k in keys), None)
        if config_key is None or "state_dict" not in keys:
            what = f"a dict with keys {', '.join(map(repr, keys[:8]))}" if isinstance(blob, dict) else f"a {type(blob).__name__}"
            raise ModelError(f"checkpoint {path} must hold a dict with 'config' (or 'cfg') and 'state_dict'; it holds {what}")
        config, state = blob[config_key], blob["state_dict"]
        name = path.stem
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise ModelError(f"checkpoint {path}: config must be a dict and the state dict a mapping of tensors")
    model = _from_config_and_state(config, state, str(path))
    named = config.get("model_name")
    base = named if isinstance(named, str) and named not in ("", "custom") else name
    return LoadedModel(model, _file_model_id(base, weights_hash(model)), f"file:{path.resolve()}", {})


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No "Loading weights" bars from ``transformers`` while it reads a local folder (a user error
    after it stays one line on stderr); restored after."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _file_model_id(name: str, digest: str) -> str:
    """A model file's id: its name and the first 8 hex digits of its weights' hash, so two files
    that share a name but not their weights are two models, and one file by two paths is one."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "model"
    return validate_model_id(f"{safe}-{digest[:8]}")


def hub_offline() -> bool:
    """Whether hub downloads are off: ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set (the
    ``--offline`` flag sets the first)."""
    return any(os.environ.get(k, "").strip().upper() in {"1", "ON", "YES", "TRUE"} for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@contextlib.contextmanager
def _offline_hub() -> Iterator[None]:
    """Hub offline mode for the duration, also when ``huggingface_hub`` was imported before the
    environment said so (it reads the variable once, at import)."""
    import huggingface_hub.constants as hub_constants

    old_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    old_flag = hub_constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = old_flag
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _load_pretrained(name: str, checkpoint: int | None = None) -> LoadedModel | None:
    """A TransformerLens pretrained name: downloaded through the Hugging Face cache when online
    (the hub's own progress bars), read from the cache alone when :func:`hub_offline`; None when
    ``name`` is not a TransformerLens name. TransformerLens's default weight processing applies (the
    model ``HookedTransformer.from_pretrained(name)`` gives): edge scores are invariant to it but
    for the raw ``target-logit`` metric (tested).

    ``checkpoint`` loads that training step's revision (Pythia's ``stepN`` branches, Stanford CRFM's
    checkpoints), a model of its own id: ``NAME/step-N`` beside the final ``NAME``, as zoo checkpoints."""
    from transformer_lens import HookedTransformer
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        official = get_official_model_name(name)
    except ValueError:
        return None
    if checkpoint is not None:
        import logging

        from transformer_lens.loading_from_pretrained import get_checkpoint_labels

        root_logger = logging.getLogger()
        level = root_logger.level
        root_logger.setLevel(logging.ERROR)  # TransformerLens warns on the root logger that Pythia's repos were renamed in 2023
        try:
            labels, _ = get_checkpoint_labels(name)
        except ValueError as exc:
            raise ModelError(f"{official} has no training checkpoints that TransformerLens knows (Pythia and Stanford CRFM models do)") from exc
        finally:
            root_logger.setLevel(level)
        if checkpoint not in labels:
            near = sorted(labels, key=lambda v: abs(v - checkpoint))[:3]
            raise ModelError(f"{official} has no checkpoint at step {checkpoint}: the nearest are {', '.join(map(str, sorted(near)))}")
    revision = None if checkpoint is None else _checkpoint_revision(official, checkpoint)
    offline = hub_offline()
    if offline and not _hub_cached(official, revision):
        raise ModelError(
            f"the weights of {official} are not in the local Hugging Face cache and downloads are off "
            "(--offline or HF_HUB_OFFLINE); run once without them where there is network access"
        )
    try:
        # TransformerLens prints "Loaded pretrained model ..." on stdout, where --json output goes
        with _offline_hub() if offline else contextlib.nullcontext(), contextlib.redirect_stdout(sys.stderr):
            if revision is None:
                model = HookedTransformer.from_pretrained(name, device="cpu")
            else:
                # the checkpoint's weights read by transformers at that revision and handed over: TransformerLens
                # 3.9's own checkpoint path sends an empty token ("Bearer ") that the hub client refuses
                from transformers import AutoModelForCausalLM

                with quiet_transformers():
                    hf = AutoModelForCausalLM.from_pretrained(official, revision=revision, token=os.environ.get("HF_TOKEN") or None)
                model = HookedTransformer.from_pretrained(name, device="cpu", hf_model=hf)
    except Exception as exc:
        why = " ".join(str(exc).split())[:300] or type(exc).__name__
        if offline:
            raise ModelError(f"the weights of {official} are not complete in the local Hugging Face cache "
                             f"(offline load failed: {why})") from exc
        raise ModelError(
            f"could not load {official} from the Hugging Face hub ({why}); without network access, "
            "download it once elsewhere into the cache and use --offline"
        ) from exc
    model.eval()
    if checkpoint is not None:
        return LoadedModel(model, checkpoint_model_id(name, checkpoint), f"pretrained:{official}@{revision}", {"checkpoint": checkpoint})
    return LoadedModel(model, validate_model_id(name), f"pretrained:{official}", {})


def _checkpoint_revision(official: str, step: int) -> str:
    """The hub branch TransformerLens reads a training checkpoint from."""
    return f"checkpoint-{step}" if official.startswith("stanford-crfm/") else f"step{step}"


def load_model(spec: str, home: Path, progress_factory: Any = None, model_id: str | None = None,
               allow_encoder: bool = False, *, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None) -> LoadedModel:
    """Load a model by zoo name, path, or TransformerLens pretrained name; ``model_id``
    replaces the id it would get (see module docstring). BERT-style encoders load only where
    ``allow_encoder`` says the caller maps them (``atlas ingest``/``evaluate`` with ``--metric cosine``).

    The model is placed on ``device`` in ``dtype`` (:mod:`ingest.model.device`; default: the placement in
    force, ``auto`` and ``float32``). Its identity (:func:`weights_hash`) is that of the weights as stored:
    a model cast to bfloat16 is the same model, computed in another precision (the run records it).

    Raises:
        ModelError: unknown name, missing or corrupt file, weights not cached.
        ValidationError: ``model_id`` is not a valid id, or an unknown device or dtype.
    """
    from ingest.model.device import place_model, resolve_device, resolve_dtype
    from ingest.model.family import is_encoder

    target, precision = resolve_device(device), resolve_dtype(dtype)  # a bad flag fails before anything loads
    loaded = _load_model(spec, home, progress_factory)
    if is_encoder(loaded.model) and not allow_encoder:
        raise ModelError(f"{spec} is a BERT-style encoder: so far only 'atlas ingest' and 'atlas evaluate' map encoders "
                         "(--metric cosine, --method eap or patching)")
    if model_id is not None:
        loaded.model_id = validate_model_id(model_id)
    if next(iter(loaded.model.parameters())).dtype != precision:
        _ = loaded.weights_hash  # the identity of the weights as stored, before the cast
    place_model(loaded.model, target, precision)
    return loaded


def _load_model(spec: str, home: Path, progress_factory: Any = None) -> LoadedModel:
    from ingest.model.zoo import ZOO, load_zoo_checkpoint, load_zoo_model

    if "@" in spec and spec.split("@", 1)[0] in ZOO:
        name, step = spec.split("@", 1)
        if not step.isdigit():
            raise ModelError(f"checkpoint spec {spec!r}: expected NAME@STEP, e.g. {name}@300")
        model, info = load_zoo_checkpoint(name, int(step), home)
        return LoadedModel(model, checkpoint_model_id(_zoo_family(name, home), int(step)), f"zoo:{spec}", info)
    if spec in ZOO:
        model, info = load_zoo_model(spec, home, progress_factory)
        loaded = LoadedModel(model, spec, f"zoo:{spec}", info)
        loaded.model_id = zoo_model_id(spec, loaded.weights_hash)
        return loaded
    path = Path(spec).expanduser()
    if path.exists():
        return _load_path(path)
    if spec.endswith((".pt", ".pth", ".bin")) or os.sep in spec and not _looks_like_hub(spec):
        raise ModelError(f"model file {spec} does not exist")
    name, at, revision = spec.partition("@")
    if at:  # a hub model's training checkpoint: NAME@stepN
        step = revision.removeprefix("step")
        if not step.isdigit():
            raise ModelError(f"checkpoint spec {spec!r}: expected NAME@stepN, e.g. pythia-70m@step1000")
        pretrained = _load_pretrained(name, checkpoint=int(step))
        if pretrained is None:
            raise ModelError(f"unknown model {name!r} in {spec!r}: not a zoo model ({', '.join(sorted(ZOO))}) and not a TransformerLens "
                             "pretrained name")
        return pretrained
    pretrained = _load_pretrained(spec)
    if pretrained is None:
        raise ModelError(
            f"unknown model {spec!r}: not a zoo model ({', '.join(sorted(ZOO))}), not an existing file, "
            "and not a TransformerLens pretrained name"
        )
    return pretrained


@functools.cache
def _shipped_hash(name: str) -> str | None:
    """:func:`weights_hash` of the zoo model's weights shipped in the package (None if none ship)."""
    from ingest.model.zoo import SHIPPED_DIR, load_weights_folder

    folder = SHIPPED_DIR / name
    if not (folder / "model.pt").exists():
        return None
    return weights_hash(load_weights_folder(folder))


def zoo_model_id(name: str, digest: str) -> str:
    """A zoo model's id: its name for the weights the package ships, else the name plus the first 8
    hex digits of the weights' hash (a model retrained here, e.g. by ``atlas zoo train`` on another
    platform, is another training run: its runs and checkpoints must not mix with the shipped ones)."""
    shipped = _shipped_hash(name)
    return name if shipped is None or shipped == digest else f"{name}-{digest[:8]}"


def _zoo_family(name: str, home: Path) -> str:
    """The id of the final model of the training run whose checkpoints ``home`` holds for ``name``
    (its checkpoints are ``ID/step-S``): the home's trained model, else the shipped one."""
    from ingest.model.zoo import load_weights_folder

    folder = home / "zoo" / name
    if not (folder / "model.pt").exists() or not (folder / "config.json").exists():
        return name
    return zoo_model_id(name, weights_hash(load_weights_folder(folder)))


def _hub_cached(repo_id: str, revision: str | None = None) -> bool:
    """Whether the hub repository (at ``revision``) has at least its config in the local cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return False
    hit = try_to_load_from_cache(repo_id, "config.json", revision=revision)
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
        weights_hash=loaded.weights_hash,
    )