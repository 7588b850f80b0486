"""The head-level computational graph of a HookedTransformer: who can send to whom.

Senders write into the residual stream (embedding, each head, each MLP); receivers read from it
(each head on its q, k and v channels, each MLP, the logits). A sender reaches a receiver when it
writes before the receiver reads. Stages count reads and writes along the forward pass:
layer ``l``'s attention reads at ``2l`` and writes at ``2l``; its MLP reads at ``2l+1`` (``2l`` in
parallel-attention models such as GPT-J and Pythia) and writes at ``2l+1``; the embedding writes at
``-1`` and the logits read at ``2 n_layers``. Sender ``s`` reaches receiver ``r`` iff
``write(s) < read(r)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from atlas.errors import ModelError
from atlas.ids import component_id, read_stage, write_stage
from atlas.schema import Channel, ComponentKind

__all__ = ["Sender", "Receiver", "ModelGraph", "build_graph", "check_architecture"]


@dataclass(frozen=True)
class Sender:
    """A component that writes to the residual stream; ``index`` is its slot in sender tensors."""

    component_id: str
    kind: ComponentKind
    layer: int
    head: int | None
    write_stage: int
    index: int
    neuron: int | None = None
    feature: int | None = None


@dataclass(frozen=True)
class Receiver:
    """One input channel of a component that reads the residual stream."""

    component_id: str
    kind: ComponentKind
    layer: int
    head: int | None
    channel: Channel
    read_stage: int
    index: int
    neuron: int | None = None
    feature: int | None = None


@dataclass(frozen=True)
class ModelGraph:
    """Senders, receivers and the node frame of one model."""

    model_id: str
    n_layers: int
    n_heads: int
    has_mlp: bool
    parallel: bool
    senders: tuple[Sender, ...]
    receivers: tuple[Receiver, ...]
    dictionaries: tuple[tuple[int, str], ...] = ()
    """(layer, dictionary id) of every MLP whose features are in the graph."""
    saes: dict[int, Any] = field(default_factory=dict, compare=False, hash=False)
    """Layer -> the :class:`ingest.model.sae.Dictionary` whose features stand in for that MLP."""

    def visible(self, receiver: Receiver) -> list[Sender]:
        """Senders whose output reaches ``receiver``'s input (in sender-index order)."""
        return [s for s in self.senders if s.write_stage < receiver.read_stage]

    def n_visible(self, read_stage: int) -> int:
        """How many senders (a prefix of ``senders``) write before ``read_stage``."""
        return sum(1 for s in self.senders if s.write_stage < read_stage)

    def nodes_frame(self) -> pd.DataFrame:
        """One row per component (the node frame of :mod:`atlas.frames`)."""
        rows: dict[str, dict[str, Any]] = {}
        dicts = dict(self.dictionaries)
        for s in self.senders:
            rows[s.component_id] = _node_row(self.model_id, s.component_id, s.kind, s.layer, s.head, s.neuron, s.feature, dicts.get(s.layer))
        for r in self.receivers:
            layer = self.n_layers if r.kind is ComponentKind.LOGITS else r.layer
            rows.setdefault(r.component_id, _node_row(self.model_id, r.component_id, r.kind, layer, r.head, r.neuron, r.feature, dicts.get(r.layer)))
        return pd.DataFrame(list(rows.values()))

    def features(self) -> dict[int, list[int]]:
        """Layer -> the dictionary features in the graph, in graph order."""
        return self._units("feature")

    def neurons(self) -> dict[int, list[int]]:
        """Layer -> the neurons in the graph, in graph order."""
        return self._units("neuron")

    def _units(self, field_name: str) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for s in self.senders:
            if getattr(s, field_name) is not None:
                out.setdefault(s.layer, []).append(getattr(s, field_name))
        return out


def _node_row(model_id: str, cid: str, kind: ComponentKind, layer: int, head: int | None, neuron: int | None = None,
              feature: int | None = None, dictionary_id: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"componentId": cid, "kind": kind.value, "modelId": model_id, "layer": layer, "head": head}
    if neuron is not None:
        row["neuron"] = neuron
    if feature is not None:
        row["feature"] = feature
    if kind in (ComponentKind.FEATURE, ComponentKind.ERROR):
        row["dictionaryId"] = dictionary_id
    return row


