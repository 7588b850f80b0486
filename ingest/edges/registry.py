"""The edge methods, in one registry: what each computes and what it accepts.

Every part of the atlas that needs to know about a method reads it here: the CLI (choices and help),
the ingestion job (validation, progress bar totals, which figures a run keeps), sharding (split by
prompts or by edges) and the docs (``docs/methods.md`` is checked against this table by a test).

Adding a method is one entry here, one member of :class:`atlas.schema.Method` (the stored vocabulary)
and its compute function, written against :mod:`ingest.edges.interface`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from atlas.errors import ValidationError
from atlas.schema import Granularity, Method, Metric, ModelFamily

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MethodSpec", "METHODS", "method_spec", "get_method", "methods_table"]

_DECODER_METRICS = frozenset(Metric) - {Metric.COSINE}


@dataclass(frozen=True)
class MethodSpec:
    """One edge method and what it accepts.

    Attributes:
        method: Its stored name.
        summary: One line for ``--help`` and the docs.
        compute: ``(model, graph, task, batch, config, progress) -> edge frame`` (an import path
            ``module:function``, resolved on first use so reading the registry imports no torch).
        passes: Progress units of one pass over a prompt chunk, from ``(steps, n_edges)``.
        shards_by: What a sharded run splits: ``prompts`` (scores are means over prompts, merged
            exactly by size-weighted means) or ``edges`` (each shard scores its edges on every prompt).
        uses_steps: Whether ``--steps`` (integration points) means anything to it.
        metrics: The metrics it accepts (a gradient at the clean run that vanishes, e.g. KL's, is refused).
        granularities: Head, neuron and/or feature connectomes.
        families: The model families (:class:`atlas.schema.ModelFamily`) it scores, each through its
            interface (:mod:`ingest.edges.interface`).
        per_position: Whether it can resolve edges by position pair.
        per_prompt: Whether it can keep each edge's score per prompt.
    """

    method: Method
    summary: str
    compute: str
    passes: Callable[[int, int], int]
    shards_by: Literal["prompts", "edges"]
    uses_steps: bool
    metrics: frozenset[Metric]
    granularities: frozenset[Granularity]
    families: frozenset[ModelFamily]
    per_position: bool
    per_prompt: bool

    def function(self) -> Callable[..., pd.DataFrame]:
        """The compute function (imported on first use)."""
        import importlib

        module, name = self.compute.split(":")
        fn: Callable[..., pd.DataFrame] = getattr(importlib.import_module(module), name)
        return fn

    def check(self, *, metric: str, granularity: str = Granularity.HEAD.value, family: str = ModelFamily.DECODER.value,
              per_position: bool = False, per_prompt: bool = False) -> None:
        """Refuse, in one line, a combination this method does not offer."""
        name = self.method.value
        if family not in {a.value for a in self.families}:
            offered = sorted(s.method.value for s in METHODS.values() if family in {a.value for a in s.families})
            raise ValidationError(f"{family}s are scored with {' or '.join(offered)}, not {name}")
        if metric not in {m.value for m in self.metrics}:
            if metric in (Metric.KL.value, Metric.L2.value):
                what = "KL divergence" if metric == Metric.KL.value else "squared change"
                raise ValidationError(f"the gradient of the {what} ({metric}) vanishes at the clean run, so {name.upper()} (one gradient, "
                                      f"there) would score every edge 0: use {', '.join(_accepting('metrics', Metric(metric)))}")
            raise ValidationError(f"{name} does not score the {metric} metric: use {', '.join(_accepting('metrics', Metric(metric))) or 'another metric'}")
        if granularity not in {g.value for g in self.granularities}:
            raise ValidationError(f"{name} does not offer {granularity} granularity")
        if per_position and not self.per_position:
            raise ValidationError(f"--per-position needs a gradient method ({', '.join(_accepting('per_position', True))}): {name} per position "
                                  "pair would cost one forward per edge and pair")
        if per_prompt and not self.per_prompt:
            raise ValidationError(f"{name} keeps no per-prompt scores")


def _accepting(field: str, value: object) -> list[str]:
    """The methods whose ``field`` holds (or contains) ``value``, in registry order."""
    out = []
    for spec in METHODS.values():
        have = getattr(spec, field)
        if (value in have) if isinstance(have, frozenset) else have == value:
            out.append(spec.method.value)
    return out


METHODS: dict[Method, MethodSpec] = {
    spec.method: spec
    for spec in (
        MethodSpec(Method.EAP, "edge attribution patching: one clean gradient times each sender's change (2 forwards + 1 backward)",
                   "ingest.edges.methods:compute_eap", lambda steps, n_edges: 3, "prompts", False,
                   _DECODER_METRICS - {Metric.KL, Metric.L2} | {Metric.COSINE}, frozenset(Granularity), frozenset(ModelFamily),
                   per_position=True, per_prompt=True),
        MethodSpec(Method.EAP_IG, "EAP with integrated gradients over the clean-corrupted input path (steps + 2 passes); the default",
                   "ingest.edges.methods:compute_eap_ig", lambda steps, n_edges: steps + 2, "prompts", True,
                   _DECODER_METRICS, frozenset(Granularity), frozenset({ModelFamily.DECODER}), per_position=True, per_prompt=True),
        MethodSpec(Method.EAP_IG_ACT, "EAP-IG over activations: every sender's output interpolated (steps + 2 passes)",
                   "ingest.edges.methods:compute_eap_ig_activations", lambda steps, n_edges: steps + 2, "prompts", True,
                   _DECODER_METRICS, frozenset(Granularity), frozenset({ModelFamily.DECODER}), per_position=True, per_prompt=True),
        MethodSpec(Method.PATCHING, "exact activation patching of every edge (one forward per edge, tiled): the reference",
                   "ingest.edges.methods:compute_patching", lambda steps, n_edges: n_edges, "edges", False,
                   frozenset(Metric), frozenset(Granularity), frozenset(ModelFamily), per_position=False, per_prompt=True),
    )
}
assert set(METHODS) == set(Method), "every stored method has a registry entry"


def method_spec(name: str) -> MethodSpec:
    """The registry entry of a method name.

    Raises:
        ValidationError: no such method.
    """
    try:
        return METHODS[Method(name)]
    except ValueError:
        raise ValidationError(f"unknown method {name!r}: choose one of {[m.value for m in Method]}") from None


def get_method(name: str) -> Callable[..., pd.DataFrame]:
    """The compute function of a method name (``eap``, ``eap-ig``, ``eap-ig-act``, ``patching``)."""
    return method_spec(name).function()


def methods_table() -> str:
    """The registry as a Markdown table (the docs' methods page holds exactly this)."""
    rows = ["| method | what it computes | passes per prompt chunk | shards by | metrics | granularities | models | per position | per prompt |",
            "|---|---|---|---|---|---|---|---|---|"]
    for spec in METHODS.values():
        passes = {3: "3"}.get(spec.passes(5, 0), "steps + 2") if spec.shards_by == "prompts" else "one per edge (tiled)"
        metrics = "all" if spec.metrics == frozenset(Metric) else ", ".join(m.value for m in Metric if m in spec.metrics)
        rows.append(f"| `{spec.method.value}` | {spec.summary} | {passes} | {spec.shards_by} | {metrics} | "
                    f"{', '.join(g.value for g in Granularity if g in spec.granularities)} | "
                    f"{', '.join(a.value for a in ModelFamily if a in spec.families)} | "
                    f"{'yes' if spec.per_position else 'no'} | {'yes' if spec.per_prompt else 'no'} |")
    return "\n".join(rows) + "\n"
