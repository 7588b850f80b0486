"""Exact patching, the atlas's ground truth, on every architecture option TransformerLens builds.

For each option (positions: standard, shortformer, rotary, ALiBi, none; norms: LN, LNPre, RMS,
RMSPre, none; attention-only; parallel attention + MLP; gated MLP; bidirectional attention; q/k
norm; an output vocabulary smaller than the input's; grouped-query attention) and every receiver kind (q, k, v, MLP, neuron,
dictionary feature and error, logits):

- patching an edge with a zero delta changes nothing, bit for bit;
- patching it with the corrupted sender output equals an oracle computed here, independently of
  the atlas's hooks: sender outputs from TransformerLens's own per-head results
  (``use_attn_result``), head inputs through its own per-head input copies
  (``use_split_qkv_input``), neuron and feature inputs by two passes (measure the unit's changed
  activation with the receiver's input moved, then write only that change);
- the circuit hook keeps the clean run with every edge kept, gives the corrupted run with none,
  and with one edge left out gives exactly that edge's patching score;
- EAP is the first-order term of patching, and EAP-IG-activations is complete at the logits.

Options the methods cannot score exactly are refused with one line naming the option.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from atlas.errors import ModelError, ValidationError
from ingest.edges.interface import sender_outputs
from ingest.edges.interventions import circuit_metric
from ingest.edges.methods import MethodConfig, all_edges, compute_eap, compute_eap_ig_activations, compute_patching
from ingest.model.graph import ModelGraph, build_graph
from ingest.model.sae import Dictionary
from ingest.model.tasks import PromptBatch

BASE: dict[str, Any] = dict(n_layers=2, d_model=16, n_ctx=16, d_head=4, n_heads=2, d_vocab=24, d_mlp=12, act_fn="gelu",
                            normalization_type="LN")

ARCHITECTURES: dict[str, dict[str, Any]] = {
    "standard": {},
    "shortformer": {"positional_embedding_type": "shortformer"},
    "rotary": {"positional_embedding_type": "rotary", "rotary_dim": 4},
    "alibi": {"positional_embedding_type": "alibi"},
    "no-positions": {"no_positions": True},
    "LNPre": {"normalization_type": "LNPre"},
    "RMS": {"normalization_type": "RMS"},
    "RMSPre": {"normalization_type": "RMSPre"},
    "no-norm": {"normalization_type": None},
    "attn-only": {"attn_only": True},
    "parallel": {"parallel_attn_mlp": True},
    "gated-mlp": {"gated_mlp": True, "act_fn": "silu"},
    "bidirectional": {"attention_dir": "bidirectional"},
    "qk-norm": {"use_qk_norm": True, "normalization_type": "RMS"},
    "small-output-vocab": {"d_vocab_out": 7},
    "grouped-query": {"n_key_value_heads": 1},
    "grouped-query-rotary-RMS-gated": {"n_key_value_heads": 1, "positional_embedding_type": "rotary", "rotary_dim": 4,
                                       "normalization_type": "RMS", "gated_mlp": True, "act_fn": "silu"},
    "shortformer-RMS-parallel": {"positional_embedding_type": "shortformer", "normalization_type": "RMS", "parallel_attn_mlp": True},
    "rotary-no-norm-gated": {"positional_embedding_type": "rotary", "rotary_dim": 2, "normalization_type": None,
                             "gated_mlp": True, "act_fn": "silu"},
    "alibi-attn-only-bidirectional": {"positional_embedding_type": "alibi", "attn_only": True,
                                      "attention_dir": "bidirectional"},
    "shortformer-LNPre-attn-only": {"positional_embedding_type": "shortformer", "normalization_type": "LNPre",
                                    "attn_only": True},
}


class TargetLogit:
    """Mean logit of each position's target: a metric every architecture has."""

    name = "target-logit"
    description = "test metric"

    def make_batch(self, model: Any, n: int, seed: int) -> PromptBatch:  # pragma: no cover - batches come from random_batch
        raise NotImplementedError

    def metric(self, logits: torch.Tensor, batch: PromptBatch) -> torch.Tensor:
        picked = logits.gather(-1, batch.targets.unsqueeze(-1)).squeeze(-1)
        return (picked * batch.mask).sum(-1) / batch.mask.sum(-1)