POST_NORM_ARCHITECTURES = frozenset({"Olmo2ForCausalLM", "Olmo3ForCausalLM", "OlmoeForCausalLM"})


def check_architecture(cfg: Any, encoder: bool = False) -> None:
    """Refuse, in one line naming the option, a model whose edges the methods cannot score exactly.

    Every edge method assumes that each head's output is ``z_h W_O[h]`` added to the residual stream
    as it is, that q, k and v are affine in the (normalised) residual, and that the MLP reads the
    residual at ``hook_mlp_in``. Options that break one of these are refused, never mis-scored.
    BERT encoders (post-LN) have their own interface (:mod:`ingest.edges.encoder`; ``encoder`` says the model is one).
    """
    bert = getattr(cfg, "original_architecture", None) in ("BertModel", "BertForMaskedLM", "BertForPreTraining")
    if bert != encoder:
        raise ModelError("a BERT configuration in a decoder: load post-LN BERT encoders as HookedEncoder (a Hugging Face BERT folder)"
                         if bert else "only BERT encoders are scored as post-LN encoders")
    if getattr(cfg, "original_architecture", None) in POST_NORM_ARCHITECTURES:
        raise ModelError(f"post-norm blocks ({cfg.original_architecture}: the norm sits between each sublayer and the residual) are not supported yet")
    if getattr(cfg, "use_normalization_before_and_after", False):
        raise ModelError("a norm after each sublayer (use_normalization_before_and_after=True, as in Gemma 2) rescales the heads' "
                         "summed output, so per-head edges are not additive; not supported yet")
    if getattr(cfg, "load_in_4bit", False):
        raise ModelError("4-bit weights (load_in_4bit=True) are not supported: load the model in float32 or bfloat16")
    if cfg.positional_embedding_type not in ("standard", "shortformer", "rotary", "alibi"):
        raise ModelError(f"positional_embedding_type={cfg.positional_embedding_type!r} is not supported")


