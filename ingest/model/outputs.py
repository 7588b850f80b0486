"""What a component writes into the residual stream, computed in one place.

A head's output is its mixed values ``z`` (``hook_z``) through its own rows of ``W_O``: ``z_h W_O[h]``
(the attention bias ``b_O`` belongs to no head). Grouped-query and every other attention option of
TransformerLens give ``z`` per query head, so this holds for all of them.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["head_outputs", "head_output"]


def head_outputs(model: Any, layer: int, z: torch.Tensor) -> torch.Tensor:
    """Every head's output ``[..., head, d_model]`` from ``z`` ``[..., head, d_head]`` at ``layer``."""
    return torch.einsum("...he,hed->...hd", z, model.blocks[layer].attn.W_O)


def head_output(model: Any, layer: int, head: int | None, z: torch.Tensor) -> torch.Tensor:
    """One head's output ``[..., d_model]`` from the layer's ``z`` ``[..., head, d_head]``."""
    assert head is not None, "a head's output needs its index"
    return z[..., head, :] @ model.blocks[layer].attn.W_O[head]