TASK = TargetLogit()


def make_model(option: str) -> Any:
    """A float64 2-layer model of ``option`` with random weights (biases too, so they are exercised)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    spec = {**BASE, **ARCHITECTURES[option]}
    no_positions = spec.pop("no_positions", False)
    cfg = HookedTransformerConfig(**spec, seed=7, dtype=torch.float64)
    model = HookedTransformer(cfg)
    model.eval()
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.split(".")[-1].startswith("b_") or name.endswith(".b"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            if name.endswith(".w"):  # norm scales away from 1, so the norm's Jacobian matters
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        if no_positions:
            model.W_pos.zero_()
    return model


def random_batch(model: Any, seed: int = 0, n: int = 3, length: int = 6) -> PromptBatch:
    gen = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, model.cfg.d_vocab, (n, length), generator=gen)
    corrupted = torch.randint(0, model.cfg.d_vocab, (n, length), generator=gen)
    targets = torch.randint(0, model.cfg.d_vocab_out, (n, length), generator=gen)
    return PromptBatch(clean, corrupted, targets, torch.ones_like(clean, dtype=torch.bool))


def random_dictionary(model: Any, layer: int, d_sae: int = 5, transcoder: bool = False) -> Dictionary:
    """A dense-ish random ReLU dictionary on ``layer``'s MLP (positive encoder bias: features fire)."""
    gen = torch.Generator().manual_seed(layer + 3)
    d = model.cfg.d_model

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    return Dictionary(
        W_enc=rand(d, d_sae) / d ** 0.5, b_enc=0.3 + 0.1 * rand(d_sae), W_dec=rand(d_sae, d) / d_sae ** 0.5, b_dec=0.1 * rand(d),
        hook_name=f"blocks.{layer}.hook_mlp_in" if transcoder else f"blocks.{layer}.hook_mlp_out",
        hook_name_out=f"blocks.{layer}.hook_mlp_out" if transcoder else None,
        dictionary_id=f"d{layer}",
    )


def graph_for(model: Any, option: str) -> ModelGraph:
    """Heads, MLPs, and where the MLP is plain: two neurons of layer 0, a transcoder's features on
    layer 1 (standard option: an SAE on layer 0 and neurons on layer 1 instead)."""
    cfg = model.cfg
    if cfg.attn_only:
        return build_graph(model, option)
    if cfg.gated_mlp:
        return build_graph(model, option, features={1: (random_dictionary(model, 1, transcoder=True), [0, 2, 4])})
    if option == "standard":
        return build_graph(model, option, {1: [3, 8]}, {0: (random_dictionary(model, 0), [1, 3])})
    return build_graph(model, option, {0: [2, 5]}, {1: (random_dictionary(model, 1, transcoder=True), [0, 2, 4])})


# ---------------------------------------------------------------------------------------------
# The oracle: TransformerLens's own per-head results and per-head input copies.


