"""The statement guard (third wall of read-only queries), without a database."""

from __future__ import annotations

import pytest

from atlas.errors import ReadOnlyViolation
from atlas.guard import check_statement, strip_literals


@pytest.mark.parametrize(
    "cypher",
    [
        "create user evil set password 'x' change not required",
        "ALTER CURRENT USER SET PASSWORD FROM 'a' TO 'b'",
        "DROP USER root",
        "CREATE OR REPLACE ROLE r",
        "GRANT ROLE admin TO evil",
        "REVOKE ROLE admin FROM root",
    ],
)
def test_user_management_is_refused_in_any_mode(cypher: str) -> None:
    for write in (False, True):
        with pytest.raises(ReadOnlyViolation, match="management"):
            check_statement(cypher, write=write)


@pytest.mark.parametrize(
    "cypher",
    [
        "DROP INDEX attribution_run",
        "drop constraint run_id",
        "CREATE TEXT INDEX t IF NOT EXISTS FOR (n:Run) ON (n.task)",
        "CREATE CONSTRAINT c FOR (n:Model) REQUIRE n.name IS UNIQUE",
        "CALL { CREATE (:X) } IN TRANSACTIONS",
        "CALL { CREATE (:X) } IN TRANSACTIONS OF 10 ROWS",
        "CALL { CREATE (:X) } IN 4 CONCURRENT TRANSACTIONS",
        "MATCH (n) CALL { WITH n SET n.x = 1 }\nIN\nTRANSACTIONS",
        "LOAD CSV FROM 'file:///etc/passwd' AS row RETURN row",
        "load   csv with headers from 'http://127.0.0.1/' as r return r",
        "CREATE DATABASE other",
        "USING PERIODIC COMMIT LOAD CSV FROM 'f' AS r CREATE (:X)",
    ],
)
def test_out_of_transaction_statements_are_refused_when_reading(cypher: str) -> None:
    with pytest.raises(ReadOnlyViolation, match="--write"):
        check_statement(cypher, write=False)
    if "LOAD CSV" not in cypher.upper() or "PERIODIC" in cypher.upper():
        check_statement(cypher, write=True)  # the explicit way in


@pytest.mark.parametrize(
    "cypher",
    [
        "MATCH (r:Run) WHERE r.note = 'DROP INDEX x' RETURN r",
        'MATCH (r:Run) WHERE r.note = "CREATE USER evil" RETURN r',
        "MATCH (r:Run) RETURN r // DROP USER root",
        "MATCH (r:Run) /* CALL {} IN TRANSACTIONS */ RETURN r",
        "MATCH (`DROP INDEX`:Run) RETURN 1",
        "MATCH (n) WHERE n.layer IN [1, 2] RETURN n",
        "MATCH (n) WHERE n.kind IN $kinds RETURN n.transactions",
        "SHOW INDEXES",
        r"MATCH (r) WHERE r.x = 'it\'s DROP USER' RETURN r",
    ],
)
def test_keywords_in_values_comments_and_names_are_not_commands(cypher: str) -> None:
    check_statement(cypher, write=False)


def test_strip_literals_keeps_the_structure() -> None:
    assert strip_literals("MATCH (n {a: 'x // y'}) // c\nRETURN n") == "MATCH (N {A: ''})  \nRETURN N"
