"""The third wall of read-only queries: statements refused before they reach the server.

``atlas query`` without ``--write`` is read-only by three walls, each enough on its own for the
cases it covers:

1. the server: the embedded database is queried as a user whose group may only read records
   (Neo4j enforces the session's READ access mode);
2. the transaction: a read is rolled back and refused if the server reports that it wrote;
3. this module: statements whose effect does not live in a transaction (user and privilege
   management, schema and database administration, ``CALL {...} IN TRANSACTIONS``, which commits
   on its own) or that reach outside the graph (``LOAD CSV``) are refused before sending.

User and privilege management is refused even with ``--write``: the atlas never manages users
(dropping its own root user would lock every later command out).

The check reads the statement with string literals, quoted identifiers and comments blanked out,
so a keyword inside a value (``WHERE c.note = 'DROP INDEX'``) is not mistaken for a command.
"""

from __future__ import annotations

import re

from atlas.errors import ReadOnlyViolation

__all__ = ["check_statement", "check_user_statement", "strip_literals"]

_LEXEME = re.compile(
    r"""'(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"?|`(?:[^`]|``)*`?|//[^\n]*|/\*.*?(?:\*/|\Z)""",
    re.DOTALL,
)

_ALWAYS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(CREATE|ALTER|DROP|RENAME)\s+(OR\s+REPLACE\s+)?(CURRENT\s+)?(USER|ROLE)\b"), "user management"),
    (re.compile(r"\b(GRANT|REVOKE|DENY)\b"), "privilege management"),
)
_READ_ONLY: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"\b(CREATE|DROP|ALTER)\s+(OR\s+REPLACE\s+)?((RANGE|TEXT|POINT|LOOKUP|FULLTEXT|VECTOR|BTREE)\s+)?(INDEX|CONSTRAINT)\b"),
        "a schema command",
    ),
    (re.compile(r"\b(CREATE|DROP|ALTER|START|STOP)\s+(OR\s+REPLACE\s+)?(COMPOSITE\s+)?(DATABASE|ALIAS|SERVER)\b"), "database administration"),
    (re.compile(r"\bIN\b(\s+\S+)?(\s+CONCURRENT)?\s+TRANSACTIONS\b"), "CALL {...} IN TRANSACTIONS (it commits on its own)"),
    (re.compile(r"\bPERIODIC\s+COMMIT\b"), "PERIODIC COMMIT (it commits on its own)"),
    (re.compile(r"\bLOAD\s+CSV\b"), "LOAD CSV (it reads files and URLs)"),
)


def strip_literals(cypher: str) -> str:
    """``cypher`` upper-cased with string literals and quoted identifiers emptied and comments removed."""

    def blank(m: re.Match[str]) -> str:
        text = m.group(0)
        return " " if text.startswith("/") else text[0] * 2

    return _LEXEME.sub(blank, cypher).upper()


def check_statement(cypher: str, *, write: bool) -> None:
    """Refuse a statement the atlas never sends for a user (any mode) or that a read must not contain.

    Raises:
        ReadOnlyViolation: with one line naming what was found and, for reads, how to allow writes.
    """
    text = strip_literals(cypher)
    for pattern, what in _ALWAYS:
        if pattern.search(text):
            raise ReadOnlyViolation(f"refused: {what} is not done through the atlas; use the database's own tools")
    if write:
        return
    for pattern, what in _READ_ONLY:
        if pattern.search(text):
            raise ReadOnlyViolation(f"refused before sending: {what} is not allowed in a read-only query; pass --write (write=True) to allow writes")


_SCHEMA = re.compile(r"\b(CREATE|DROP|ALTER)\s+(OR\s+REPLACE\s+)?((RANGE|TEXT|POINT|LOOKUP|FULLTEXT|VECTOR|BTREE)\s+)?(INDEX|CONSTRAINT)\b")
_AUTOCOMMIT = (re.compile(r"\bIN\b(\s+\S+)?(\s+CONCURRENT)?\s+TRANSACTIONS\b"), re.compile(r"\bPERIODIC\s+COMMIT\b"))
_COMMENTS = re.compile(r"//[^\n]*|/\*.*?(?:\*/|\Z)", re.DOTALL)


def check_user_statement(cypher: str, *, write: bool, allow_schema: bool = False) -> None:
    """The walls of :func:`check_statement`, and for a user's ``--write`` two more:

    - the atlas's own schema (its unique constraints and relationship indexes, by name, or any index
      or constraint command on a property they key) is never changed through the atlas: dropping
      one would break its guarantees (one writer per run, one component per id, query speed);
    - any other schema command and ``CALL {...} IN TRANSACTIONS`` / ``PERIODIC COMMIT`` (which commit
      outside the statement's transaction) need ``allow_schema`` (``atlas query --write --allow-schema``).

    Raises:
        ReadOnlyViolation: one line naming what was refused and, where a flag allows it, which.
    """
    from atlas.schema import CONSTRAINTS, INDEXES

    check_statement(cypher, write=write)
    if not write:
        return
    text = strip_literals(cypher)
    if _SCHEMA.search(text):
        # names may be quoted: read them from the statement with only its comments removed
        raw = _COMMENTS.sub(" ", cypher).upper().replace("`", " ")
        words = set(re.findall(r"[A-Z0-9_]+", raw))
        own = {name.upper() for name, *_ in (*CONSTRAINTS, *INDEXES)}
        keyed = {prop.upper() for *_, prop in (*CONSTRAINTS, *INDEXES)}
        if words & own or (not text.lstrip().startswith("DROP") and words & keyed and "FOR" in words):
            raise ReadOnlyViolation("refused: the atlas's own constraints and indexes are not changed through the atlas "
                                    f"({', '.join(sorted(n for n, *_ in (*CONSTRAINTS, *INDEXES)))}: its guarantees rest on them)")
        if not allow_schema:
            raise ReadOnlyViolation("refused: a schema command changes the database outside the statement's transaction; "
                                    "pass --allow-schema with --write to run it")
    if not allow_schema and any(p.search(text) for p in _AUTOCOMMIT):
        raise ReadOnlyViolation("refused: CALL {...} IN TRANSACTIONS commits on its own, outside the statement's transaction; "
                                "pass --allow-schema with --write to run it")
