"""TransformerLens hook names, built in one place (the grammar of ``transformer_lens.utils.get_act_name``).

>>> hook_name("z", 3)
'blocks.3.attn.hook_z'
>>> hook_name("mlp_out", 0)
'blocks.0.hook_mlp_out'
>>> hook_name("embed")
'hook_embed'
"""

from __future__ import annotations

import functools

__all__ = ["hook_name", "HOOK_SITES"]

_MODEL_SITES = {"embed", "pos_embed"}
_ATTN_SITES = {"q", "k", "v", "z", "pattern", "attn_scores", "result", "rot_q", "rot_k"}
_MLP_SITES = {"pre", "post", "pre_linear"}
_BLOCK_SITES = {"resid_pre", "resid_mid", "resid_post", "mlp_in", "mlp_out", "attn_out", "attn_in", "q_input", "k_input", "v_input"}
HOOK_SITES = frozenset(_MODEL_SITES | _ATTN_SITES | _MLP_SITES | _BLOCK_SITES)
"""Every site :func:`hook_name` knows."""


@functools.cache
def hook_name(site: str, layer: int | None = None) -> str:
    """The hook of ``site`` (``z``, ``mlp_out``, ``resid_pre``, ``post``, ...) in block ``layer``.

    Raises:
        ValueError: an unknown site, or a layer given or missing where the site needs the opposite
            (an internal error: sites come from code, never from input).
    """
    if site not in HOOK_SITES:
        raise ValueError(f"unknown hook site {site!r}")
    if site in _MODEL_SITES:
        if layer is not None:
            raise ValueError(f"hook site {site!r} has no layer")
        return f"hook_{site}"
    if layer is None:
        raise ValueError(f"hook site {site!r} needs a layer")
    if site in _ATTN_SITES:
        return f"blocks.{layer}.attn.hook_{site}"
    if site in _MLP_SITES:
        return f"blocks.{layer}.mlp.hook_{site}"
    return f"blocks.{layer}.hook_{site}"
