"""The field's standard circuit tasks, built from the loaded model's own tokenizer.

Each task fills templates with words that are one token for this tokenizer (the rest are dropped,
and how many is said on stderr), refuses in one line when too few remain, draws its prompts from a
seed, and corrupts them the way its paper does:

- ``ioi`` (Wang et al. 2022, "Interpretability in the Wild"): "Then, Mary and John went to the store.
  John gave a drink to" -> " Mary". ABBA and BABA orders alternate; the corrupted prompt has three
  different, unrelated names in the three name slots (the paper's ABC distribution); metric: the
  indirect object's logit minus the subject's (``logit-diff``).
- ``greater-than`` (Hanna, Liu & Variengien 2023): "The war lasted from the year 1732 to the year 17"
  -> a year above 32; the corrupted start year is ``01`` (1701); metric ``prob-diff``: the probability
  of the two-digit tokens above YY minus those at or below it.
- ``docstring`` (Heimersheim & Janiak 2023): a Python function whose docstring documents its
  parameters in order; predict the next parameter's name. Corrupted: the ``def``'s parameter names
  replaced by random ones (the docstring keeps its own), so copying from the signature fails;
  metric: the right name's logit minus a documented one's.
- ``sva``: subject-verb agreement ("The author near the pilots" -> " is" / " are"); corrupted: the
  subject's number flipped; metric: the right verb form's logit minus the wrong one's.
- ``gender``: the gendered pronoun ("So Mary is a really great friend, isn't" -> " she"; Mathwin et
  al. 2023); corrupted: a name of the other gender; metric: the right pronoun's logit minus the other's.

Every prompt of a batch has one token length: templates are cut into literal segments tokenised once
and slots filled with single tokens, and a batch uses the templates of the most common length.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from atlas.errors import TaskError
from ingest.model.tasks import PromptBatch, _metric

__all__ = ["IOITask", "GreaterThanTask", "DocstringTask", "SVATask", "GenderTask", "STANDARD_TASKS", "single_tokens"]

NAMES = ("Michael", "Christopher", "Jessica", "Matthew", "Ashley", "Jennifer", "Joshua", "Amanda", "Daniel", "David", "James", "Robert",
         "John", "Joseph", "Andrew", "Ryan", "Brandon", "Jason", "Justin", "Sarah", "William", "Jonathan", "Stephanie", "Brian", "Nicole",
         "Nicholas", "Anthony", "Heather", "Eric", "Elizabeth", "Adam", "Megan", "Melissa", "Kevin", "Steven", "Thomas", "Timothy",
         "Christina", "Kyle", "Rachel", "Laura", "Lauren", "Amber", "Brittany", "Danielle", "Richard", "Kimberly", "Jeffrey", "Amy",
         "Crystal", "Michelle", "Tiffany", "Jeremy", "Benjamin", "Mark", "Emily", "Aaron", "Charles", "Rebecca", "Jacob", "Stephen",
         "Patrick", "Sean", "Erin", "Jamie", "Kelly", "Samantha", "Nathan", "Sara", "Dustin", "Paul", "Angela", "Tyler", "Scott",
         "Katherine", "Andrea", "Gregory", "Erica", "Mary", "Travis", "Lisa", "Kenneth", "Bryan", "Lindsey", "Kristen", "Jose",
         "Alexander", "Jesse", "Katie", "Lindsay", "Shannon", "Vanessa", "Courtney", "Christine", "Alicia", "Cody", "Allison",
         "Bradley", "Samuel")
MALE = ("Michael", "Christopher", "Matthew", "Joshua", "Daniel", "David", "James", "Robert", "John", "Joseph", "Andrew", "Ryan",
        "Brandon", "Jason", "Justin", "William", "Jonathan", "Brian", "Nicholas", "Anthony", "Eric", "Adam", "Kevin", "Steven", "Thomas",
        "Timothy", "Kyle", "Richard", "Jeffrey", "Jeremy", "Benjamin", "Mark", "Aaron", "Charles", "Jacob", "Stephen", "Patrick", "Sean",
        "Nathan", "Paul", "Tyler", "Scott", "Gregory", "Travis", "Kenneth", "Bryan", "Samuel", "George", "Peter", "Frank")
FEMALE = ("Jessica", "Ashley", "Jennifer", "Amanda", "Sarah", "Stephanie", "Nicole", "Heather", "Elizabeth", "Megan", "Melissa",
          "Christina", "Rachel", "Laura", "Lauren", "Amber", "Brittany", "Danielle", "Kimberly", "Amy", "Crystal", "Michelle",
          "Tiffany", "Emily", "Rebecca", "Erin", "Kelly", "Samantha", "Sara", "Angela", "Katherine", "Andrea", "Erica", "Mary", "Lisa",
          "Lindsey", "Kristen", "Katie", "Lindsay", "Shannon", "Vanessa", "Courtney", "Christine", "Alicia", "Allison", "Anna",
          "Emma", "Susan", "Karen", "Linda")
PLACES = ("store", "garden", "restaurant", "school", "hospital", "office", "house", "station", "park", "beach")
OBJECTS = ("ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack", "book", "ball")
IOI_TEMPLATES = (  # BABA form: [B] is the subject (named twice), [A] the indirect object; ABBA swaps the first two names
    "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to",
    "Then, [B] and [A] were thinking about going to the [PLACE]. [B] wanted to give a [OBJECT] to",
    "Then, [B] and [A] had a long argument, and afterwards [B] said to",
    "After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to",
    "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to",
    "While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to",
    "After the lunch, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a long argument. Afterwards [B] said to",
    "Friends [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to",
)
EVENTS = ("war", "conflict", "strike", "expedition", "siege", "reign", "campaign", "journey", "voyage", "dynasty", "treaty", "rivalry",
          "marriage", "plague", "project", "occupation", "tour", "trial", "revolution", "crisis")
GT_TEMPLATES = ("The [NOUN] lasted from the year [XX][YY] to the year [XX]",)
SVA_NOUNS = (("author", "authors"), ("pilot", "pilots"), ("surgeon", "surgeons"), ("farmer", "farmers"), ("manager", "managers"),
             ("customer", "customers"), ("officer", "officers"), ("teacher", "teachers"), ("senator", "senators"),
             ("doctor", "doctors"), ("student", "students"), ("dog", "dogs"), ("key", "keys"), ("book", "books"), ("car", "cars"),
             ("friend", "friends"), ("player", "players"), ("engineer", "engineers"), ("lawyer", "lawyers"), ("writer", "writers"))
SVA_TEMPLATES = ("The [N] near the [M]", "The [N] behind the [M]", "The [N] next to the [M]", "The [N] that the [M] likes")
GENDER_TEMPLATES = ("So [NAME] is a really great friend, isn't", "Then [NAME] said that", "When [NAME] came home,")
PARAM_NAMES = ("file", "size", "name", "path", "data", "value", "key", "mode", "line", "text", "user", "type", "index", "count", "color",
               "image", "model", "host", "port", "source", "target", "state", "token", "order", "limit", "width", "height", "query",
               "label", "config")
DOCSTRING_TEMPLATES = (
    'def load(self, [A], [B], [C]):\n    """Load the object.\n\n    :param [A]: the first input\n    :param [B]: the second input\n    :param',
    'def update(self, [A], [B], [C]):\n    """Update the state.\n\n    :param [A]: the first input\n    :param [B]: the second input\n    :param',
)


