"""The Cypher cookbook: statements to copy, kept in ``queries/cookbook.md`` (shipped with the package,
shown as the docs' cookbook page, offered one click away in the explorer's query console and run
against the embedded database by the tests)."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["cookbook", "COOKBOOK"]

COOKBOOK = Path(__file__).with_name("cookbook.md")


@cache
def cookbook() -> list[tuple[str, str, dict[str, Any]]]:
    """(title, statement, example parameters) of every cookbook entry, in order."""
    text = COOKBOOK.read_text()
    section = text.split("<!-- cookbook:start -->", 1)[1].split("<!-- cookbook:end -->", 1)[0]
    out = []
    for block in re.findall(r"```cypher\n(.*?)```", section, re.DOTALL):
        first, _, body = block.partition("\n")
        title, _, params = first.removeprefix("// ").partition(" | ")
        out.append((title.strip(), body.strip(), json.loads(params)))
    return out
