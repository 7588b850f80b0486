"""Which family a loaded model belongs to: the one place that tells an encoder from a decoder.

Everything that treats the families differently (the component graph's checks, the edge methods'
interface, the ingestion job, evaluation, which commands accept a model) asks here.
"""

from __future__ import annotations

from typing import Any

from atlas.schema import ModelFamily

__all__ = ["model_family", "is_encoder"]


def model_family(model: Any) -> ModelFamily:
    """``encoder`` for TransformerLens's ``HookedEncoder`` (post-LN BERT), else ``decoder``."""
    from transformer_lens import HookedEncoder

    return ModelFamily.ENCODER if isinstance(model, HookedEncoder) else ModelFamily.DECODER


def is_encoder(model: Any) -> bool:
    """Whether ``model`` is a post-LN encoder (:func:`model_family`)."""
    return model_family(model) is ModelFamily.ENCODER