def single_tokens(tokenizer: Any, words: Sequence[str], what: str, task: str, need: int, space: bool = True) -> list[tuple[str, int]]:
    """The ``words`` that are one token for ``tokenizer`` (with a leading space unless ``space`` is False),
    as ``(word, id)``; says on stderr how many were dropped.

    Raises:
        TaskError: fewer than ``need`` remain.
    """
    kept = []
    for word in words:
        ids = tokenizer.encode((" " if space else "") + word, add_special_tokens=False)
        if len(ids) == 1:
            kept.append((word, int(ids[0])))
    if len(kept) < len(words):
        print(f"atlas: note: task {task}: {len(words) - len(kept)} of {len(words)} {what} are not one token for this tokenizer "
              f"and were dropped", file=sys.stderr)
    if len(kept) < need:
        raise TaskError(f"task {task} needs at least {need} {what} that are one token for this model's tokenizer; "
                        f"{len(kept)} of {len(words)} are")
    return kept


def _tokenizer(model: Any, task: str) -> Any:
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise TaskError(f"task {task} builds its prompts with the model's tokenizer; this model has none (zoo models and "
                        "config files: give a Hugging Face folder or a hub name, or a prompts .json file)")
    return tok


@dataclass
class _Template:
    """A template cut into literal segments (tokenised once) and slots (filled with single tokens)."""

    parts: list[tuple[str, Any]]  # ("text", ids) or ("slot", name)

    @property
    def length(self) -> int:
        return sum(len(v) if kind == "text" else 1 for kind, v in self.parts)

    def fill(self, slots: dict[str, int]) -> list[int]:
        out: list[int] = []
        for kind, v in self.parts:
            out.extend(v if kind == "text" else [slots[v]])
        return out

    def positions(self, slot: str) -> list[int]:
        """Where ``slot`` sits in a filled prompt."""
        at, out = 0, []
        for kind, v in self.parts:
            if kind == "slot" and v == slot:
                out.append(at)
            at += len(v) if kind == "text" else 1
        return out


