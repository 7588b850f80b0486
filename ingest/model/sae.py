"""Sparse dictionaries: train sparse autoencoders and transcoders on a model's own activations,
save and load them in sae-lens's on-disk format, and measure how well they reconstruct.

On disk (sae-lens): a folder with ``cfg.json`` and ``sae_weights.safetensors`` holding ``W_enc
[d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_out]``, ``b_dec [d_out]`` (plus ``threshold``
for JumpReLU). A *sparse autoencoder* reads and rebuilds one hook (``hook_name``); a *transcoder*
reads the MLP's input and predicts its output (``hook_name`` -> ``hook_name_out``, sae-lens's
transcoder fields), so its features stand in for the MLP's neurons. Loading accepts sae-lens's
``standard`` (ReLU), ``jumprelu`` and ``topk`` architectures, with ``apply_b_dec_to_input``.

Training (``atlas sae train``): ReLU dictionary on the distinct activations (10% held out), loss = ||x - x_hat||^2 / E||x - E x||^2 +
l1 * sum_i f_i ||W_dec_i|| (the decoder-norm-weighted L1 of Anthropic's 2024 recipe), Adam, on
activations collected from the model running its own task prompts; activations are scaled to unit
mean squared norm for training and the scale is folded back into the saved weights. Quality is
measured on held-out activations: fraction of variance unexplained (FVU), mean L0 and the number of
dead features (never active), and written into ``cfg.json`` (``atlas_stats``) and the database.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from atlas.errors import ModelError, ValidationError
from ingest.model.hooks import hook_name

__all__ = ["Dictionary", "load_dictionary", "load_for_model", "hook_layer", "save_dictionary", "train_dictionary", "dictionary_quality",
           "collect_activations", "site_hooks", "mlp_layer"]

_MLP_OUT = re.compile(r"^blocks\.(\d+)\.hook_mlp_out$")
_HOOK_LAYER = re.compile(r"^blocks\.(\d+)\.")


@dataclass
class Dictionary:
    """A sparse dictionary's weights and what it reads (see module docstring)."""

    W_enc: torch.Tensor
    b_enc: torch.Tensor
    W_dec: torch.Tensor
    b_dec: torch.Tensor
    hook_name: str
    hook_name_out: str | None = None
    architecture: str = "standard"
    apply_b_dec_to_input: bool = True
    threshold: torch.Tensor | None = None
    k: int | None = None
    model_name: str = ""
    dictionary_id: str = "sae"
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    @property
    def is_transcoder(self) -> bool:
        return self.hook_name_out is not None

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations ``[..., d_sae]``."""
        if self.apply_b_dec_to_input and not self.is_transcoder:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        if self.architecture == "jumprelu":
            assert self.threshold is not None
            return pre * (pre > self.threshold) * (pre > 0)
        if self.architecture == "topk":
            assert self.k is not None
            act = torch.relu(pre)
            top = torch.topk(act, self.k, dim=-1)
            return torch.zeros_like(act).scatter(-1, top.indices, top.values)
        return torch.relu(pre)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.pre(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec + self.b_dec

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Dictionary:
        """The dictionary with its tensors on ``device`` (and in ``dtype``, if given): where the model it reads computes."""
        import dataclasses

        def move(x: torch.Tensor) -> torch.Tensor:
            return x.to(device=device, dtype=dtype if dtype is not None and x.is_floating_point() else x.dtype)

        return dataclasses.replace(self, W_enc=move(self.W_enc), b_enc=move(self.b_enc), W_dec=move(self.W_dec), b_dec=move(self.b_dec),
                                   threshold=None if self.threshold is None else move(self.threshold))


def hook_layer(hook: str | None) -> int | None:
    """The block index a ``blocks.L.*`` hook name belongs to; None for other hooks."""
    m = _HOOK_LAYER.match(hook or "")
    return int(m.group(1)) if m else None


def mlp_layer(d: Dictionary) -> int:
    """The layer whose MLP a dictionary stands in for (a transcoder, or an SAE on ``hook_mlp_out``)."""
    out = d.hook_name_out or d.hook_name
    m = _MLP_OUT.match(out)
    if m is None:
        raise ValidationError(f"feature-level ingestion needs a dictionary on an MLP (an SAE on blocks.L.hook_mlp_out or a "
                              f"transcoder into it); {d.dictionary_id} reads {d.hook_name}")
    return int(m.group(1))


def site_hooks(model: Any, hook: str, transcoder: bool) -> tuple[str, str | None]:
    """Validate a hook name against the model; for a transcoder, ``hook`` names the MLP layer's
    ``blocks.L.hook_mlp_out`` (or its input) and the pair (input, output) is returned."""
    names = set(model.hook_dict)
    layer = hook_layer(hook)
    if transcoder:
        if model.cfg.attn_only:
            raise ValidationError("a transcoder stands in for an MLP, and this model has none (attention only)")
        if layer is None or not 0 <= layer < model.cfg.n_layers:
            raise ValidationError(f"a transcoder needs an MLP layer of the model: give --hook blocks.L.hook_mlp_out, not {hook!r}")
        return hook_name("mlp_in", layer), hook_name("mlp_out", layer)
    if hook not in names:
        close = sorted(n for n in names if n.endswith(hook.rsplit(".", 1)[-1]))[:4]
        raise ValidationError(f"the model has no hook {hook!r}" + (f"; e.g. {', '.join(close)}" if close else ""))
    return hook, None


@torch.no_grad()
def collect_activations(model: Any, tokens: torch.Tensor, hook_in: str, hook_out: str | None = None,
                        chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations at ``hook_in`` (and ``hook_out``) for every position of ``tokens``: ``[N, d]`` each.

    A transcoder's input is the MLP's actual input: ``ln2`` applied to ``hook_mlp_in``.
    """
    ins, outs = [], []
    layer = hook_layer(hook_in) if hook_in.endswith("hook_mlp_in") else None
    old = bool(model.cfg.use_hook_mlp_in)
    if layer is not None:
        model.set_use_hook_mlp_in(True)
    try:
        names = {hook_in, hook_out} - {None}
        for start in range(0, len(tokens), chunk):
            _, cache = model.run_with_cache(tokens[start : start + chunk], names_filter=lambda n: n in names)
            x = cache[hook_in]
            if layer is not None:
                x = model.blocks[layer].ln2(x)
            ins.append(x.reshape(-1, x.shape[-1]))
            if hook_out:
                outs.append(cache[hook_out].reshape(-1, cache[hook_out].shape[-1]))
    finally:
        if layer is not None and not old:
            model.set_use_hook_mlp_in(False)
    x_in = torch.cat(ins).float()
    return x_in, (torch.cat(outs).float() if hook_out else x_in)


