"""Component criteria: select components by kind, layer, head or id pattern (neuPrint's NeuronCriteria).

A criteria object matches node attributes in Python and builds a Cypher fragment with parameters;
it never sends anything itself.

Example:
    >>> c = ComponentCriteria(kind="Head", layer=1)
    >>> c.matches({"kind": "Head", "layer": 1, "componentId": "m/L1.H0"})
    True
    >>> ComponentCriteria.parse("L1.H*").matches({"componentId": "m/L1.H3", "kind": "Head", "layer": 1})
    True
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from atlas.errors import ValidationError
from atlas.ids import POSITION_SEP, local_id, split_position

__all__ = ["ComponentCriteria"]

_KINDS = {"embed": "Embed", "head": "Head", "mlp": "Mlp", "neuron": "Neuron", "feature": "Feature", "error": "Error", "logit": "Logit", "logits": "Logit"}


@dataclass(frozen=True)
class ComponentCriteria:
    """Which components: all given fields must match (None = any).

    Attributes:
        kind: Label (``Head``, ``Mlp``, ``Embed``, ``Logit``, ...; case-insensitive).
        layer: Layer index or indices.
        head: Head index or indices.
        pattern: Glob over the local id (after the model id), e.g. ``L1.H*`` or ``*.MLP``; in
            position-resolved graphs ``L1.H0:7`` is the head at position 7 (a pattern without a
            position matches every position).
    """

    kind: str | None = None
    layer: int | tuple[int, ...] | None = None
    head: int | tuple[int, ...] | None = None
    pattern: str | None = None

    def __post_init__(self) -> None:
        if self.kind is not None:
            label = _KINDS.get(self.kind.lower())
            if label is None:
                raise ValidationError(f"unknown component kind {self.kind!r}: choose one of {sorted(set(_KINDS.values()))}")
            object.__setattr__(self, "kind", label)

    @classmethod
    def parse(cls, text: str) -> ComponentCriteria:
        """From CLI text: a kind (``Head``), ``layer=1``, ``kind=Head,layer=1`` or an id glob (``L1.H*``)."""
        text = text.strip()
        if not text:
            raise ValidationError("empty component criteria")
        if "=" not in text:
            if text.lower() in _KINDS:
                return cls(kind=text)
            return cls(pattern=text)
        fields: dict[str, Any] = {}
        for part in text.split(","):
            key, _, value = part.partition("=")
            key = key.strip()
            if key not in ("kind", "layer", "head", "pattern"):
                raise ValidationError(f"unknown criteria field {key!r}: use kind, layer, head or pattern")
            if key in ("layer", "head"):
                try:
                    nums = tuple(int(v) for v in value.split("|"))
                except ValueError:
                    raise ValidationError(f"criteria {key} must be an integer (or a|b), got {value!r}") from None
                fields[key] = nums[0] if len(nums) == 1 else nums
            else:
                fields[key] = value.strip()
        return cls(**fields)

    @staticmethod
    def _in(value: Any, want: int | tuple[int, ...] | None) -> bool:
        if want is None:
            return True
        if value is None:
            return False
        return int(value) in (want if isinstance(want, tuple) else (want,))

    def matches(self, node: dict[str, Any]) -> bool:
        """Whether a node (``componentId`` plus ``kind``/``layer``/``head`` attributes) matches."""
        if self.kind is not None and node.get("kind") != self.kind:
            return False
        if not self._in(node.get("layer"), self.layer) or not self._in(node.get("head"), self.head):
            return False
        if self.pattern is not None:
            local = local_id(str(node.get("componentId", "")))
            if POSITION_SEP not in self.pattern:  # a pattern without a position matches its component at any position
                local = split_position(local)[0]
            return fnmatch.fnmatchcase(local, self.pattern)
        return True

    def select(self, nodes: Iterable[tuple[str, dict[str, Any]]]) -> list[str]:
        """Ids of the matching (id, attributes) pairs."""
        return [n for n, attrs in nodes if self.matches({"componentId": n, **attrs})]

    def cypher(self, var: str, prefix: str = "c") -> tuple[str, dict[str, Any]]:
        """A WHERE fragment over node variable ``var`` and its parameters (values never inlined)."""
        parts: list[str] = []
        params: dict[str, Any] = {}
        if self.kind is not None:
            parts.append(f"${prefix}Kind IN labels({var})")
            params[f"{prefix}Kind"] = self.kind
        for name in ("layer", "head"):
            want = getattr(self, name)
            if want is not None:
                parts.append(f"{var}.{name} IN ${prefix}{name.title()}")
                params[f"{prefix}{name.title()}"] = list(want) if isinstance(want, tuple) else [want]
        if self.pattern is not None:
            regex = fnmatch.translate(self.pattern).replace("\\Z", "$").replace("(?s:", "(?:")
            parts.append(f"{var}.componentId =~ ${prefix}Pattern")
            params[f"{prefix}Pattern"] = ".*/" + regex.rstrip("$") + "$" if not regex.startswith(".*/") else regex
        return (" AND ".join(parts) or "true"), params