def _cut(tokenizer: Any, template: str, slots: Sequence[str]) -> _Template:
    """``template`` with ``[SLOT]`` markers cut out; the space before a slot belongs to the slot's token."""
    import re

    pattern = "|".join(re.escape(f"[{s}]") for s in sorted(slots, key=len, reverse=True))
    parts: list[tuple[str, Any]] = []
    pos = 0
    for m in re.finditer(pattern, template):
        text = template[pos:m.start()]
        if text.endswith(" "):
            text = text[:-1]  # the slot's token carries its leading space
        if text:
            parts.append(("text", tokenizer.encode(text, add_special_tokens=False)))
        parts.append(("slot", m.group(0)[1:-1]))
        pos = m.end()
    if template[pos:]:
        parts.append(("text", tokenizer.encode(template[pos:], add_special_tokens=False)))
    return _Template(parts)


def _modal(templates: list[_Template]) -> list[_Template]:
    """The templates of the most common token length (a batch has one length)."""
    length = Counter(t.length for t in templates).most_common(1)[0][0]
    return [t for t in templates if t.length == length]


def _bos(tokenizer: Any) -> list[int]:
    bos = getattr(tokenizer, "bos_token_id", None)
    return [int(bos)] if bos is not None else []


def _batch(clean: list[list[int]], corrupted: list[list[int]], target: list[int], incorrect: list[int] | None,
           meta: dict[str, Any] | None = None) -> PromptBatch:
    """A batch scored at the last position: ``target`` (and ``incorrect``) per prompt."""
    c, x = torch.tensor(clean), torch.tensor(corrupted)
    targets = torch.zeros_like(c)
    targets[:, -1] = torch.tensor(target)
    mask = torch.zeros_like(c, dtype=torch.bool)
    mask[:, -1] = True
    wrong = None
    if incorrect is not None:
        wrong = torch.zeros_like(c)
        wrong[:, -1] = torch.tensor(incorrect)
    return PromptBatch(c, x, targets, mask, meta or {}, wrong)


class _PaperTask:
    """What every standard task shares: its paper's metric, computed by name (in float32 at least)."""

    metric_name: str

    def metric(self, logits: torch.Tensor, batch: PromptBatch) -> torch.Tensor:
        return _metric(self.metric_name)(logits, batch)


def _one(gen: torch.Generator, seq: Sequence[Any]) -> Any:
    """One item of ``seq`` drawn from ``gen``."""
    return seq[int(torch.randint(len(seq), (1,), generator=gen))]


@dataclass(frozen=True)
class IOITask(_PaperTask):
    """Indirect object identification (see module docstring)."""

    metric_name: str = "logit-diff"
    name: str = "ioi"
    description: str = "indirect object identification (Wang et al. 2022): ABBA/BABA templates, ABC corruption; metric: IO minus S logit"

    def make_batch(self, model: Any, n_prompts: int, seed: int) -> PromptBatch:
        tok = _tokenizer(model, self.name)
        names = single_tokens(tok, NAMES, "names", self.name, 5)
        places = single_tokens(tok, PLACES, "places", self.name, 1)
        objects = single_tokens(tok, OBJECTS, "objects", self.name, 1)
        templates = _modal([_cut(tok, t, ("A", "B", "PLACE", "OBJECT")) for t in IOI_TEMPLATES])
        gen = torch.Generator().manual_seed(seed)

        def pick(seq: Sequence[Any], k: int = 1) -> list[Any]:
            return [seq[int(i)] for i in torch.randperm(len(seq), generator=gen)[:k]]

        clean, corrupted, target, wrong = [], [], [], []
        for i in range(n_prompts):
            t = _one(gen, templates)
            (io, s), (place,), (obj,) = pick(names, 2), pick(places), pick(objects)
            first, second = (s, io) if i % 2 == 0 else (io, s)  # BABA, then ABBA
            slots = t.positions("B") + t.positions("A")
            ids = t.fill({"B": first[1], "A": second[1], "PLACE": place[1], "OBJECT": obj[1]})
            # the template's [B] repeats: its second mention is the subject again
            ids = _ioi_subject(t, ids, s[1])
            others = [n for n in names if n[1] not in (io[1], s[1])]
            abc = pick(others, 3)
            bad = list(ids)
            for p, (_, nid) in zip(sorted(slots), abc, strict=True):
                bad[p] = nid
            clean.append(_bos(tok) + ids)
            corrupted.append(_bos(tok) + bad)
            target.append(io[1])
            wrong.append(s[1])
        return _batch(clean, corrupted, target, wrong)