@torch.no_grad()
def dictionary_quality(d: Dictionary, x_in: torch.Tensor, x_out: torch.Tensor) -> dict[str, Any]:
    """FVU = E||x - x_hat||^2 / E||x - E x||^2 on ``x_out``; mean L0; features never active."""
    f = d.encode(x_in)
    err = (x_out - d.decode(f)).pow(2).sum(-1).mean()
    var = (x_out - x_out.mean(0)).pow(2).sum(-1).mean()
    active = (f > 0)
    return {"fvu": float(err / var), "l0": float(active.sum(-1).float().mean()), "dead": int((~active.any(0)).sum()),
            "dSae": d.d_sae, "nEval": int(len(x_in))}


def train_dictionary(x_in: torch.Tensor, x_out: torch.Tensor, n_features: int, *, hook_name: str, hook_name_out: str | None,
                     model_name: str, dictionary_id: str, steps: int = 3000, l1: float = 0.1, lr: float = 3e-3, batch: int = 512,
                     seed: int = 0, progress: Callable[[int], None] | None = None) -> Dictionary:
    """Train a ReLU dictionary on ``x_in -> x_out`` (the same tensor for an SAE); 10% held out for the stats."""
    if n_features < 1:
        raise ValidationError(f"--features must be at least 1, got {n_features}")
    # repeated prompts give identical activations: keep one of each, so the held-out ones are unseen
    pairs = torch.unique(torch.cat([x_in, x_out], dim=1) if hook_name_out is not None else x_in, dim=0)
    x_in, x_out = (pairs[:, : x_in.shape[1]], pairs[:, x_in.shape[1] :]) if hook_name_out is not None else (pairs, pairs)
    if len(x_in) < 20:
        raise ValidationError(f"too few distinct activations to train on ({len(x_in)}); give more --prompts")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x_in), generator=gen)
    n_eval = max(1, len(x_in) // 10)
    ev, tr = order[:n_eval], order[n_eval:]
    scale = float(x_out[tr].pow(2).sum(-1).mean().sqrt()) or 1.0
    scale_in = float(x_in[tr].pow(2).sum(-1).mean().sqrt()) or 1.0
    xi, xo = x_in[tr] / scale_in, x_out[tr] / scale
    d_in, d_out = x_in.shape[1], x_out.shape[1]
    transcoder = hook_name_out is not None
    w_dec = torch.randn(n_features, d_out, generator=gen)
    w_dec = w_dec / w_dec.norm(dim=-1, keepdim=True) * 0.1
    w_enc = (w_dec.T.clone() if d_in == d_out else torch.randn(d_in, n_features, generator=gen) * 0.1 / d_in**0.5).contiguous()
    params = {"W_enc": w_enc.requires_grad_(True), "b_enc": torch.zeros(n_features, requires_grad=True),
              "W_dec": w_dec.requires_grad_(True), "b_dec": xo.mean(0).clone().requires_grad_(True)}
    opt = torch.optim.Adam(params.values(), lr=lr)
    var = (xo - xo.mean(0)).pow(2).sum(-1).mean()
    with torch.enable_grad():
        for step in range(steps):
            idx = torch.randint(0, len(xi), (batch,), generator=gen)
            a, b = xi[idx], xo[idx]
            centred = a if transcoder else a - params["b_dec"]
            f = torch.relu(centred @ params["W_enc"] + params["b_enc"])
            recon = f @ params["W_dec"] + params["b_dec"]
            mse = (recon - b).pow(2).sum(-1).mean() / var
            sparsity = (f * params["W_dec"].norm(dim=-1)).sum(-1).mean()
            warm = min(1.0, (step + 1) / (0.05 * steps))  # L1 warm-up: fewer features die early
            loss = mse + l1 * warm * sparsity
            opt.zero_grad()
            loss.backward()
            opt.step()
            if progress:
                progress(1)
    with torch.no_grad():
        p = {k: v.detach() for k, v in params.items()}
        # fold the training scales into the weights: x_in / s_in and x_out / s_out -> raw units
        d = Dictionary(W_enc=p["W_enc"] / scale_in, b_enc=p["b_enc"].clone(), W_dec=p["W_dec"] * scale, b_dec=p["b_dec"] * scale,
                       hook_name=hook_name, hook_name_out=hook_name_out, architecture="standard",
                       apply_b_dec_to_input=not transcoder, model_name=model_name, dictionary_id=dictionary_id)
    d.stats = {**dictionary_quality(d, x_in[ev], x_out[ev]), "steps": steps, "l1": l1, "lr": lr, "nTrain": int(len(tr)), "seed": seed}
    return d


def save_dictionary(d: Dictionary, folder: Path) -> None:
    """Write ``cfg.json`` and ``sae_weights.safetensors`` in sae-lens's layout."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    meta = {"model_name": d.model_name, "hook_name": d.hook_name, "hook_layer": hook_layer(d.hook_name) or 0,
            "hook_head_index": None, "prepend_bos": False, "context_size": None, "dataset_path": "own task prompts"}
    cfg: dict[str, Any] = {
        "architecture": "transcoder" if d.is_transcoder else d.architecture,
        "d_in": int(d.W_enc.shape[0]), "d_sae": d.d_sae, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": d.apply_b_dec_to_input, "normalize_activations": "none", "reshape_activations": "none",
        "activation_fn": "relu", "activation_fn_str": "relu", "metadata": meta, **{k: v for k, v in meta.items()},
        "atlas_dictionary_id": d.dictionary_id, "atlas_stats": d.stats,
    }
    if d.is_transcoder:
        cfg.update({"d_out": int(d.W_dec.shape[1]), "hook_name_out": d.hook_name_out, "hook_layer_out": hook_layer(d.hook_name_out) or 0})
    if d.k is not None:
        cfg["k"] = d.k
    tensors = {"W_enc": d.W_enc, "b_enc": d.b_enc, "W_dec": d.W_dec, "b_dec": d.b_dec}
    if d.threshold is not None:
        tensors["threshold"] = d.threshold
    tensors = {k: v.detach().float().contiguous().clone() for k, v in tensors.items()}  # no shared storage on disk
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps(cfg, indent=1))


def _dict_id(folder: Path, cfg: dict[str, Any]) -> str:
    raw = cfg.get("atlas_dictionary_id") or folder.name
    return re.sub(r"[^A-Za-z0-9_.\-]", "-", str(raw)).lstrip("-._") or "sae"


def load_dictionary(path: str | Path) -> Dictionary:
    """Load a dictionary saved in sae-lens's format (``cfg.json`` + ``sae_weights.safetensors``)."""
    from safetensors.torch import load_file

    folder = Path(path)
    if not (folder / "cfg.json").exists() or not (folder / "sae_weights.safetensors").exists():
        raise ModelError(f"{folder} is not a sae-lens folder (needs cfg.json and sae_weights.safetensors)")
    try:
        cfg = json.loads((folder / "cfg.json").read_text())
        weights = load_file(str(folder / "sae_weights.safetensors"))
    except (json.JSONDecodeError, OSError, RuntimeError) as exc:
        raise ModelError(f"cannot read the dictionary in {folder}: {exc}") from exc
    missing = {"W_enc", "b_enc", "W_dec", "b_dec"} - set(weights)
    if missing:
        raise ModelError(f"{folder}/sae_weights.safetensors lacks {sorted(missing)}")
    meta = {**cfg, **(cfg.get("metadata") or {})}
    arch = str(cfg.get("architecture", "standard")).lower()
    if arch not in ("standard", "jumprelu", "topk", "transcoder"):
        raise ModelError(f"dictionary architecture {arch!r} is not supported (standard, jumprelu, topk, transcoder)")
    if arch == "jumprelu" and "threshold" not in weights:
        raise ModelError(f"a jumprelu dictionary needs a threshold tensor ({folder})")
    hook_out = meta.get("hook_name_out")
    hook = meta.get("hook_name") or meta.get("hook_point")
    if not hook:
        raise ModelError(f"{folder}/cfg.json names no hook_name")
    w_enc, w_dec = weights["W_enc"].float(), weights["W_dec"].float()
    if w_enc.shape[1] != w_dec.shape[0] or weights["b_enc"].shape[0] != w_enc.shape[1]:
        raise ModelError(f"inconsistent dictionary shapes in {folder}: W_enc {tuple(w_enc.shape)}, W_dec {tuple(w_dec.shape)}")
    return Dictionary(
        W_enc=w_enc, b_enc=weights["b_enc"].float(), W_dec=w_dec, b_dec=weights["b_dec"].float(), hook_name=hook,
        hook_name_out=hook_out, architecture="standard" if arch == "transcoder" else arch,
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", arch != "transcoder")) and hook_out is None,
        threshold=weights["threshold"].float() if "threshold" in weights else None, k=cfg.get("k"),
        model_name=str(meta.get("model_name", "")), dictionary_id=_dict_id(folder, cfg), stats=dict(cfg.get("atlas_stats") or {}),
    )


def load_for_model(model: Any, model_id: str, paths: tuple[str, ...] | list[str]) -> dict[int, Dictionary]:
    """Load dictionaries for feature-level ingestion: one per MLP layer, shapes checked against ``model``,
    placed on its device in its precision."""
    import sys

    out: dict[int, Dictionary] = {}
    for path in paths:
        d = load_dictionary(path)
        layer = mlp_layer(d)
        if layer >= model.cfg.n_layers or model.cfg.attn_only:
            raise ValidationError(f"dictionary {d.dictionary_id} is for layer {layer}'s MLP, which {model_id} does not have")
        d_model = int(model.cfg.d_model)
        if d.W_enc.shape[0] != d_model or d.W_dec.shape[1] != d_model:
            raise ValidationError(f"dictionary {d.dictionary_id} maps {d.W_enc.shape[0]} -> {d.W_dec.shape[1]} dimensions; "
                                  f"{model_id}'s MLP {layer} reads and writes {d_model}")
        if layer in out:
            raise ValidationError(f"two dictionaries for layer {layer}'s MLP: {out[layer].dictionary_id} and {d.dictionary_id}")
        if d.model_name and d.model_name != model_id:
            print(f"atlas: note: dictionary {d.dictionary_id} was trained on {d.model_name}, not {model_id}", file=sys.stderr)
        first = next(iter(model.parameters()))
        out[layer] = d.to(first.device, first.dtype)  # on the model's device, in its precision
    return out
