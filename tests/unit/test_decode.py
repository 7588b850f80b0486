"""Population decoding against answers known by construction: ``induction-2l``'s L0.H0 is a
previous-token head by hand-set weights, so the previous token is decodable from its output and not
from the embedding stream it reads; positions are in the embedding stream by its learned W_pos."""

from __future__ import annotations

from pathlib import Path

import pytest

from atlas.errors import ValidationError
from ingest.model.graph import build_graph
from ingest.model.loading import load_model
from ingest.model.tasks import get_task
from ingest.toolbox.decode import decode_layer, property_name


@pytest.fixture(scope="module")
def induction() -> tuple[object, object, object]:
    model = load_model("induction-2l", Path("/nonexistent-atlas-home")).model
    return model, build_graph(model, "ind"), get_task("induction").make_batch(model, 16, 0)


def test_the_previous_token_is_read_from_the_previous_token_head(induction: tuple[object, object, object]) -> None:
    model, graph, batch = induction
    frame = decode_layer(model, graph, batch, 0, "prev-token").set_index("source")
    head = frame.loc["ind/L0.H0"]
    assert head["accuracy"] > 0.6 and head["null"] < 0.1 and head["majority"] < 0.1
    others = frame.loc[["ind/L0.H1", "ind/L0.H2", "ind/L0.H3"], "accuracy"]
    assert (others < head["accuracy"] - 0.3).all()
    assert frame.loc["resid_pre", "accuracy"] < 0.1  # the embedding stream holds the current token, not the previous one
    assert frame.loc["resid_post", "accuracy"] > 0.3  # ... until L0.H0 has written it
    assert (frame["n"] == 16 * 23).all()  # every position but the first


def test_position_is_in_the_embedding_stream(induction: tuple[object, object, object]) -> None:
    model, graph, batch = induction
    frame = decode_layer(model, graph, batch, 0, "position", shuffles=1).set_index("source")
    assert frame.loc["resid_pre", "accuracy"] > 0.9 and frame.loc["resid_pre", "null"] < 0.15


def test_bad_requests(induction: tuple[object, object, object]) -> None:
    model, graph, batch = induction
    with pytest.raises(ValidationError, match="unknown variable"):
        decode_layer(model, graph, batch, 0, "colour")
    with pytest.raises(ValidationError, match="outside the model's 2 layers"):
        decode_layer(model, graph, batch, 2, "token")
    with pytest.raises(ValidationError, match="unknown decoder"):
        decode_layer(model, graph, batch, 0, "token", decoder="svm")
    few = get_task("induction").make_batch(model, 3, 0)
    with pytest.raises(ValidationError, match="needs at least 5 prompts"):
        decode_layer(model, graph, few, 0, "token")
    assert property_name("prev-token") == "decodePrevToken" and property_name("answer") == "decodeAnswer"