def _ioi_subject(t: _Template, ids: list[int], subject: int) -> list[int]:
    """The template's second ``[B]`` (the sentence's subject) holds the subject in both orders."""
    positions = t.positions("B")
    out = list(ids)
    out[positions[-1]] = subject
    return out


@dataclass(frozen=True)
class GreaterThanTask(_PaperTask):
    """Greater-than (see module docstring)."""

    metric_name: str = "prob-diff"
    century: int = 17
    name: str = "greater-than"
    description: str = "greater-than (Hanna et al. 2023): 'lasted from the year 17YY to the year 17'; metric: p(> YY) - p(<= YY)"

    def make_batch(self, model: Any, n_prompts: int, seed: int) -> PromptBatch:
        tok = _tokenizer(model, self.name)
        nouns = single_tokens(tok, EVENTS, "event nouns", self.name, 1)
        century = single_tokens(tok, [str(self.century)], "century", self.name, 1)[0][1]
        years = dict(single_tokens(tok, [f"{y:02d}" for y in range(100)], "two-digit years", self.name, 10, space=False))
        usable = [y for y in range(2, 99) if f"{y:02d}" in years]
        if "01" not in years or len(usable) < 2:
            raise TaskError(f"task {self.name} needs '01' and two-digit years as single tokens; this tokenizer has {len(years)} of 100")
        template = _cut(tok, GT_TEMPLATES[0], ("NOUN", "XX", "YY"))
        gen = torch.Generator().manual_seed(seed)
        ids_by_year = torch.tensor([years.get(f"{y:02d}", -1) for y in range(100)])
        vocab = int(model.cfg.d_vocab_out)
        good = torch.zeros(n_prompts, vocab, dtype=torch.bool)
        bad = torch.zeros(n_prompts, vocab, dtype=torch.bool)
        clean, corrupted, target = [], [], []
        for i in range(n_prompts):
            noun = _one(gen, nouns)[1]
            yy = _one(gen, usable)
            ids = template.fill({"NOUN": noun, "XX": century, "YY": years[f"{yy:02d}"]})
            clean.append(_bos(tok) + ids)
            corrupted.append(_bos(tok) + template.fill({"NOUN": noun, "XX": century, "YY": years["01"]}))  # the paper's 1701
            above, upto = ids_by_year[yy + 1:], ids_by_year[: yy + 1]
            good[i, above[above >= 0]] = True
            bad[i, upto[upto >= 0]] = True
            target.append(int(ids_by_year[usable[-1]]))  # a year above (the metric reads the whole set)
        return _batch(clean, corrupted, target, None, {"good": good, "bad": bad})


@dataclass(frozen=True)
class DocstringTask(_PaperTask):
    """Docstring parameter completion (see module docstring)."""

    metric_name: str = "logit-diff"
    name: str = "docstring"
    description: str = "docstring (Heimersheim & Janiak 2023): the next documented parameter; corrupted: random def arguments"

    def make_batch(self, model: Any, n_prompts: int, seed: int) -> PromptBatch:
        tok = _tokenizer(model, self.name)
        params = single_tokens(tok, PARAM_NAMES, "parameter names", self.name, 6)
        templates = _modal([_cut(tok, t, ("A", "B", "C")) for t in DOCSTRING_TEMPLATES])
        gen = torch.Generator().manual_seed(seed)
        clean, corrupted, target, wrong = [], [], [], []
        for _ in range(n_prompts):
            t = _one(gen, templates)
            order = torch.randperm(len(params), generator=gen).tolist()
            a, b, c, ra, rb, rc = (params[j][1] for j in order[:6])
            ids = t.fill({"A": a, "B": b, "C": c})
            bad = list(ids)
            for slot, new in (("A", ra), ("B", rb), ("C", rc)):
                first = t.positions(slot)[0]  # the def's mention; the docstring keeps its own
                bad[first] = new
            clean.append(_bos(tok) + ids)
            corrupted.append(_bos(tok) + bad)
            target.append(c)
            wrong.append(b)
        return _batch(clean, corrupted, target, wrong)


