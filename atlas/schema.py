"""The vocabulary of the connectome: node kinds, channels, methods, labels and relationship types.

Labels, relationship types, property names and DataFrame columns are one set of words, defined
here once (camelCase properties, PascalCase labels, UPPER_SNAKE relationship types, as in Neo4j).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ComponentKind",
    "Channel",
    "Method",
    "Metric",
    "Ablation",
    "Granularity",
    "ModelFamily",
    "choices",
    "RunStatus",
    "RelType",
    "COMPONENT_LABEL",
    "CONSTRAINTS",
    "INDEXES",
    "EDGE_PROPERTIES",
    "MAX_PROMPTS",
    "MAX_STEPS",
    "RUN_CACHES",
    "KIND_LABEL",
]


class ComponentKind(StrEnum):
    """Kinds of node in the connectome; each maps to one Neo4j label besides ``:Component``."""

    EMBED = "embed"
    """Token (plus absolute positional) embedding: the source of every path."""
    HEAD = "head"
    """One attention head; it receives on three channels (q, k, v)."""
    MLP = "mlp"
    """One whole MLP layer."""
    NEURON = "neuron"
    """One hidden unit of an MLP layer."""
    FEATURE = "feature"
    """One latent of a sparse dictionary (SAE or transcoder)."""
    ERROR = "error"
    """A sparse dictionary's error term at one site (what its features leave out), so edges stay complete."""
    LOGITS = "logits"
    """The unembedding: the sink of every path."""


KIND_LABEL: dict[ComponentKind, str] = {
    ComponentKind.EMBED: "Embed",
    ComponentKind.HEAD: "Head",
    ComponentKind.MLP: "Mlp",
    ComponentKind.NEURON: "Neuron",
    ComponentKind.FEATURE: "Feature",
    ComponentKind.ERROR: "Error",
    ComponentKind.LOGITS: "Logit",
}
COMPONENT_LABEL = "Component"


class Channel(StrEnum):
    """Which input of the receiving component an edge enters through."""

    Q = "q"
    """The query input of an attention head (read at the destination position)."""
    K = "k"
    """The key input of an attention head (read at the source positions)."""
    V = "v"
    """The value input of an attention head (what is moved)."""
    IN = "in"
    """The single input of an MLP, neuron, feature or the logits."""


class Method(StrEnum):
    """Edge-scoring methods; ``ingest.edges.registry`` holds one entry per member (function, passes, what it accepts)."""

    EAP = "eap"
    """Edge attribution patching (Syed et al. 2023): one clean gradient times the activation delta."""
    EAP_IG = "eap-ig"
    """EAP with integrated gradients along the clean-corrupt input path (Hanna et al. 2024)."""
    EAP_IG_ACT = "eap-ig-act"
    """EAP-IG over activations: every sender's output interpolated linearly (Hanna et al. 2024)."""
    PATCHING = "patching"
    """Exact activation patching of every edge: the reference the estimates are checked against."""


class Metric(StrEnum):
    """What a run's edges measure the effect on (per prompt, averaged over its scored positions)."""

    LOGIT = "logit"
    """The target token's logit minus the mean logit: linear in the residual stream, does not saturate."""
    LOGPROB = "logprob"
    """log p(target)."""
    TARGET_LOGIT = "target-logit"
    """The raw target logit (auto-circuit's ``logit``), for side-by-side comparisons."""
    PROB = "prob"
    """p(target)."""
    LOGIT_DIFF = "logit-diff"
    """The target's logit minus a per-prompt counterfactual token's (IOI-style; prompts files give ``incorrect``)."""
    KL = "kl"
    """Minus the KL divergence of the clean next-token distribution to the current one (0 on the clean
    run, lower the further the output moves; ACDC's metric, sign flipped so higher = the clean behaviour)."""
    COSINE = "cosine"
    """Encoders: the cosine similarity of the prompt's sentence embedding (the mean of the encoder's
    output) to its target sentence's."""
    PROB_DIFF = "prob-diff"
    """The probability of a per-prompt set of good tokens minus that of a set of bad ones at each scored
    position (greater-than: the years above the start year minus those at or below it)."""
    L2 = "l2"
    """Minus the mean squared change, over scored positions, of the chosen output logit (each position's
    target) from its clean value: regression-style readouts (a compiled program's numeric output)."""


class Ablation(StrEnum):
    """What replaces a lesioned (or pruned-away) component's output."""

    CORRUPT = "corrupt"
    """Its output on the corrupted prompt (interchange ablation)."""
    ZERO = "zero"
    """Zero."""
    MEAN = "mean"
    """Its mean output over reference prompts, per position."""
    RESAMPLE = "resample"
    """Its output on another, randomly drawn reference prompt."""