def build_graph(model: Any, model_id: str, neurons: dict[int, list[int]] | None = None,
                features: dict[int, tuple[Any, list[int]]] | None = None) -> ModelGraph:
    """Enumerate senders and receivers of ``model`` (a HookedTransformer).

    ``neurons`` (layer -> neuron indices) adds those MLP neurons as senders (their post-activation
    times their row of ``W_out``, written where the MLP writes) and receivers (their pre-activation,
    read where the MLP reads), next to the whole MLP, which stays in the graph.
    ``features`` (layer -> (:class:`ingest.model.sae.Dictionary`, feature indices)) does the same for the features of a
    dictionary standing in for that layer's MLP (a transcoder, or an SAE on its output), and adds the
    dictionary's error term as a sender, so that features + error write exactly what the MLP writes.

    Raises:
        ModelError: for architectures whose attention the edge methods do not cover yet.
    """
    cfg = model.cfg
    from ingest.model.family import is_encoder

    encoder = is_encoder(model)
    check_architecture(cfg, encoder=encoder)
    if neurons:
        if cfg.attn_only:
            raise ModelError("neuron granularity needs a model with MLPs (this one has attn_only=True)")
        if getattr(cfg, "gated_mlp", False):
            raise ModelError("neuron granularity needs plain MLPs: a gated MLP's neuron has two inputs (gated_mlp=True); use --granularity head or a transcoder's features")
        if getattr(cfg, "num_experts", None):
            raise ModelError(f"neuron granularity needs plain MLPs, not a mixture of experts (num_experts={cfg.num_experts}); use --granularity head")
    for layer, ns in (neurons or {}).items():
        if not 0 <= layer < cfg.n_layers or any(not 0 <= n < cfg.d_mlp for n in ns):
            raise ModelError(f"neurons {ns} of layer {layer} are outside the model")
    if features and cfg.attn_only:
        raise ModelError("feature granularity needs a model with MLPs")
    for layer in features or {}:
        if not 0 <= layer < cfg.n_layers:
            raise ModelError(f"a dictionary for layer {layer} does not fit a {cfg.n_layers}-layer model")
    n_layers, n_heads = int(cfg.n_layers), int(cfg.n_heads)
    has_mlp = not cfg.attn_only
    parallel = bool(cfg.parallel_attn_mlp)
    senders: list[Sender] = []

    def add_sender(kind: ComponentKind, layer: int, head: int | None) -> None:
        cid = component_id(model_id, kind, layer=layer, head=head)
        senders.append(Sender(cid, kind, layer, head, write_stage(kind, layer), len(senders)))

    add_sender(ComponentKind.EMBED, -1, None)
    for layer in range(n_layers):
        for h in range(n_heads):
            add_sender(ComponentKind.HEAD, layer, h)
        if has_mlp:
            add_sender(ComponentKind.MLP, layer, None)
            unit_stage = write_stage(ComponentKind.MLP, layer)
            for n in (neurons or {}).get(layer, []):
                cid = component_id(model_id, ComponentKind.NEURON, layer=layer, neuron=n)
                senders.append(Sender(cid, ComponentKind.NEURON, layer, None, unit_stage, len(senders), neuron=n))
            if layer in (features or {}):
                sae, fs = features[layer]  # type: ignore[index]
                did = sae.dictionary_id
                for f in fs:
                    cid = component_id(model_id, ComponentKind.FEATURE, layer=layer, feature=f, dictionary_id=did)
                    senders.append(Sender(cid, ComponentKind.FEATURE, layer, None, unit_stage, len(senders), feature=f))
                cid = component_id(model_id, ComponentKind.ERROR, layer=layer, dictionary_id=did)
                senders.append(Sender(cid, ComponentKind.ERROR, layer, None, unit_stage, len(senders)))

    receivers: list[Receiver] = []
    for layer in range(n_layers):
        for ch in (Channel.Q, Channel.K, Channel.V):
            for h in range(n_heads):
                cid = component_id(model_id, ComponentKind.HEAD, layer=layer, head=h)
                receivers.append(Receiver(cid, ComponentKind.HEAD, layer, h, ch, read_stage(ComponentKind.HEAD, layer), len(receivers)))
        if has_mlp:
            cid = component_id(model_id, ComponentKind.MLP, layer=layer)
            read = read_stage(ComponentKind.MLP, layer, parallel=parallel)
            receivers.append(Receiver(cid, ComponentKind.MLP, layer, None, Channel.IN, read, len(receivers)))
            for n in (neurons or {}).get(layer, []):
                cid = component_id(model_id, ComponentKind.NEURON, layer=layer, neuron=n)
                receivers.append(Receiver(cid, ComponentKind.NEURON, layer, None, Channel.IN, read, len(receivers), neuron=n))
            if layer in (features or {}):
                sae, fs = features[layer]  # type: ignore[index]
                for f in fs:
                    cid = component_id(model_id, ComponentKind.FEATURE, layer=layer, feature=f, dictionary_id=sae.dictionary_id)
                    receivers.append(Receiver(cid, ComponentKind.FEATURE, layer, None, Channel.IN, read, len(receivers), feature=f))
                # the error term reads what the MLP reads and the features do not (scored as the difference)
                cid = component_id(model_id, ComponentKind.ERROR, layer=layer, dictionary_id=sae.dictionary_id)
                receivers.append(Receiver(cid, ComponentKind.ERROR, layer, None, Channel.IN, read, len(receivers)))
    receivers.append(
        Receiver(component_id(model_id, ComponentKind.LOGITS), ComponentKind.LOGITS, n_layers, None, Channel.IN,
                 read_stage(ComponentKind.LOGITS, n_layers), len(receivers))
    )
    # Senders must be sorted by write stage so that visibility is a prefix.
    assert all(a.write_stage <= b.write_stage for a, b in zip(senders, senders[1:]))
    dicts = tuple((layer, sae.dictionary_id) for layer, (sae, _) in sorted((features or {}).items()))
    saes = {layer: sae for layer, (sae, _) in (features or {}).items()}
    return ModelGraph(model_id, n_layers, n_heads, has_mlp, parallel, tuple(senders), tuple(receivers), dicts, saes)