@dataclass(frozen=True)
class SVATask(_PaperTask):
    """Subject-verb agreement (see module docstring)."""

    metric_name: str = "logit-diff"
    name: str = "sva"
    description: str = "subject-verb agreement: ' is' after a singular subject, ' are' after a plural one; corrupted: the number flipped"

    def make_batch(self, model: Any, n_prompts: int, seed: int) -> PromptBatch:
        tok = _tokenizer(model, self.name)
        singular = dict(single_tokens(tok, [s for s, _ in SVA_NOUNS], "singular nouns", self.name, 2))
        plural = dict(single_tokens(tok, [p for _, p in SVA_NOUNS], "plural nouns", self.name, 2))
        pairs = [(singular[s], plural[p]) for s, p in SVA_NOUNS if s in singular and p in plural]
        verbs = dict(single_tokens(tok, ["is", "are"], "verb forms", self.name, 2))
        if len(pairs) < 2:
            raise TaskError(f"task {self.name} needs at least 2 nouns whose singular and plural are both one token; {len(pairs)} are")
        templates = _modal([_cut(tok, t, ("N", "M")) for t in SVA_TEMPLATES])
        gen = torch.Generator().manual_seed(seed)
        clean, corrupted, target, wrong = [], [], [], []
        for i in range(n_prompts):
            t = _one(gen, templates)
            order = torch.randperm(len(pairs), generator=gen).tolist()
            subj, attractor = pairs[order[0]], pairs[order[1]]
            plural_subject = i % 2 == 1
            attr = attractor[int(torch.randint(2, (1,), generator=gen))]
            n_clean, n_bad = (subj[1], subj[0]) if plural_subject else (subj[0], subj[1])
            clean.append(_bos(tok) + t.fill({"N": n_clean, "M": attr}))
            corrupted.append(_bos(tok) + t.fill({"N": n_bad, "M": attr}))
            right, other = (verbs["are"], verbs["is"]) if plural_subject else (verbs["is"], verbs["are"])
            target.append(right)
            wrong.append(other)
        return _batch(clean, corrupted, target, wrong)


@dataclass(frozen=True)
class GenderTask(_PaperTask):
    """Gendered pronoun (see module docstring)."""

    metric_name: str = "logit-diff"
    name: str = "gender"
    description: str = "gendered pronoun (Mathwin et al. 2023): ' he' / ' she' after a name; corrupted: a name of the other gender"
    templates: tuple[str, ...] = field(default=GENDER_TEMPLATES)

    def make_batch(self, model: Any, n_prompts: int, seed: int) -> PromptBatch:
        tok = _tokenizer(model, self.name)
        male = single_tokens(tok, MALE, "male names", self.name, 2)
        female = single_tokens(tok, FEMALE, "female names", self.name, 2)
        pronouns = dict(single_tokens(tok, ["he", "she"], "pronouns", self.name, 2))
        templates = _modal([_cut(tok, t, ("NAME",)) for t in self.templates])
        gen = torch.Generator().manual_seed(seed)
        clean, corrupted, target, wrong = [], [], [], []
        for i in range(n_prompts):
            t = _one(gen, templates)
            is_male = i % 2 == 0
            own, other = (male, female) if is_male else (female, male)
            name = _one(gen, own)[1]
            swap = _one(gen, other)[1]
            clean.append(_bos(tok) + t.fill({"NAME": name}))
            corrupted.append(_bos(tok) + t.fill({"NAME": swap}))
            right, wrong_one = (pronouns["he"], pronouns["she"]) if is_male else (pronouns["she"], pronouns["he"])
            target.append(right)
            wrong.append(wrong_one)
        return _batch(clean, corrupted, target, wrong)


STANDARD_TASKS = {"ioi": IOITask, "greater-than": GreaterThanTask, "docstring": DocstringTask, "sva": SVATask, "gender": GenderTask}
"""The tasks whose prompts come from the model's tokenizer, by name; each names its paper's metric."""
