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


def test_integer_keyed_comparison_equals_string_keyed_reference() -> None:
    """The comparison keys edges by integer codes; on random runs (renamed ends, repeated rows,
    edges on one side only, categorical columns, tied scores) it gives what keying by strings and
    scipy's Spearman give."""
    import numpy as np
    from scipy.stats import spearmanr

    rng = np.random.default_rng(5)
    comps = ["EMBED", "LOGITS"] + [f"L{l}.H{h}" for l in range(3) for h in range(4)]

    def run(model: str, n: int) -> pd.DataFrame:
        rows = [(comps[i], comps[j], str(rng.choice(["q", "k", "v", "in"])), float(rng.normal()))
                for i, j in rng.integers(0, len(comps), size=(n, 2))]
        return edges(model, rows)

    a, b = run("ma", 300), run("mb", 260)
    rename = {f"ma/{c}": d for c, d in zip(comps, comps[1:] + comps[:1])}  # a shifted alignment
    a_cat = a.astype({"componentId_pre": "category", "componentId_post": "category", "channel": "category"})

    def keyed(e: pd.DataFrame, ren: dict[str, str] | None) -> pd.Series:
        local = (lambda c: ren[c]) if ren else (lambda c: c.split("/", 1)[1])
        keys = e["componentId_pre"].map(local) + " -> " + e["componentId_post"].map(local) + " [" + e["channel"] + "]"
        return pd.Series(e["score"].to_numpy(), index=keys).groupby(level=0).sum()

    sa, sb = keyed(a, rename), keyed(b, None)
    shared = sa.index.intersection(sb.index)
    top_a, top_b = set(sa.abs().nlargest(20).index), set(sb.abs().nlargest(20).index)
    union = sorted(top_a | top_b)
    va, vb = sa.reindex(union).fillna(0).abs(), sb.reindex(union).fillna(0).abs()
    for frame_a in (a, a_cat):
        figures, changes = compare_edges(frame_a, b, top=20, rename_a=rename)
        assert (figures["nEdgesA"], figures["nEdgesB"], figures["nShared"]) == (len(sa), len(sb), len(shared))
        assert figures["spearman"] == pytest.approx(spearmanr(sa[shared], sb[shared])[0])
        assert figures["weightedJaccard"] == pytest.approx(np.minimum(va, vb).sum() / np.maximum(va, vb).sum())
        assert figures["gained"] == sorted(top_b - top_a) and figures["lost"] == sorted(top_a - top_b)
        want = pd.DataFrame({"scoreA": sa, "scoreB": sb})
        got = changes.set_index("edge").sort_index()
        assert list(got.index) == sorted(want.index) and len(changes) == len(want)
        assert np.allclose(got["scoreA"], want["scoreA"].sort_index(), equal_nan=True)
        assert np.allclose(got["scoreB"], want["scoreB"].sort_index(), equal_nan=True)
        assert (changes["delta"].abs().diff().dropna() <= 0).all()  # largest change first
        assert set(changes.loc[changes["status"] == "gained", "edge"]) == top_b - top_a
        for k in (1, 7, 10_000):  # only the largest k changes: the head of the whole list, same figures
            few_figures, few = compare_edges(frame_a, b, top=20, rename_a=rename, changes=k)
            pd.testing.assert_frame_equal(few, changes.head(k))
            assert few_figures == figures
    from atlas.stats import spearman as _spearman

    tied_x = rng.integers(0, 5, 60).astype(float)
    tied_y = tied_x + rng.integers(0, 3, 60)
    assert _spearman(tied_x, tied_y) == pytest.approx(spearmanr(tied_x, tied_y)[0])
    assert math.isnan(_spearman(np.ones(5), np.arange(5.0)))  # constant input: undefined, as in scipy
