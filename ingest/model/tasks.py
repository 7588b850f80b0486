"""Tasks: clean and corrupted prompt batches plus a per-prompt metric, behind one interface.

A task builds a :class:`PromptBatch` for a model; ``task.metric(logits, batch)`` returns one value
per prompt (higher = more of the behaviour). Edge scores estimate how much corrupting an edge moves
the mean of that metric.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from jaxtyping import Bool, Float, Int

from atlas.errors import TaskError
from atlas.schema import Metric

__all__ = ["PromptBatch", "Task", "InductionTask", "BindingTask", "ModAddTask", "PromptFileTask", "get_task", "TASKS", "METRICS", "logprob_metric", "logit_metric", "target_logit_metric",
           "prob_metric", "logit_diff_metric", "kl_metric", "l2_metric", "prepare_batch",
           "CustomMetricTask", "with_metric", "prob_diff_metric", "preferred_metric", "PREFERRED_METRICS", "read_prompt_file", "prompt_tokens", "prompt_pair", "default_prompt_count", "DEFAULT_PROMPTS"]


@dataclass(frozen=True)
class PromptBatch:
    """Clean and corrupted token batches of one shape, with the targets the metric scores.

    Attributes:
        clean: ``[batch, pos]`` token ids.
        corrupted: ``[batch, pos]`` token ids; same shape as ``clean``.
        targets: ``[batch, pos]`` token id expected *after* each position (ignored where not masked).
        mask: ``[batch, pos]`` which positions the metric averages over.
    """

    clean: Int[torch.Tensor, "batch pos"]
    corrupted: Int[torch.Tensor, "batch pos"]
    targets: Int[torch.Tensor, "batch pos"]
    mask: Bool[torch.Tensor, "batch pos"]
    meta: dict[str, Any] = field(default_factory=dict)
    incorrect: Int[torch.Tensor, "batch pos"] | None = None
    """The counterfactual token at each scored position (``logit-diff``); None when the task has none."""
    reference: Float[torch.Tensor, "batch pos vocab"] | None = None
    """The clean run's log-probabilities (``kl``) or logits (``l2``), attached by :func:`prepare_batch`."""

    def __post_init__(self) -> None:
        if self.clean.shape != self.corrupted.shape:
            raise TaskError(
                f"clean and corrupted prompts differ in shape: {tuple(self.clean.shape)} vs {tuple(self.corrupted.shape)}"
            )
        if self.clean.ndim != 2 or self.clean.shape[0] == 0 or self.clean.shape[1] == 0:
            raise TaskError(f"prompt batches must be [batch, pos] and non-empty, got {tuple(self.clean.shape)}")
        if self.targets.shape != self.clean.shape or self.mask.shape != self.clean.shape:
            raise TaskError("targets and mask must have the prompts' shape")
        if self.mask.device.type != "meta" and not bool(self.mask.any(dim=1).all()):  # (a meta batch has no values to check)
            raise TaskError("every prompt needs at least one scored position")
        if self.incorrect is not None and self.incorrect.shape != self.clean.shape:
            raise TaskError("incorrect tokens must have the prompts' shape")

    @property
    def n_prompts(self) -> int:
        return int(self.clean.shape[0])

    @property
    def device(self) -> torch.device:
        return self.clean.device

    def to(self, device: torch.device | str) -> PromptBatch:
        """The batch with every tensor (``meta``'s included) on ``device``; itself when already there."""
        device = torch.device(device)
        if self.clean.device == device:
            return self

        def move(value: Any) -> Any:
            return value.to(device) if isinstance(value, torch.Tensor) else value

        return PromptBatch(move(self.clean), move(self.corrupted), move(self.targets), move(self.mask),
                           {k: move(v) for k, v in self.meta.items()}, move(self.incorrect), move(self.reference))

    def select(self, start: int, stop: int) -> PromptBatch:
        """Prompts ``start:stop`` of the batch (a shard): every per-prompt tensor sliced alike."""
        n = self.n_prompts

        def cut(value: Any) -> Any:
            return value[start:stop] if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == n else value

        return PromptBatch(self.clean[start:stop], self.corrupted[start:stop], self.targets[start:stop], self.mask[start:stop],
                           {k: cut(v) for k, v in self.meta.items()}, cut(self.incorrect), cut(self.reference))

    def repeat(self, copies: int) -> PromptBatch:
        """The batch tiled ``copies`` times along the batch axis (copy-major), per-prompt ``meta`` tensors too."""
        n = self.n_prompts

        def tile(value: Any) -> Any:
            if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == n:
                return value.repeat(copies, *([1] * (value.ndim - 1)))
            return value

        return PromptBatch(
            self.clean.repeat(copies, 1),
            self.corrupted.repeat(copies, 1),
            self.targets.repeat(copies, 1),
            self.mask.repeat(copies, 1),
            {k: tile(v) for k, v in self.meta.items()},
            None if self.incorrect is None else self.incorrect.repeat(copies, 1),
            None if self.reference is None else self.reference.repeat(copies, 1, 1),
        )


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits as float32 for a softmax; never a *down*cast (float64 models keep theirs)."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def logprob_metric(logits: Float[torch.Tensor, "batch pos vocab"], batch: PromptBatch) -> Float[torch.Tensor, "batch"]:  # noqa: F821 (a jaxtyping shape)
    """Mean log-probability of the target token over each prompt's scored positions."""
    logp = torch.log_softmax(_upcast(logits), dim=-1)
    picked = logp.gather(-1, batch.targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    mask = batch.mask.to(picked.dtype)
    return (picked * mask).sum(-1) / mask.sum(-1)


def logit_metric(logits: Float[torch.Tensor, "batch pos vocab"], batch: PromptBatch) -> Float[torch.Tensor, "batch"]:  # noqa: F821 (a jaxtyping shape)
    """Mean over scored positions of the target's logit minus the mean logit.

    Linear in the logits (like the IOI logit difference) and invariant to a shift of all logits.
    Unlike the log-probability it does not saturate, so a component that several others back up
    still shows its contribution; attribution estimates agree with patching far better under it
    (Spearman 0.92 vs 0.65 for EAP-IG on induction-2l).
    """
    picked = logits.gather(-1, batch.targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) - logits.mean(dim=-1)
    mask = batch.mask.to(picked.dtype)
    return (picked * mask).sum(-1) / mask.sum(-1)


def target_logit_metric(logits: Float[torch.Tensor, "batch pos vocab"], batch: PromptBatch) -> Float[torch.Tensor, "batch"]:  # noqa: F821 (a jaxtyping shape)
    """Mean over scored positions of the target's raw logit (auto-circuit's ``logit`` / ``avg_val``).

    Not shift-invariant: a change that lifts every logit counts. Offered so that scores can be
    compared one to one with peers that use it.
    """
    picked = logits.gather(-1, batch.targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    mask = batch.mask.to(picked.dtype)
    return (picked * mask).sum(-1) / mask.sum(-1)


def _masked_mean(values: torch.Tensor, batch: PromptBatch) -> torch.Tensor:
    mask = batch.mask.to(values.dtype)
    return (values * mask).sum(-1) / mask.sum(-1)


def prob_metric(logits: Float[torch.Tensor, "batch pos vocab"], batch: PromptBatch) -> Float[torch.Tensor, "batch"]:  # noqa: F821 (a jaxtyping shape)
    """Mean probability of the target token over each prompt's scored positions."""
    probs = torch.softmax(_upcast(logits), dim=-1)
    return _masked_mean(probs.gather(-1, batch.targets.clamp(min=0).unsqueeze(-1)).squeeze(-1), batch)


def logit_diff_metric(logits: Float[torch.Tensor, "batch pos vocab"], batch: PromptBatch) -> Float[torch.Tensor, "batch"]:  # noqa: F821 (a jaxtyping shape)
    """Mean over scored positions of the target's logit minus the counterfactual (``incorrect``) token's."""
    if batch.incorrect is None:
        raise TaskError("metric 'logit-diff' needs a counterfactual token per prompt: give 'incorrect' in a prompts file")
    target = logits.gather(-1, batch.targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    other = logits.gather(-1, batch.incorrect.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return _masked_mean(target - other, batch)


def prob_diff_metric(logits: Float[torch.Tensor, "batch pos vocab"], batch: PromptBatch) -> Float[torch.Tensor, "batch"]:  # noqa: F821 (a jaxtyping shape)
    """Probability of the prompt's good tokens minus its bad ones (``meta["good"]``, ``meta["bad"]``:
    ``[batch, vocab]`` masks) at each scored position, averaged over them."""
    if "good" not in batch.meta or "bad" not in batch.meta:
        raise TaskError("the prob-diff metric needs a task that names good and bad tokens per prompt (e.g. greater-than)")
    p = torch.softmax(_upcast(logits), dim=-1)
    good, bad = batch.meta["good"].to(p.dtype)[:, None, :], batch.meta["bad"].to(p.dtype)[:, None, :]
    diff = (p * good).sum(-1) - (p * bad).sum(-1)
    mask = batch.mask.to(diff.dtype)
    return (diff * mask).sum(-1) / mask.sum(-1)


def kl_metric(logits: Float[torch.Tensor, "batch pos vocab"], batch: PromptBatch) -> Float[torch.Tensor, "batch"]:  # noqa: F821 (a jaxtyping shape)
    """Minus KL(clean || current) of the next-token distributions, averaged over scored positions."""
    if batch.reference is None:
        raise TaskError("metric 'kl' needs the clean run's distribution: prepare the batch with ingest.model.tasks.prepare_batch")
    logp = torch.log_softmax(_upcast(logits), dim=-1)
    ref = batch.reference.to(logp.dtype)
    kl = (ref.exp() * (ref - logp)).sum(-1)
    return -_masked_mean(kl, batch)


def l2_metric(logits: Float[torch.Tensor, "batch pos vocab"], batch: PromptBatch) -> Float[torch.Tensor, "batch"]:  # noqa: F821 (a jaxtyping shape)
    """Minus the squared change of the chosen output logit (the target at each scored position) from
    its clean value, averaged over scored positions: 0 on the clean run, a regression readout's loss."""
    if batch.reference is None:
        raise TaskError("metric 'l2' needs the clean run's logits: prepare the batch with ingest.model.tasks.prepare_batch")
    index = batch.targets.clamp(min=0).unsqueeze(-1)
    now = logits.gather(-1, index).squeeze(-1)
    clean = batch.reference.to(now.dtype).gather(-1, index).squeeze(-1)
    return -_masked_mean((now - clean) ** 2, batch)


@dataclass(frozen=True)
class CustomMetricTask:
    """A task whose prompts come from ``base`` and whose metric is any ``metric(logits, batch)``
    returning one value per prompt (higher = more of the behaviour): the way to score a behaviour
    the named metrics do not cover, from Python. Every edge method takes it."""

    base: Any
    fn: Callable[[torch.Tensor, PromptBatch], torch.Tensor]
    name: str = "custom"
    description: str = "a task with a metric given as a Python callable"

    def make_batch(self, model: Any, n_prompts: int, seed: int) -> PromptBatch:
        return self.base.make_batch(model, n_prompts, seed)

    def metric(self, logits: torch.Tensor, batch: PromptBatch) -> torch.Tensor:
        out = self.fn(logits, batch)
        if not isinstance(out, torch.Tensor) or out.shape != (batch.clean.shape[0],):
            raise TaskError(f"a metric must return one value per prompt (shape [{batch.clean.shape[0]}]), got "
                            f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
        return out


def with_metric(task: Any, fn: Callable[[torch.Tensor, PromptBatch], torch.Tensor]) -> CustomMetricTask:
    """``task``'s prompts scored by ``fn(logits, batch) -> [batch]`` (see :class:`CustomMetricTask`)."""
    return CustomMetricTask(task, fn, name=f"{getattr(task, 'name', 'task')}+custom")


def prepare_batch(model: Any, batch: PromptBatch, metric: str) -> PromptBatch:
    """``batch`` with what ``metric`` needs from the model attached (``kl``: the clean log-probabilities;
    ``l2``: the clean logits)."""
    if metric not in (Metric.KL.value, Metric.L2.value):
        return batch
    with torch.no_grad():
        logits = model(batch.clean)
        reference = torch.log_softmax(_upcast(logits), dim=-1) if metric == Metric.KL.value else _upcast(logits).detach().clone()
    return PromptBatch(batch.clean, batch.corrupted, batch.targets, batch.mask, batch.meta, batch.incorrect, reference)


METRICS: dict[str, Callable[[torch.Tensor, PromptBatch], torch.Tensor]] = {
    Metric.LOGIT.value: logit_metric, Metric.LOGPROB.value: logprob_metric, Metric.TARGET_LOGIT.value: target_logit_metric,
    Metric.PROB.value: prob_metric, Metric.LOGIT_DIFF.value: logit_diff_metric, Metric.KL.value: kl_metric,
    Metric.L2.value: l2_metric, Metric.PROB_DIFF.value: prob_diff_metric,
}


def _metric(name: str) -> Callable[[torch.Tensor, PromptBatch], torch.Tensor]:
    """The metric ``name``, computed in float32 at least whatever the model's precision."""
    if name not in METRICS:
        raise TaskError(f"unknown metric {name!r}: choose one of {sorted(METRICS)}")
    fn = METRICS[name]
    return lambda logits, batch: fn(_upcast(logits), batch)


class Task(Protocol):
    """What an ingestion needs from a task."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    def make_batch(self, model: Any, n_prompts: int, seed: int) -> PromptBatch: ...

    def metric(self, logits: torch.Tensor, batch: PromptBatch) -> torch.Tensor: ...


@dataclass(frozen=True)
class InductionTask:
    """Repeated random tokens ``A B C ... A B C``; corrupted = first half resampled.

    The metric scores the correct next token over the second half (positions whose next token is
    predictable only by induction): ``logit`` (its logit minus the mean logit, default) or ``logprob``.

    Which half is resampled decides which channels the corruption reaches: the first half feeds the
    keys and values that induction reads (``corrupt="first"``, the default task ``induction``); the
    second half holds the queries (``"second"``, task ``induction-query``); ``"mixed"`` alternates
    the two across prompts (task ``induction-mixed``) so both the q side and the k side of the
    circuit carry signal, which binding analysis needs.

    Attributes:
        half: Length of the repeated segment; the prompt is ``2 * half`` tokens (plus BOS if used).
        vocab_low: Smallest token id drawn (skips special tokens of hub vocabularies).
        metric_name: ``logit`` or ``logprob``.
        corrupt: ``first``, ``second`` or ``mixed``.
    """

    half: int = 12
    vocab_low: int = 0
    metric_name: str = "logit"
    corrupt: str = "first"
    name: str = "induction"
    description: str = "repeated random tokens; corrupted = first half resampled; metric on the next token over the repeat"

    def make_batch(self, model: Any, n_prompts: int, seed: int) -> PromptBatch:
        if n_prompts < 1:
            raise TaskError(f"--prompts must be at least 1, got {n_prompts}")
        d_vocab, n_ctx = int(model.cfg.d_vocab), int(model.cfg.n_ctx)
        half = min(self.half, n_ctx // 2)
        if half < 2:
            raise TaskError(f"model context {n_ctx} is too short for an induction prompt")
        low = self.vocab_low if self.vocab_low < d_vocab - 2 else 0
        gen = torch.Generator().manual_seed(seed)
        first = torch.randint(low, d_vocab, (n_prompts, half), generator=gen)
        other = torch.randint(low, d_vocab, (n_prompts, half), generator=gen)
        clean = torch.cat([first, first], dim=1)
        if self.corrupt not in ("first", "second", "mixed"):
            raise TaskError(f"induction corruption must be first, second or mixed, got {self.corrupt!r}")
        corrupted = torch.cat([other, first], dim=1)
        query_side = torch.cat([first, other], dim=1)
        if self.corrupt == "second":
            corrupted = query_side
        elif self.corrupt == "mixed":
            corrupted[1::2] = query_side[1::2]
        targets = torch.roll(clean, -1, dims=1)
        mask = torch.zeros_like(clean, dtype=torch.bool)
        mask[:, half : 2 * half - 1] = True  # position t predicts t+1 inside the repeat
        return PromptBatch(clean, corrupted, targets, mask, {"half": half, "corrupt": self.corrupt})

    def metric(self, logits: torch.Tensor, batch: PromptBatch) -> torch.Tensor:
        return _metric(self.metric_name)(logits, batch)


def read_prompt_file(path: Path) -> list[dict[str, Any]]:
    """The prompts of a JSON prompts file: a non-empty list of objects (one-line errors otherwise)."""
    try:
        items = json.loads(Path(path).read_text())
    except OSError as exc:
        raise TaskError(f"cannot read prompt file {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise TaskError(f"prompt file {path} is not valid JSON: {exc}") from exc
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        raise TaskError(f"prompt file {path} must hold a non-empty JSON list of objects")
    return items


def prompt_tokens(model: Any, value: Any, what: str, encode: Callable[[str], list[int]]) -> list[int]:
    """A prompts-file field as token ids: text through ``encode`` (the model's tokenizer), or a list of
    ids checked against the vocabulary; ``what`` names the prompt and field in errors."""
    if isinstance(value, str):
        if getattr(model, "tokenizer", None) is None:
            raise TaskError(f"{what} is text but the model has no tokenizer; give token ids")
        return [int(t) for t in encode(value)]
    if isinstance(value, list) and value and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        bad = [t for t in value if not 0 <= t < model.cfg.d_vocab]
        if bad:
            raise TaskError(f"{what} has token ids outside the vocabulary (0..{model.cfg.d_vocab - 1}): {bad[:5]}")
        return value
    raise TaskError(f"{what} must be a string or a non-empty list of token ids")


def prompt_pair(item: dict[str, Any], i: int, path: Path, tokens: Callable[[Any, str], list[int]]) -> tuple[list[int], list[int]]:
    """Prompt ``i``'s clean and corrupted token ids (``tokens(value, what)``), of one length; the
    prompt must also give a ``target``."""
    missing = {"clean", "corrupted", "target"} - set(item)
    if missing:
        raise TaskError(f"prompt {i} in {path} lacks {sorted(missing)}")
    c, x = tokens(item["clean"], f"prompt {i} clean"), tokens(item["corrupted"], f"prompt {i} corrupted")
    if len(c) != len(x):
        raise TaskError(f"prompt {i} in {path}: clean and corrupted lengths differ ({len(c)} vs {len(x)} tokens)")
    return c, x


@dataclass(frozen=True)
class PromptFileTask:
    """Prompts from a JSON file: ``[{"clean": ..., "corrupted": ..., "target": ...}, ...]``.

    ``clean``/``corrupted`` are strings (tokenised by the model) or lists of token ids of one
    length. By default the metric scores the last position: ``target`` is the token (string or id)
    expected after the last clean token, ``incorrect`` (optional, ``logit-diff``) its counterfactual.
    ``positions`` scores other positions: a list of indices (negative ones count from the end) or
    ``"all"``; ``target`` (and ``incorrect``) is then a list with one token per scored position, and
    the metric averages over them. Any named metric applies (``l2``: a readout logit per position).
    """

    path: Path
    metric_name: str = "logit"
    name: str = "prompts"
    description: str = "prompts from a JSON file; metric on the target at the last position, or at the listed positions"

    def _tokens(self, model: Any, value: Any, what: str) -> list[int]:
        return prompt_tokens(model, value, what, lambda text: model.to_tokens(text, prepend_bos=False)[0].tolist())

    def make_batch(self, model: Any, n_prompts: int, seed: int) -> PromptBatch:
        every = read_prompt_file(self.path)
        _say_first(self.path, n_prompts, len(every))
        items = every[:n_prompts]
        clean, corrupt, scored, target, wrong = [], [], [], [], []
        for i, item in enumerate(items):
            c, x = prompt_pair(item, i, self.path, lambda value, what: self._tokens(model, value, what))
            positions = self._positions(item.get("positions"), len(c), f"prompt {i} positions")
            target.append(self._per_position(model, item["target"], positions, f"prompt {i} target"))
            if "incorrect" in item:
                wrong.append(self._per_position(model, item["incorrect"], positions, f"prompt {i} incorrect"))
            clean.append(c)
            corrupt.append(x)
            scored.append(positions)
        lengths = {len(c) for c in clean}
        if len(lengths) != 1:
            raise TaskError(f"prompts in {self.path} have different lengths {sorted(lengths)}; pad them to one length")
        length = lengths.pop()
        if length > model.cfg.n_ctx:
            raise TaskError(f"prompts of {length} tokens exceed the model context of {model.cfg.n_ctx}")
        if wrong and len(wrong) != len(items):
            raise TaskError(f"prompts in {self.path}: give 'incorrect' on every prompt or on none ({len(wrong)} of {len(items)} have it)")
        clean_t = torch.tensor(clean)
        targets = torch.zeros_like(clean_t)
        mask = torch.zeros_like(clean_t, dtype=torch.bool)
        incorrect = torch.zeros_like(clean_t) if wrong else None
        for i, positions in enumerate(scored):
            targets[i, positions] = torch.tensor(target[i])
            mask[i, positions] = True
            if incorrect is not None:
                incorrect[i, positions] = torch.tensor(wrong[i])
        return PromptBatch(clean_t, torch.tensor(corrupt), targets, mask, incorrect=incorrect)

    @staticmethod
    def _positions(value: Any, length: int, what: str) -> list[int]:
        """The scored positions of a prompt of ``length`` tokens (default: the last)."""
        if value is None:
            return [length - 1]
        if value == "all":
            return list(range(length))
        if not isinstance(value, list) or not value or not all(isinstance(p, int) and not isinstance(p, bool) for p in value):
            raise TaskError(f'{what} must be "all" or a non-empty list of position indices')
        out = []
        for p in value:
            if not -length <= p < length:
                raise TaskError(f"{what}: {p} is outside the prompt (0..{length - 1}, or -{length}..-1 from the end)")
            out.append(p % length)
        if len(set(out)) != len(out):
            raise TaskError(f"{what} lists a position twice: {value}")
        return out

    def _per_position(self, model: Any, value: Any, positions: list[int], what: str) -> list[int]:
        """One token per scored position: a single token (string or id) when only the last is scored
        by default, else a list with one token (string or id) per position."""
        if len(positions) == 1 and not isinstance(value, list):
            return self._tokens(model, [value] if isinstance(value, int) else value, what)[:1]
        if not isinstance(value, list) or len(value) != len(positions):
            given = f"{len(value)} tokens" if isinstance(value, list) else "one token"
            raise TaskError(f"{what}: {given} for {len(positions)} scored positions; give one per position")
        return [self._tokens(model, [t] if isinstance(t, int) else t, f"{what} {k}")[0] for k, t in enumerate(value)]

    def metric(self, logits: torch.Tensor, batch: PromptBatch) -> torch.Tensor:
        return _metric(self.metric_name)(logits, batch)


@dataclass(frozen=True)
class ModAddTask:
    """``a b =`` -> ``(a + b) mod p`` for a model whose vocabulary is ``0..p-1`` plus ``=`` (token p).

    Corrupted prompts are another random pair; the metric scores the clean answer at ``=``.
    """

    metric_name: str = "logit"
    name: str = "modadd"
    description: str = "a b = -> (a + b) mod p; corrupted = another random pair; metric on the answer at '='"

    def make_batch(self, model: Any, n_prompts: int, seed: int) -> PromptBatch:
        if n_prompts < 1:
            raise TaskError(f"--prompts must be at least 1, got {n_prompts}")
        p = int(model.cfg.d_vocab) - 1
        if p < 2 or model.cfg.n_ctx < 3:
            raise TaskError("modadd needs a model with vocabulary p + 1 (the last token is '=') and context >= 3")
        gen = torch.Generator().manual_seed(seed)
        pairs = torch.randint(0, p, (n_prompts, 2), generator=gen)
        other = torch.randint(0, p, (n_prompts, 2), generator=gen)
        eq = torch.full((n_prompts, 1), p)
        clean = torch.cat([pairs, eq], dim=1)
        corrupted = torch.cat([other, eq], dim=1)
        targets = torch.zeros_like(clean)
        targets[:, -1] = pairs.sum(dim=1) % p
        mask = torch.zeros_like(clean, dtype=torch.bool)
        mask[:, -1] = True
        return PromptBatch(clean, corrupted, targets, mask, {"p": p})

    def metric(self, logits: torch.Tensor, batch: PromptBatch) -> torch.Tensor:
        return _metric(self.metric_name)(logits, batch)


@dataclass(frozen=True)
class BindingTask:
    """Attribute-first binding prompts ``... A_k E_k ... Q E_k -> A_k`` for the zoo's ``binding`` model.

    ``direction="forward"`` asks an entity for its attribute (binding: the attribute reaches the
    entity's position through the previous-token head and is read on the value channel);
    ``"reverse"`` asks an attribute for its entity (plain induction: the key channel), the negative
    control. Corruptions rotate over prompts so every channel of the circuit carries signal:
    ``swap`` rebinds the answers among the pairs (values), ``query`` asks about another pair
    (queries), ``key`` replaces the queried item in the context by an absent one (keys).
    """

    direction: str = "forward"
    metric_name: str = "logit"
    name: str = "binding"
    description: str = "attribute-first binding (A1 E1 A2 E2 ... Q E2 -> A2); corrupted = swap / query / key rotating"

    def make_batch(self, model: Any, n_prompts: int, seed: int) -> PromptBatch:
        from ingest.model.zoo import BIND_Q, BINDING, binding_prompts

        if n_prompts < 1:
            raise TaskError(f"--prompts must be at least 1, got {n_prompts}")
        if int(model.cfg.d_vocab) != BIND_Q + 1 or int(model.cfg.n_ctx) < BINDING["body"] + 2:
            raise TaskError(f"the binding task needs the zoo's binding vocabulary ({BIND_Q + 1} tokens) and context >= {BINDING['body'] + 2}")
        gen = torch.Generator().manual_seed(seed)
        fwd = self.direction == "forward"
        p = binding_prompts(gen, n_prompts, forward=fwd)
        clean, corrupted = p.tokens, p.tokens.clone()
        # the answer side sits at column 0 (attribute) of a pair for forward queries, 1 for reverse
        ans_col, query_col = (0, 1) if fwd else (1, 0)
        qlow, q_kind = (0, BINDING["n_ent"]) if fwd else (BINDING["n_ent"], BINDING["n_attr"])
        for i in range(n_prompts):
            k = int((p.pairs[i, :, 0] >= 0).sum())
            q = int(p.queried[i])
            mode = i % 3
            if mode == 0:  # swap: rotate the answer-side items among the pairs
                pos = p.pairs[i, :k, ans_col]
                corrupted[i, pos] = clean[i, pos.roll(1)]
            elif mode == 1:  # query: ask about another pair
                other = (q + 1 + int(torch.randint(0, k - 1, (1,), generator=gen))) % k
                corrupted[i, -1] = clean[i, p.pairs[i, other, query_col]]
            else:  # key: the queried item in the context becomes one absent from the prompt
                present = set(clean[i, p.pairs[i, :k, query_col]].tolist())
                absent = [t for t in range(qlow, qlow + q_kind) if t not in present]
                corrupted[i, p.pairs[i, q, query_col]] = absent[int(torch.randint(0, len(absent), (1,), generator=gen))]
        targets = torch.zeros_like(clean)
        targets[:, -1] = p.answer
        mask = torch.zeros_like(clean, dtype=torch.bool)
        mask[:, -1] = True
        return PromptBatch(clean, corrupted, targets, mask, {"direction": self.direction})

    def metric(self, logits: torch.Tensor, batch: PromptBatch) -> torch.Tensor:
        return _metric(self.metric_name)(logits, batch)


TASKS: dict[str, Callable[..., Task]] = {
    "modadd": ModAddTask,
    "induction": InductionTask,
    "induction-query": lambda **kw: InductionTask(corrupt="second", name="induction-query", **kw),
    "induction-mixed": lambda **kw: InductionTask(corrupt="mixed", name="induction-mixed", **kw),
    "binding": BindingTask,
    "binding-reverse": lambda **kw: BindingTask(direction="reverse", name="binding-reverse",
                                                description="reverse binding queries (Q A_k -> E_k), solved by induction: the negative control", **kw),
}


def _standard(name: str) -> Callable[..., Task]:
    """A standard task's constructor, imported on first use (:mod:`ingest.model.standard_tasks`)."""

    def make(**kw: Any) -> Task:
        from ingest.model.standard_tasks import STANDARD_TASKS

        return STANDARD_TASKS[name](**kw)

    return make


TASKS.update({name: _standard(name) for name in ("ioi", "greater-than", "docstring", "sva", "gender")})
PREFERRED_METRICS = {"ioi": "logit-diff", "greater-than": "prob-diff", "docstring": "logit-diff", "sva": "logit-diff", "gender": "logit-diff"}
"""The metric each standard task's paper uses: ``atlas`` commands use it unless ``--metric`` says otherwise."""


def preferred_metric(task: str) -> str:
    """The metric a run of ``task`` uses by default: its paper's for a standard task, else ``logit``."""
    return PREFERRED_METRICS.get(task, Metric.LOGIT.value)


DEFAULT_PROMPTS = 16
"""Prompts a generated task draws unless told otherwise; a prompts file is used whole."""


def default_prompt_count(task: str) -> int:
    """How many prompts a run of ``task`` takes by default: all of a prompts file's (up to the atlas's
    limit), else :data:`DEFAULT_PROMPTS`."""
    from atlas.schema import MAX_PROMPTS

    if task.endswith(".json") and Path(task).is_file():
        return max(1, min(len(read_prompt_file(Path(task))), MAX_PROMPTS))
    return DEFAULT_PROMPTS


def _say_first(path: Path, n_prompts: int, available: int) -> None:
    """A line on stderr when a run takes only part of a prompts file (never silently)."""
    if n_prompts < available:
        import sys

        print(f"atlas: note: using the first {n_prompts} of the {available} prompts in {path} (--prompts)", file=sys.stderr)


def get_task(name: str, metric: str = "logit") -> Task:
    """A task by name, or from a prompt file when ``name`` is a path to a ``.json`` file."""
    _metric(metric)
    if name in TASKS:
        return TASKS[name](metric_name=metric)
    if name.endswith(".json"):
        path = Path(name)
        if not path.exists():
            raise TaskError(f"prompt file {name} does not exist")
        return PromptFileTask(path, metric_name=metric)
    raise TaskError(f"unknown task {name!r}: choose one of {sorted(TASKS)} or give a prompts .json file")
