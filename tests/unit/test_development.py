"""Critical periods on synthetic trajectories whose answer is set by construction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atlas.errors import ValidationError
from queries.development import analyse_development, change_point, gini, share_for_mass

STEPS = [0, 10, 20, 30, 40, 50]


def frames(strong_from: dict[str, int], noise: int = 40) -> list[pd.DataFrame]:
    """One edge frame per step: ``noise`` weak edges (|score| <= 0.1) plus named edges that jump to
    1.0 at their step and stay there."""
    rng = np.random.default_rng(0)
    out = []
    for step in STEPS:
        rows = [{"componentId_pre": f"N{i}", "componentId_post": "LOGITS", "channel": "in", "score": float(rng.uniform(-0.1, 0.1))}
                for i in range(noise)]
        rows += [{"componentId_pre": name, "componentId_post": "L1.H0", "channel": "k",
                  "score": 1.0 if step >= at else float(rng.uniform(-0.05, 0.05))} for name, at in strong_from.items()]
        out.append(pd.DataFrame(rows))
    return out


@pytest.mark.parametrize("formed,loss,verdict", [
    ({"A": 10, "B": 20, "C": 20}, [5, 5, 5, 5, 1, 1], "precedes"),      # edges by 20, loss drops between 30 and 40
    ({"A": 30, "B": 40, "C": 40}, [5, 5, 5, 5, 1, 1], "coincides"),     # formation (median 40) inside the jump's interval
    ({"A": 50, "B": 50, "C": 50}, [5, 5, 1, 1, 1, 1], "follows"),       # loss drops 10->20, edges only at 50
])
def test_formation_against_the_behavioural_jump(formed: dict[str, int], loss: list[float], verdict: str) -> None:
    dev = analyse_development(STEPS, frames(formed), loss, top=3)
    assert dev.summary["verdict"] == verdict
    assert dict(zip(dev.edges["componentId_pre"], dev.edges["formedAt"])) == formed
    assert dict(zip(dev.edges["componentId_pre"], dev.edges["jumpAt"])) == formed  # a step up: its change point
    assert dev.summary["nullThreshold"] < 0.11 and len(dev.trajectories) == 3 * len(STEPS)


def test_edges_that_grow_early_but_jump_with_the_loss_coincide_with_it() -> None:
    """An edge may clear the initialisation's null long before it matters (the model's scale grows):
    the verdict dates edges and loss by the same change-point clock, not by the null crossing."""
    data = frames({})
    for step, frame in zip(STEPS, data):
        frame.loc[len(frame)] = {"componentId_pre": "K", "componentId_post": "L1.H0", "channel": "k", "score": 0.2 if step < 30 else 5.0}
    dev = analyse_development(STEPS, data, [5, 5, 5, 1, 1, 1], top=1)
    assert dev.edges["formedAt"].tolist() == [0] and dev.edges["jumpAt"].tolist() == [30]
    assert dev.summary["verdict"] == "coincides" and dev.summary["jumpBetween"] == [20, 30]


def test_an_edge_that_drops_back_below_the_null_has_not_formed() -> None:
    data = frames({"A": 10, "B": 10, "C": 10})
    data[3].loc[data[3]["componentId_pre"] == "A", "score"] = 0.0  # A vanishes at step 30, back at 40
    dev = analyse_development(STEPS, data, [5, 5, 1, 1, 1, 1], top=3)
    assert dict(zip(dev.edges["componentId_pre"], dev.edges["formedAt"])) == {"A": 40, "B": 10, "C": 10}


def test_statistics() -> None:
    assert change_point([5, 5, 5, 1, 1]) == (3, -4.0)
    assert gini(np.ones(10)) == pytest.approx(0.0) and gini(np.array([0, 0, 0, 1.0])) == pytest.approx(0.75)
    assert share_for_mass(np.ones(10)) == pytest.approx(0.9) and share_for_mass(np.array([9.0, 1, 0, 0, 0])) == pytest.approx(0.2)
    dev = analyse_development(STEPS, frames({"A": 10}), [5, 4, 3, 2, 1, 0], top=1)
    assert dev.checkpoints["gini"].iloc[-1] > dev.checkpoints["gini"].iloc[0]  # one strong edge among weak ones: sparser
    with pytest.raises(ValidationError, match="at least three checkpoints"):
        analyse_development(STEPS[:2], frames({})[:2], [1, 0])
    with pytest.raises(ValidationError, match="must increase"):
        analyse_development([0, 20, 10, 30, 40, 50], frames({"A": 10}), [5, 5, 5, 1, 1, 1])