class Oracle:
    """Patching computed edge by edge with TransformerLens's own machinery (see module docstring)."""

    def __init__(self, model: Any, graph: ModelGraph, batch: PromptBatch) -> None:
        self.model, self.graph, self.batch = model, graph, batch
        with torch.no_grad():
            self.base = self.metric(model(batch.clean))
        clean, corrupted = self.senders(batch.clean), self.senders(batch.corrupted)
        self.delta = {cid: corrupted[cid] - clean[cid] for cid in clean}

    def metric(self, logits: torch.Tensor) -> float:
        return float(TASK.metric(logits, self.batch).mean())

    def senders(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every sender's write into the residual stream, from TransformerLens's per-head results."""
        model, graph = self.model, self.graph
        model.set_use_attn_result(True)
        try:
            with torch.no_grad():
                _, cache = model.run_with_cache(tokens)
        finally:
            model.set_use_attn_result(False)
        out: dict[str, torch.Tensor] = {}
        for s in graph.senders:
            kind = s.kind.value
            if kind == "embed":
                pos = cache["hook_pos_embed"] if model.cfg.positional_embedding_type == "standard" else 0.0
                out[s.component_id] = cache["hook_embed"] + pos
            elif kind == "head":
                out[s.component_id] = cache[f"blocks.{s.layer}.attn.hook_result"][:, :, s.head]
            elif kind == "mlp":
                out[s.component_id] = cache[f"blocks.{s.layer}.hook_mlp_out"]
            elif kind == "neuron":
                out[s.component_id] = cache[f"blocks.{s.layer}.mlp.hook_post"][..., s.neuron, None] * model.blocks[s.layer].mlp.W_out[s.neuron]
            else:  # feature or error: the dictionary's decomposition of the MLP output
                sae = graph.saes[s.layer]
                site = model.blocks[s.layer].ln2(cache[_mlp_input(model, s.layer)]) if sae.is_transcoder else cache[f"blocks.{s.layer}.hook_mlp_out"]
                f = sae.encode(site)
                chosen = graph.features()[s.layer]
                if kind == "feature":
                    out[s.component_id] = f[..., s.feature, None] * sae.W_dec[s.feature]
                else:
                    out[s.component_id] = cache[f"blocks.{s.layer}.hook_mlp_out"] - f[..., chosen] @ sae.W_dec[chosen] - sae.b_dec
        return out

    def effect(self, sender: str, receiver: Any) -> float:
        """m(clean with ``sender``'s corrupted output reaching only ``receiver``) - m(clean)."""
        model, d = self.model, self.delta[sender]
        kind = receiver.kind.value
        if kind == "head":
            return self._run_split(f"blocks.{receiver.layer}.hook_{receiver.channel.value}_input", receiver.head, d)
        if kind == "mlp":
            return self._run_add(f"blocks.{receiver.layer}.hook_mlp_in", d)
        if kind == "logits":
            return self._run_add(f"blocks.{model.cfg.n_layers - 1}.hook_resid_post", d)
        # a neuron, feature or error node: what it would compute with its input moved, written alone
        moved = self._unit_values(receiver, d)
        clean = self._unit_values(receiver, None)
        if kind == "neuron":
            change = (moved - clean)[..., None] * model.blocks[receiver.layer].mlp.W_out[receiver.neuron]
        else:
            change = moved - clean
        return self._run_add(f"blocks.{receiver.layer}.hook_mlp_out", change)

    def _unit_values(self, receiver: Any, d: torch.Tensor | None) -> torch.Tensor:
        """A neuron's post-activation, a feature's write or the error node's write, on the clean run
        with the MLP input moved by ``d`` (that pass's output is discarded)."""
        model, layer = self.model, receiver.layer
        hooks = [] if d is None else [(f"blocks.{layer}.hook_mlp_in", lambda act, hook: act + d)]
        model.set_use_hook_mlp_in(True)
        try:
            with torch.no_grad(), model.hooks(fwd_hooks=hooks):
                _, got = model.run_with_cache(self.batch.clean)
        finally:
            model.set_use_hook_mlp_in(False)
        moved_by = got[f"blocks.{layer}.hook_mlp_in"] - got[_mlp_input(model, layer)]
        torch.testing.assert_close(moved_by, torch.zeros_like(moved_by) if d is None else d, rtol=0, atol=1e-12)
        if receiver.kind.value == "neuron":
            return got[f"blocks.{layer}.mlp.hook_post"][..., receiver.neuron]
        sae = self.graph.saes[layer]
        site = model.blocks[layer].ln2(got[f"blocks.{layer}.hook_mlp_in"]) if sae.is_transcoder else got[f"blocks.{layer}.hook_mlp_out"]
        f = sae.encode(site)
        chosen = self.graph.features()[layer]
        if receiver.kind.value == "feature":
            return f[..., receiver.feature, None] * sae.W_dec[receiver.feature]
        return got[f"blocks.{layer}.hook_mlp_out"] - f[..., chosen] @ sae.W_dec[chosen]

    def _run_add(self, name: str, d: torch.Tensor) -> float:
        mlp = not self.model.cfg.attn_only
        if mlp:
            self.model.set_use_hook_mlp_in(True)
        try:
            with torch.no_grad():
                return self.metric(self.model.run_with_hooks(self.batch.clean, fwd_hooks=[(name, lambda act, hook: act + d)])) - self.base
        finally:
            if mlp:
                self.model.set_use_hook_mlp_in(False)

    def _run_split(self, name: str, head: int, d: torch.Tensor) -> float:
        def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
            act = act.clone()
            act[:, :, head] += d
            return act

        self.model.set_use_split_qkv_input(True)
        grouped = getattr(self.model.cfg, "n_key_value_heads", None) is not None
        self.model.cfg.ungroup_grouped_query_attention = grouped  # a key/value copy per query head, as TransformerLens offers
        try:
            with torch.no_grad():
                return self.metric(self.model.run_with_hooks(self.batch.clean, fwd_hooks=[(name, hook)])) - self.base
        finally:
            self.model.set_use_split_qkv_input(False)
            self.model.cfg.ungroup_grouped_query_attention = False


def _mlp_input(model: Any, layer: int) -> str:
    """The hook holding what layer ``layer``'s MLP reads (before its norm)."""
    return f"blocks.{layer}.hook_resid_pre" if model.cfg.parallel_attn_mlp else f"blocks.{layer}.hook_resid_mid"


def scores(frame: Any) -> dict[tuple[str, str, str], float]:
    return {(a, b, c): s for a, b, c, s in frame[["componentId_pre", "componentId_post", "channel", "score"]].itertuples(index=False)}


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", list(ARCHITECTURES))
def test_patching_equals_the_transformer_lens_oracle(option: str) -> None:
    model = make_model(option)
    graph = graph_for(model, option)
    batch = random_batch(model)
    ours = scores(compute_patching(model, graph, TASK, batch))
    oracle = Oracle(model, graph, batch)
    # the two decompositions of the senders agree (the oracle's heads come from hook_result)
    mine = sender_outputs(model, graph, batch.corrupted) - sender_outputs(model, graph, batch.clean)
    for s in graph.senders:
        torch.testing.assert_close(mine[:, :, s.index], oracle.delta[s.component_id], rtol=0, atol=1e-10)
    kinds: set[str] = set()
    worst = 0.0
    for si, ri in all_edges(graph):
        s, r = graph.senders[si], graph.receivers[ri]
        expected = oracle.effect(s.component_id, r)
        got = ours[(s.component_id, r.component_id, r.channel.value)]
        worst = max(worst, abs(got - expected))
        kinds.add(r.kind.value if r.kind.value != "head" else r.channel.value)
    scale = max(abs(v) for v in ours.values())
    assert scale > 1e-2, "the edges must carry real effects for the comparison to mean anything"
    assert worst < 1e-9 * max(scale, 1.0), (option, worst)
    expected_kinds = {"q", "k", "v", "logits"} | (set() if model.cfg.attn_only else {"mlp"})
    assert expected_kinds <= kinds
    if not model.cfg.attn_only:
        assert {"feature", "error"} <= kinds and ("neuron" in kinds or model.cfg.gated_mlp)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("option", list(ARCHITECTURES))
def test_a_zero_delta_changes_nothing(option: str, dtype: torch.dtype) -> None:
    """To rounding (shortformer once moved 43-48 of 81 q/k edges by up to 2.6 logits here).

    The patched q/k/v/neuron inputs are bit-identical to the clean ones for a zero delta; what is
    left is the matrix library rounding one row of a batch differently from another (~1 ulp)."""
    model = make_model(option).to(dtype)
    graph = graph_for(model, option)
    if dtype is torch.float32:
        for sae in graph.saes.values():
            for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
                setattr(sae, name, getattr(sae, name).float())
    batch = random_batch(model, seed=1)
    zero = torch.zeros_like(sender_outputs(model, graph, batch.clean))
    frame = compute_patching(model, graph, TASK, batch, MethodConfig(), delta=zero)
    with torch.no_grad():
        clean = float(TASK.metric(model(batch.clean), batch).abs().mean())
    ulp = torch.finfo(dtype).eps * max(clean, 1.0)
    assert len(frame) == len(all_edges(graph))
    assert frame["score"].abs().max() <= 4 * ulp, frame.loc[frame["score"].abs() > 4 * ulp].head()


@pytest.mark.parametrize("option", list(ARCHITECTURES))
def test_circuit_hook_invariants(option: str) -> None:
    """All edges kept = the clean run; none = the corrupted run; all but one = that edge's patching."""
    model = make_model(option)
    graph = build_graph(model, option)  # circuits are head-level
    batch = random_batch(model, seed=2)
    corrupted = sender_outputs(model, graph, batch.corrupted)
    with torch.no_grad():
        clean_m = float(TASK.metric(model(batch.clean), batch).mean())
        corr_m = float(TASK.metric(model(batch.corrupted), batch).mean())
    everything = set(all_edges(graph))
    # to rounding: the hooked run sums the same terms in another grouping (1 ulp apart with some CPUs' kernels)
    assert circuit_metric(model, graph, TASK, batch, corrupted, everything) == pytest.approx(clean_m, rel=1e-12, abs=1e-15)
    assert circuit_metric(model, graph, TASK, batch, corrupted, set()) == pytest.approx(corr_m, abs=1e-10)
    patch = scores(compute_patching(model, graph, TASK, batch))
    picked = [e for e in sorted(everything) if e[1] % 3 == 0][:12]  # q, k, v, MLP and logit receivers
    channels = set()
    for si, ri in picked:
        s, r = graph.senders[si], graph.receivers[ri]
        without = circuit_metric(model, graph, TASK, batch, corrupted, everything - {(si, ri)}) - clean_m
        assert without == pytest.approx(patch[(s.component_id, r.component_id, r.channel.value)], abs=1e-10)
        channels.add(r.channel.value)
    assert len(channels) >= 2


@pytest.mark.parametrize("option", list(ARCHITECTURES))
def test_eap_is_the_first_order_term_of_patching(option: str) -> None:
    """Corrupted embeddings = clean ones moved by eps: |EAP - patching| / max|patching| shrinks ~ eps."""
    model = make_model(option)
    graph = graph_for(model, option)

    def error(eps: float) -> float:
        batch = random_batch(model, seed=3)
        gen = torch.Generator().manual_seed(5)
        noise = eps * torch.randn(model.cfg.d_vocab, model.cfg.d_model, generator=gen, dtype=torch.float64)
        w_e = model.W_E.detach().clone()
        d_vocab = model.cfg.d_vocab

        with torch.no_grad():  # the corrupted tokens are copies of the clean ones, moved by eps
            model.embed.W_E.data = torch.cat([w_e, w_e + noise])
            model.cfg.d_vocab = 2 * d_vocab
            try:
                moved = PromptBatch(batch.clean, batch.clean + d_vocab, batch.targets, batch.mask)
                eap = scores(compute_eap(model, graph, TASK, moved))
                exact = scores(compute_patching(model, graph, TASK, moved))
            finally:
                model.embed.W_E.data = w_e
                model.cfg.d_vocab = d_vocab
        scale = max(abs(v) for v in exact.values())
        return max(abs(eap[k] - exact[k]) for k in exact) / scale

    small, large = error(1e-5), error(1e-4)
    assert small < 1e-3, small
    assert large / small > 5, (large, small)


@pytest.mark.parametrize("option", list(ARCHITECTURES))
def test_activation_ig_is_complete_at_the_logits(option: str) -> None:
    """EAP-IG over activations: the edges into the logits sum to m(corrupted) - m(clean)."""
    model = make_model(option)
    graph = graph_for(model, option)
    batch = random_batch(model, seed=4)
    frame = compute_eap_ig_activations(model, graph, TASK, batch, MethodConfig(steps=32))
    with torch.no_grad():
        gap = float(TASK.metric(model(batch.corrupted), batch).mean() - TASK.metric(model(batch.clean), batch).mean())
    into_logits = frame.loc[frame.componentId_post == f"{option}/LOGITS"]
    # the whole MLPs (not their neurons, features or error) stand for each layer's MLP write
    parts = into_logits.componentId_pre.str.contains(r"\.N\d|\.F\d|\.ERR", regex=True)
    assert abs(gap) > 1e-2
    assert into_logits.loc[~parts, "score"].sum() == pytest.approx(gap, rel=2e-3)


@pytest.mark.parametrize("option", list(ARCHITECTURES))
def test_eap_ig_integrates_to_the_gap(option: str) -> None:
    """EAP-IG's points are alpha = 1/k, ..., 1 (the clean end in, the corrupted end out): a right
    Riemann sum of the path integral. Summed over every receiver, the embedding's edges are that
    integral of dm/d(embedding), so they reach m(corrupted) - m(clean) with an error shrinking as
    1/k (measured 0.07 -> 0.018 at k = 16 -> 64 on the standard option). k = 1 is plain EAP."""
    from ingest.edges.methods import compute_eap_ig

    model = make_model(option)
    graph = build_graph(model, option)  # head level: each receiver input read once
    batch = random_batch(model, seed=4)
    with torch.no_grad():
        gap = float(TASK.metric(model(batch.corrupted), batch).mean() - TASK.metric(model(batch.clean), batch).mean())

    def embed_total(steps: int) -> float:
        frame = compute_eap_ig(model, graph, TASK, batch, MethodConfig(steps=steps))
        return float(frame.loc[frame.componentId_pre == f"{option}/EMBED", "score"].sum())

    err16, err64 = abs(embed_total(16) - gap), abs(embed_total(64) - gap)
    assert abs(gap) > 1e-2
    assert err64 < 0.05 * abs(gap), (err64, gap)
    # first order in 1/k (the points are not midpoints), unless both are already within 1% of the gap
    assert err64 < max(err16 / 2.5, 1e-2 * abs(gap)), (err16, err64)
    eap = compute_eap(model, graph, TASK, batch)["score"].to_numpy()
    one = compute_eap_ig(model, graph, TASK, batch, MethodConfig(steps=1))["score"].to_numpy()
    assert np.array_equal(eap, one)


# ---------------------------------------------------------------------------------------------
# Refusals: one line naming the option, never a wrong number.

REFUSED = {
    "norm after each sublayer": ({"use_normalization_before_and_after": True, "normalization_type": "RMS"}, "use_normalization_before_and_after"),
}


@pytest.mark.parametrize("option", list(REFUSED))
def test_unsupported_options_are_refused_by_name(option: str) -> None:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    extra, named = REFUSED[option]
    model = HookedTransformer(HookedTransformerConfig(**{**BASE, **extra}))
    with pytest.raises(ModelError) as err:
        build_graph(model, "m")
    message = str(err.value)
    assert named in message and "\n" not in message


def test_neurons_of_a_gated_or_mixture_mlp_are_refused_by_name() -> None:
    model = make_model("gated-mlp")
    with pytest.raises(ModelError, match="gated_mlp"):
        build_graph(model, "m", {0: [1]})
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    moe = HookedTransformer(HookedTransformerConfig(**{**BASE, "num_experts": 2, "experts_per_token": 1}))
    with pytest.raises(ModelError, match="num_experts"):
        build_graph(moe, "m", {0: [1]})


def test_edge_count_of_every_option_follows_the_graph() -> None:
    """Sanity for the matrix: parallel MLPs do not see their own layer's heads."""
    par, seq = graph_for(make_model("parallel"), "parallel"), graph_for(make_model("standard"), "standard")
    mlp0 = next(r for r in par.receivers if r.component_id == "parallel/L0.MLP")
    assert [s.component_id for s in par.visible(mlp0)] == ["parallel/EMBED"]
    assert len(seq.visible(next(r for r in seq.receivers if r.component_id == "standard/L0.MLP"))) == 1 + BASE["n_heads"]


def test_every_option_is_distinct() -> None:
    """The matrix really builds what it names (e.g. a typo in a config key would fall back to the default)."""
    seen = {}
    for option, spec in ARCHITECTURES.items():
        cfg = make_model(option).cfg
        for key, value in spec.items():
            if key != "no_positions":
                assert getattr(cfg, key) == value, (option, key)
        seen[option] = cfg
    assert not make_model("no-positions").W_pos.any() and make_model("standard").W_pos.any()


def test_grouped_query_models_are_given_back_grouped() -> None:
    """The ungrouped view is the measurement's business: the caller's model keeps its setting."""
    model = make_model("grouped-query")
    assert not model.cfg.ungroup_grouped_query_attention
    graph = build_graph(model, "gqa")
    compute_patching(model, graph, TASK, random_batch(model))
    compute_eap(model, graph, TASK, random_batch(model))
    assert not model.cfg.ungroup_grouped_query_attention
    assert sum(1 for r in graph.receivers if r.channel.value == "k") == 2 * BASE["n_heads"]  # a k input per query head


def _gradients_through_query(model: Any, batch: PromptBatch, layer: int, j: int) -> dict[str, torch.Tensor]:
    """TransformerLens's per-head q/k/v input copies' gradients (``[b, p, h, d_model]``) when only
    ``layer``'s attention output at query position ``j`` passes gradient (a straight-through mask at
    ``hook_z``: the forward values are untouched)."""
    keep = torch.zeros(batch.clean.shape[1], dtype=torch.float64)
    keep[j] = 1.0
    inputs: dict[str, torch.Tensor] = {}

    def only_j(z: torch.Tensor, hook: Any) -> torch.Tensor:
        return z.detach() + keep[None, :, None, None] * (z - z.detach())

    def grab(name: str) -> Any:
        def fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
            act.retain_grad()
            inputs[name] = act
            return act
        return fn

    hooks = [(f"blocks.{layer}.attn.hook_z", only_j)] + [(f"blocks.{layer}.hook_{c}_input", grab(c)) for c in "qkv"]
    model.set_use_split_qkv_input(True)
    grouped = getattr(model.cfg, "n_key_value_heads", None) is not None
    model.cfg.ungroup_grouped_query_attention = grouped
    try:
        with torch.enable_grad():
            TASK.metric(model.run_with_hooks(batch.clean, fwd_hooks=hooks), batch).mean().backward()
    finally:
        model.set_use_split_qkv_input(False)
        model.cfg.ungroup_grouped_query_attention = False
        model.zero_grad(set_to_none=True)
    return {c: t.grad for c, t in inputs.items()}


@pytest.mark.parametrize("option", list(ARCHITECTURES))
def test_position_resolved_eap_splits_edges_by_where_they_act(option: str) -> None:
    """``--per-position``: the edge ``u@i -> v@j`` equals an oracle built from TransformerLens's own
    per-head input copies, with gradient let through the head's output at ``j`` alone; q and
    non-head receivers have ``i == j``, keys and values ``i <= j`` in causal models; and the pairs
    sum to the position-free edge."""
    from ingest.edges.methods import aggregate_positions

    model = make_model(option)
    graph = graph_for(model, option)
    batch = random_batch(model, seed=4)
    flat = scores(compute_eap(model, graph, TASK, batch))
    pos = compute_eap(model, graph, TASK, batch, MethodConfig(per_position=True))
    summed = scores(aggregate_positions(pos))
    scale = max(abs(v) for v in flat.values())
    assert scale > 1e-2 and set(summed) == set(flat)
    assert max(abs(summed[k] - flat[k]) for k in flat) < 1e-12 * scale
    across = pos[pos.srcPos != pos.dstPos]
    assert set(across.channel) == {"k", "v"}
    causal = model.cfg.attention_dir == "causal"
    assert (across.srcPos < across.dstPos).all() == causal
    assert across.score.abs().max() > 1e-3 * scale  # the split carries real cross-position effects
    delta = sender_outputs(model, graph, batch.corrupted) - sender_outputs(model, graph, batch.clean)
    index = {s.component_id: s.index for s in graph.senders}
    heads = pos[pos.componentId_post.str.contains(r"\.H\d+$")]
    got = {(a, b, c, int(i), int(j)): v for a, b, c, v, i, j in heads.itertuples(index=False)}
    worst, seen = 0.0, 0
    n_pos = batch.clean.shape[1]
    for layer in range(model.cfg.n_layers):
        for j in range(n_pos):
            grads = _gradients_through_query(model, batch, layer, j)
            for r in (r for r in graph.receivers if r.kind.value == "head" and r.layer == layer):
                g = grads[r.channel.value][:, :, r.head]  # [b, p, d]
                for s in graph.visible(r):
                    expected = torch.einsum("bpd,bpd->p", delta[:, :, index[s.component_id]], g)
                    for i in range(n_pos):
                        key = (s.component_id, r.component_id, r.channel.value, i, j)
                        if key in got:
                            worst = max(worst, abs(got[key] - float(expected[i])))
                            seen += 1
                        else:  # a pair the frame leaves out acts not at all
                            assert abs(float(expected[i])) < 1e-12 * scale, key
    assert seen == len(heads)
    assert worst < 1e-10 * scale, (option, worst)
    n = len(graph.senders) * len(graph.receivers) * n_pos * n_pos  # memory is bounded before anything is computed
    with pytest.raises(ValidationError, match=f"= {n:,} values"):
        compute_eap(model, graph, TASK, batch, MethodConfig(per_position=True, position_budget=n - 1))


@pytest.mark.parametrize("option", list(ARCHITECTURES))
def test_head_input_gradients_summed_over_steps_equal_autograd_on_per_head_copies(option: str) -> None:
    """The head-input gradients EAP-IG sums over its steps (kept factored, multiplied by ``W`` once;
    each step's correction read off the forward's own q/k/v where the projection reads the norm's
    output) equal, summed over two embeddings, autograd's on TransformerLens's per-head input copies."""
    from ingest.edges.decoder import HeadGradSum, _receiver_grads, _receiver_groups, mlp_in_hook
    from ingest.edges.interface import analysis_mode

    model = make_model(option)
    graph = graph_for(model, option)
    batch = random_batch(model)
    task = TargetLogit()
    groups = _receiver_groups(graph)
    heads = [i for i, g in enumerate(groups) if g.kind.value == "head"]
    with analysis_mode(model), mlp_in_hook(model):
        emb = model.embed(batch.clean)
        steps = [_receiver_grads(model, graph, task, batch, emb * scale, groups, factored=True)[0] for scale in (1.0, 0.5)]
        ours = {}
        for i in heads:
            first, second = steps[0][i], steps[1][i]
            ours[i] = first.add_(second).dense() if isinstance(first, HeadGradSum) else first + second
        oracle = {i: torch.zeros_like(ours[i]) for i in heads}
        model.set_use_split_qkv_input(True)
        try:
            for scale in (1.0, 0.5):
                kept: dict[str, torch.Tensor] = {}

                def keep(act: torch.Tensor, hook: Any) -> torch.Tensor:
                    act.retain_grad()
                    kept[hook.name] = act
                    return act

                leaf = (emb * scale).detach().requires_grad_(True)
                names = [f"blocks.{g.layer}.hook_{c}_input" for g in (groups[i] for i in heads) for c in "qkv"]
                logits = model.run_with_hooks(batch.clean, fwd_hooks=[("hook_embed", lambda a, hook: leaf)] + [(n, keep) for n in names])
                task.metric(logits, batch).mean().backward()
                for i in heads:
                    layer = groups[i].layer
                    oracle[i] += torch.cat([kept[f"blocks.{layer}.hook_{c}_input"].grad for c in "qkv"], dim=2)
        finally:
            model.set_use_split_qkv_input(False)
    for i in heads:
        torch.testing.assert_close(ours[i], oracle[i], rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("option", [o for o, spec in ARCHITECTURES.items() if not spec.get("attn_only") and not spec.get("gated_mlp")])
def test_neuron_to_neuron_scores_in_rank_one_equal_the_dense_product(option: str) -> None:
    """Neuron senders meet neuron receivers in rank one (no product over d_model per edge); with
    neurons on both layers, EAP-IG's scores equal the dense product's (the per-prompt path, which
    spreads every gradient over d_model), for every norm and option with a plain MLP."""
    from ingest.edges.methods import compute_eap_ig

    model = make_model(option)
    graph = build_graph(model, option, {0: [2, 5, 7], 1: [1, 3, 8, 11]})
    batch = random_batch(model)
    rank_one = scores(compute_eap_ig(model, graph, TASK, batch, MethodConfig(steps=3)))
    dense = scores(compute_eap_ig(model, graph, TASK, batch, MethodConfig(steps=3, per_prompt=True)))
    pairs = [key for key in rank_one if ".N" in key[0] and ".N" in key[1]]
    assert len(pairs) == 3 * 4
    assert rank_one.keys() == dense.keys()
    for key, value in dense.items():
        assert rank_one[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
