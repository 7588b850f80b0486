"""Component ids: the one place they are built and parsed.

Grammar (``MODEL`` may itself contain ``/``, as hub names do; the last ``/`` separates it)::

    MODEL/EMBED            the embedding
    MODEL/LOGITS           the unembedding
    MODEL/L{l}.H{h}        attention head h of layer l
    MODEL/L{l}.MLP         the MLP of layer l
    MODEL/L{l}.N{n}        neuron n of the MLP of layer l
    MODEL/L{l}.F{f}@DICT   feature f of sparse dictionary DICT at layer l
    MODEL/L{l}.ERR@DICT    the error term of dictionary DICT at layer l

Examples:
    >>> component_id("gpt2", ComponentKind.HEAD, layer=5, head=1)
    'gpt2/L5.H1'
    >>> parse_component_id("EleutherAI/pythia-70m/L3.F10452@res-sae").feature
    10452
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from atlas.errors import ValidationError
from atlas.schema import ComponentKind

__all__ = [
    "ComponentRef", "component_id", "parse_component_id", "validate_model_id", "local_id", "model_of",
    "checkpoint_model_id", "training_run_of", "at_position", "split_position", "POSITION_SEP",
    "write_stage", "read_stage", "LAST_STAGE",
]

_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]*$")
_DICT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_LOCAL_RE = re.compile(
    r"^(?:(?P<embed>EMBED)|(?P<logits>LOGITS)"
    r"|L(?P<layer>\d+)\.(?:H(?P<head>\d+)|(?P<mlp>MLP)|N(?P<neuron>\d+)|(?:F(?P<feature>\d+)|(?P<err>ERR))@(?P<dict>[A-Za-z0-9][A-Za-z0-9_.\-]*)))$"
)


@dataclass(frozen=True)
class ComponentRef:
    """A parsed component id. ``layer`` is -1 for the embedding and ``n_layers`` for the logits
    (when known); fields that do not apply to the kind are None."""

    model_id: str
    kind: ComponentKind
    layer: int | None = None
    head: int | None = None
    neuron: int | None = None
    feature: int | None = None
    dictionary_id: str | None = None

    @property
    def component_id(self) -> str:
        return component_id(
            self.model_id,
            self.kind,
            layer=self.layer,
            head=self.head,
            neuron=self.neuron,
            feature=self.feature,
            dictionary_id=self.dictionary_id,
        )


def chosen_run_id(run_id: str | None, default: str) -> str:
    """A run id the user chose (``--run-id``), else ``default``; an empty or blank choice is refused
    (it used to fall back to the default id silently)."""
    if run_id is None:
        return default
    if not isinstance(run_id, str) or not run_id.strip():
        raise ValidationError("--run-id must not be empty: leave it out for the default id, or name the run")
    if run_id != run_id.strip() or any(ord(c) < 32 for c in run_id):
        raise ValidationError(f"--run-id {run_id!r} has surrounding spaces or control characters")
    return run_id


def validate_model_id(model_id: str) -> str:
    """Return ``model_id`` if it may appear in a component id, else raise ValidationError."""
    if not isinstance(model_id, str) or not _MODEL_RE.match(model_id) or model_id.endswith("/"):
        raise ValidationError(
            f"invalid model id {model_id!r}: use letters, digits, '_', '.', '-' and '/'"
        )
    return model_id


def _need(value: int | None, what: str, kind: ComponentKind) -> int:
    if value is None or isinstance(value, bool) or int(value) != value or value < 0:
        raise ValidationError(f"a {kind.value} id needs a non-negative integer {what}, got {value!r}")
    return int(value)


def component_id(
    model_id: str,
    kind: ComponentKind | str,
    *,
    layer: int | None = None,
    head: int | None = None,
    neuron: int | None = None,
    feature: int | None = None,
    dictionary_id: str | None = None,
) -> str:
    """Build the id of a component; raises ValidationError when a needed field is missing."""
    validate_model_id(model_id)
    kind = ComponentKind(kind)
    if kind is ComponentKind.EMBED:
        return f"{model_id}/EMBED"
    if kind is ComponentKind.LOGITS:
        return f"{model_id}/LOGITS"
    lay = _need(layer, "layer", kind)
    if kind is ComponentKind.HEAD:
        return f"{model_id}/L{lay}.H{_need(head, 'head', kind)}"
    if kind is ComponentKind.MLP:
        return f"{model_id}/L{lay}.MLP"
    if kind is ComponentKind.NEURON:
        return f"{model_id}/L{lay}.N{_need(neuron, 'neuron', kind)}"
    if dictionary_id is None or not _DICT_RE.match(dictionary_id):
        raise ValidationError(f"a {kind.value} id needs a dictionary id of [A-Za-z0-9_.-], got {dictionary_id!r}")
    if kind is ComponentKind.ERROR:
        return f"{model_id}/L{lay}.ERR@{dictionary_id}"
    return f"{model_id}/L{lay}.F{_need(feature, 'feature', kind)}@{dictionary_id}"


def parse_component_id(cid: str) -> ComponentRef:
    """Parse a component id built by :func:`component_id`; raises ValidationError otherwise."""
    if not isinstance(cid, str) or "/" not in cid:
        raise ValidationError(f"invalid component id {cid!r}: expected MODEL/COMPONENT")
    model_id, local = cid.rsplit("/", 1)
    validate_model_id(model_id)
    m = _LOCAL_RE.match(local)
    if m is None:
        raise ValidationError(
            f"invalid component id {cid!r}: expected EMBED, LOGITS, L<l>.H<h>, L<l>.MLP, L<l>.N<n>, L<l>.F<f>@<dict> or L<l>.ERR@<dict>"
        )
    if m["embed"]:
        return ComponentRef(model_id, ComponentKind.EMBED, layer=-1)
    if m["logits"]:
        return ComponentRef(model_id, ComponentKind.LOGITS)
    layer = int(m["layer"])
    if m["head"] is not None:
        return ComponentRef(model_id, ComponentKind.HEAD, layer=layer, head=int(m["head"]))
    if m["mlp"]:
        return ComponentRef(model_id, ComponentKind.MLP, layer=layer)
    if m["neuron"] is not None:
        return ComponentRef(model_id, ComponentKind.NEURON, layer=layer, neuron=int(m["neuron"]))
    if m["err"]:
        return ComponentRef(model_id, ComponentKind.ERROR, layer=layer, dictionary_id=m["dict"])
    return ComponentRef(
        model_id, ComponentKind.FEATURE, layer=layer, feature=int(m["feature"]), dictionary_id=m["dict"]
    )


LAST_STAGE = 1 << 30
"""The stage of the logits when the model's depth is unknown (ids alone do not carry it)."""


