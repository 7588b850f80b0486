from __future__ import annotations

import math

import pandas as pd
import pytest

from atlas.errors import ValidationError
from atlas.frames import validate_edges, validate_nodes


def good() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "componentId_pre": ["m/EMBED", "m/L0.H0", "m/L0.H0", "m/L1.MLP"],
            "componentId_post": ["m/L0.H0", "m/L1.H1", "m/L1.MLP", "m/LOGITS"],
            "channel": ["q", "k", "in", "in"],
            "score": [0.5, -1.0, 0.25, 2.0],
        }
    )


def test_accepts_good_frame() -> None:
    out = validate_edges(good())
    assert list(out.columns) == ["componentId_pre", "componentId_post", "channel", "score"]
    assert out["score"].dtype == float


def _set(col: str, row: int, value: object):
    def f(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        df[col] = df[col].astype(object)
        df.at[row, col] = value
        return df

    return f


CORRUPTIONS = {
    "missing column": lambda df: df.drop(columns=["channel"]),
    "null score": _set("score", 0, None),
    "nan score": _set("score", 1, math.nan),
    "inf score": _set("score", 1, math.inf),
    "text score": _set("score", 2, "high"),
    "bad channel": _set("channel", 0, "x"),
    "bad id": _set("componentId_pre", 0, "m/L0.Q1"),
    "mixed models": _set("componentId_post", 0, "other/L0.H0"),
    "q into mlp": _set("channel", 2, "q"),
    "in into head": _set("channel", 1, "in"),
    "into embed": lambda df: pd.concat([df, pd.DataFrame([{"componentId_pre": "m/L0.H0", "componentId_post": "m/EMBED", "channel": "in", "score": 1.0}])], ignore_index=True),
    "out of logits": lambda df: pd.concat([df, pd.DataFrame([{"componentId_pre": "m/LOGITS", "componentId_post": "m/L1.MLP", "channel": "in", "score": 1.0}])], ignore_index=True),
    "self loop": lambda df: pd.concat([df, pd.DataFrame([{"componentId_pre": "m/L1.MLP", "componentId_post": "m/L1.MLP", "channel": "in", "score": 1.0}])], ignore_index=True),
    "duplicate": lambda df: pd.concat([df, df.iloc[[0]]], ignore_index=True),
    "negative position": lambda df: df.assign(srcPos=[0, 1, -1, 3]),
    "not a frame": lambda df: df.to_dict("records"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_rejects_each_corruption(name: str) -> None:
    with pytest.raises(ValidationError) as err:
        validate_edges(CORRUPTIONS[name](good()))
    assert "\n" not in str(err.value)


def test_error_names_column_and_rows() -> None:
    with pytest.raises(ValidationError, match="'channel'.*'x'"):
        validate_edges(_set("channel", 0, "x")(good()))


def test_positions_make_edges_distinct() -> None:
    df = pd.concat([good(), good()], ignore_index=True)
    df["srcPos"] = [0] * 4 + [1] * 4
    df["dstPos"] = [2] * 8
    assert len(validate_edges(df)) == 8


def test_nodes_must_agree_with_ids() -> None:
    nodes = pd.DataFrame([{"componentId": "m/L0.H1", "kind": "head", "modelId": "m", "layer": 0, "head": 1}])
    assert len(validate_nodes(nodes)) == 1
    with pytest.raises(ValidationError):
        validate_nodes(nodes.assign(head=2))
    with pytest.raises(ValidationError):
        validate_nodes(nodes.assign(kind="mlp"))


def test_unit_indices_stay_integers_beside_other_kinds() -> None:
    """A node frame of heads and neurons has NaN in ``neuron`` on the heads, which makes pandas store
    the column as float: the validated frame gives the neuron its integer index back (stored as 7,
    not 7.0), and an index that disagrees with the id is refused."""
    nodes = pd.DataFrame([
        {"componentId": "m/L0.H1", "kind": "head", "modelId": "m", "layer": 0, "head": 1},
        {"componentId": "m/L0.N7", "kind": "neuron", "modelId": "m", "layer": 0, "head": None, "neuron": 7},
    ])
    assert nodes["neuron"].dtype == "float64"
    out = validate_nodes(nodes)
    assert str(out["neuron"].dtype) == "Int64"
    records = out.to_dict("records")
    assert records[1]["neuron"] == 7 and type(records[1]["neuron"]) is not float
    assert pd.isna(records[0]["neuron"])
    with pytest.raises(ValidationError):
        validate_nodes(nodes.assign(neuron=[None, 8]))


@pytest.mark.parametrize("top", [None, 1, 7, 40, 200])
def test_strongest_rows_equal_a_full_stable_sort(top: int | None) -> None:
    """fetch_edges cuts a run's top edges on the codes: partition, then a stable sort of what is at
    or above the cut; with many ties (scores on a grid of 10 values) it gives what a stable sort of
    every candidate gives."""
    import numpy as np

    from atlas.frames import strongest_first

    rng = np.random.default_rng(0)
    strength = np.abs(rng.integers(-5, 5, size=120)).astype(float)
    candidates = np.flatnonzero(rng.random(120) < 0.6)
    want = candidates[np.argsort(-strength[candidates], kind="stable")]
    got = strongest_first(strength, candidates, top)
    assert got.tolist() == (want if top is None else want[:top]).tolist()