class Granularity(StrEnum):
    """Which units a run's connectome resolves inside the MLPs."""

    HEAD = "head"
    """Heads and whole MLPs."""
    NEURON = "neuron"
    """Also the top-K neurons of each MLP (by EAP node attribution)."""
    FEATURE = "feature"
    """Also the active features of sparse dictionaries on the MLPs, plus their error nodes."""


class ModelFamily(StrEnum):
    """Model families whose edges are computed through their own interface (``ingest.edges.interface``)."""

    DECODER = "decoder"
    """Pre-LN (or norm-free) decoders: TransformerLens's ``HookedTransformer``."""
    ENCODER = "encoder"
    """Post-LN BERT-style encoders: TransformerLens's ``HookedEncoder``."""


def choices(vocabulary: type[StrEnum]) -> list[str]:
    """A closed vocabulary's values, for argparse ``choices`` and error messages."""
    return [member.value for member in vocabulary]


class RunStatus(StrEnum):
    """Life cycle of a ``:Run``; only ``complete`` runs are whole."""

    WRITING = "writing"
    COMPLETE = "complete"
    FAILED = "failed"
    DELETING = "deleting"
    """``atlas runs --delete`` has begun: the run is no longer whole; deleting it again finishes the job."""


class RelType(StrEnum):
    """Relationship types of the graph."""

    ATTRIBUTION = "ATTRIBUTION"
    ATTRIBUTION_AT = "ATTRIBUTION_AT"
    """A per-position run's edge ``u@srcPos -> v@dstPos`` (``ingest --per-position``); the run's
    ``ATTRIBUTION`` edge of the same ``(u, v, channel)`` is the sum of these over position pairs."""
    ABLATION = "ABLATION"
    COMPOSITION = "COMPOSITION"
    PART_OF = "PART_OF"
    MEMBER_OF = "MEMBER_OF"
    OF_MODEL = "OF_MODEL"
    ALIGNED_WITH = "ALIGNED_WITH"
    NOISE_CORRELATED = "NOISE_CORRELATED"
    """Trial-to-trial co-variation of two components under input noise: ``{r, signal, rNull, z, sigma, probe, runId}``."""
    SIMILAR_TO = "SIMILAR_TO"
    """Representational similarity of two components on a probe set: ``{cka, cca, rsa, probe}``."""
    IN_RUN = "IN_RUN"
    """A component's place in one run's hierarchy: ``{level, module, minWeight}``."""


# (name, label, property): unique constraints, created IF NOT EXISTS.
CONSTRAINTS: tuple[tuple[str, str, str], ...] = (
    ("component_id", COMPONENT_LABEL, "componentId"),
    ("model_id", "Model", "modelId"),
    ("run_id", "Run", "runId"),
    ("circuit_id", "Circuit", "circuitId"),
    ("dictionary_id", "Dictionary", "dictionaryId"),
    ("run_claim", "RunClaim", "claimKey"),
    ("edge_columns", "EdgeColumns", "columnsKey"),
)
# (name, relationship type, property): relationship indexes for the measured types (created on Neo4j;
# ArcadeDB deletes edges far faster without them, see atlas.connectome.ensure_schema).
INDEXES: tuple[tuple[str, RelType, str], ...] = (
    ("attribution_run", RelType.ATTRIBUTION, "runId"),
    ("attribution_at_run", RelType.ATTRIBUTION_AT, "runId"),
    ("ablation_run", RelType.ABLATION, "runId"),
)
RUN_EDGE_TYPES: tuple[RelType, ...] = (RelType.ATTRIBUTION, RelType.ATTRIBUTION_AT, RelType.ABLATION)
"""The relationship types whose edges belong to one run (``runId``): deleted, copied and counted with it."""

EDGE_PROPERTIES: frozenset[str] = frozenset({
    "runId", "channel", "score", "effect", "srcPos", "dstPos",  # measured edges
    "promptScores",  # the score per prompt (runs made with --per-prompt), in the run's prompt order
    "ablation", "scope",  # ABLATION: how the source (or the edge) was lesioned
    "kind", "baseline", "zScore", "silent", "modelId",  # COMPOSITION: Q/K/V kind, random baseline, zero-weight heads
})
"""Every property a measured or structural relationship may carry: the only names
``atlas.connectome.write_edges`` formats into a statement."""

RUN_CACHES: frozenset[str] = frozenset({"topPaths", "topPathsSplit"})
"""Derived results kept on a complete ``:Run`` (JSON): its strongest paths, whole or split by channel."""

MAX_PROMPTS = 65_536
"""Prompts in one run: their clean and corrupted activations are held in memory together."""
MAX_STEPS = 1_000
"""EAP-IG steps: each is a forward and a backward pass (5 to 20 is typical)."""