def write_stage(kind: ComponentKind, layer: int | None) -> int:
    """When in the forward pass a component writes into the residual stream (the one rule, shared
    by the graph the methods score and the path search over stored runs): the embedding at -1, the
    heads of layer ``l`` at ``2 l``, the MLP of layer ``l`` and its neurons, features and error
    term at ``2 l + 1``, the logits last (``2 n_layers`` when ``layer`` is ``n_layers``)."""
    if kind is ComponentKind.EMBED:
        return -1
    if kind is ComponentKind.LOGITS:
        return LAST_STAGE if layer is None else 2 * layer
    if layer is None:
        raise ValidationError(f"a {kind.value} has a layer")
    return 2 * layer if kind is ComponentKind.HEAD else 2 * layer + 1


def read_stage(kind: ComponentKind, layer: int | None, *, parallel: bool = False) -> int:
    """When a component reads the residual stream: a head at ``2 l``, an MLP (and its units) at
    ``2 l + 1``, or at ``2 l`` beside the heads in a parallel attention + MLP block; the logits last.
    An edge u -> v exists when ``write_stage(u) < read_stage(v)``."""
    if kind in (ComponentKind.HEAD, ComponentKind.LOGITS, ComponentKind.EMBED):
        return write_stage(kind, layer)
    assert layer is not None
    return 2 * layer if parallel else 2 * layer + 1


def local_id(cid: str) -> str:
    """The part of a component id after its model (``gpt2/L5.H1`` -> ``L5.H1``), as the atlas prints it.

    >>> local_id("EleutherAI/pythia-70m/L3.MLP")
    'L3.MLP'
    """
    return cid.rsplit("/", 1)[-1]


POSITION_SEP = ":"
"""Separates a component id from a token position in position-resolved graphs (no id holds it)."""


def at_position(cid: str, pos: int) -> str:
    """The node "``cid`` at token position ``pos``" of a position-resolved graph.

    >>> at_position("gpt2/L5.H1", 7)
    'gpt2/L5.H1:7'
    """
    return f"{cid}{POSITION_SEP}{int(pos)}"


def split_position(node: str) -> tuple[str, int | None]:
    """A (component id, position) pair from :func:`at_position`'s form; a plain id has no position.

    >>> split_position("gpt2/L5.H1:7"), split_position("gpt2/L5.H1")
    (('gpt2/L5.H1', 7), ('gpt2/L5.H1', None))
    """
    cid, sep, pos = node.rpartition(POSITION_SEP)
    return (cid, int(pos)) if sep and pos.isdigit() else (node, None)


CHECKPOINT_SEP = "/step-"


def checkpoint_model_id(training_run: str, step: int) -> str:
    """The id of a training checkpoint: its training run's (final model's) id and the step.

    >>> checkpoint_model_id("induction-2l", 300)
    'induction-2l/step-300'
    """
    return validate_model_id(f"{training_run}{CHECKPOINT_SEP}{int(step)}")


def training_run_of(model_id: str) -> str:
    """The training run a model id belongs to: a checkpoint's final model, else the model itself.

    >>> training_run_of("induction-2l/step-300"), training_run_of("induction-2l")
    ('induction-2l', 'induction-2l')
    """
    return model_id.split(CHECKPOINT_SEP)[0]


def model_of(cid: str) -> str:
    """The model id of a component id (``EleutherAI/pythia-70m/L3.MLP`` -> ``EleutherAI/pythia-70m``)."""
    return cid.rsplit("/", 1)[0]
