from __future__ import annotations

import math

import pandas as pd
import pytest

from queries.compare import align_components, compare_edges


def edges(model: str, rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame([(f"{model}/{a}", f"{model}/{b}", c, s) for a, b, c, s in rows],
                        columns=["componentId_pre", "componentId_post", "channel", "score"])


A = edges("m/step-1", [("EMBED", "L0.H0", "q", 3.0), ("EMBED", "L0.H1", "k", 2.0), ("L0.H0", "LOGITS", "in", 1.0)])
B = edges("m/step-2", [("EMBED", "L0.H0", "q", 3.0), ("EMBED", "L0.H1", "k", 1.0), ("L0.H1", "LOGITS", "in", -2.0)])


def test_a_run_equals_itself() -> None:
    figures, changes = compare_edges(A, A.assign(componentId_pre=A.componentId_pre.str.replace("step-1", "step-9"),
                                                  componentId_post=A.componentId_post.str.replace("step-1", "step-9")))
    assert figures["spearman"] == pytest.approx(1.0) and figures["weightedJaccard"] == 1.0
    assert figures["gained"] == [] and figures["lost"] == [] and figures["nShared"] == 3
    assert (changes["delta"] == 0).all()


def test_hand_computed_jaccard_and_turnover() -> None:
    figures, changes = compare_edges(A, B, top=2)
    # top2(A) = {EMBED->L0.H0 [q], EMBED->L0.H1 [k]}; top2(B) = {EMBED->L0.H0 [q], L0.H1->LOGITS [in]}
    # union: min = 3 + min(2, 1) + min(0, 2) = 4; max = 3 + 2 + 2 = 7
    assert figures["weightedJaccard"] == pytest.approx(4 / 7)
    assert figures["gained"] == ["L0.H1 -> LOGITS [in]"] and figures["lost"] == ["EMBED -> L0.H1 [k]"]
    assert figures["nShared"] == 2 and math.isnan(figures["spearman"])  # two shared points: no rank correlation
    top_change = changes.iloc[0]
    assert top_change["edge"] == "L0.H1 -> LOGITS [in]" and top_change["delta"] == -2.0


def test_alignment_by_depth_and_roles() -> None:
    a = pd.DataFrame([
        {"componentId": "x/L0.H0", "kind": "Head", "layer": 0, "prevTokenScore": 0.95, "inductionScore": 0.0},
        {"componentId": "x/L0.H1", "kind": "Head", "layer": 0, "prevTokenScore": 0.10, "inductionScore": 0.0},
        {"componentId": "x/L1.H0", "kind": "Head", "layer": 1, "prevTokenScore": 0.10, "inductionScore": 0.90},
        {"componentId": "x/EMBED", "kind": "Embed", "layer": -1},
    ])
    b = pd.DataFrame([
        {"componentId": "y/L0.H0", "kind": "Head", "layer": 0, "prevTokenScore": 0.05, "inductionScore": 0.0},
        {"componentId": "y/L0.H3", "kind": "Head", "layer": 0, "prevTokenScore": 0.99, "inductionScore": 0.0},
        {"componentId": "y/L2.H1", "kind": "Head", "layer": 2, "prevTokenScore": 0.10, "inductionScore": 0.85},
        {"componentId": "y/L1.H1", "kind": "Head", "layer": 1, "prevTokenScore": 0.20, "inductionScore": 0.05},
        {"componentId": "y/EMBED", "kind": "Embed", "layer": -1},
    ])
    pairs = dict(zip(align_components(a, b)["componentId_a"], align_components(a, b)["componentId_b"]))
    assert pairs == {"x/L0.H0": "y/L0.H3", "x/L0.H1": "y/L0.H0", "x/L1.H0": "y/L2.H1", "x/EMBED": "y/EMBED"}
