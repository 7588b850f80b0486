from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atlas.errors import ValidationError
from ingest.jobs.evaluate import ground_truth_labels, roc_auc


def test_auc_on_hand_made_lists() -> None:
    assert roc_auc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([1, 1, 0, 0])) == 1.0
    assert roc_auc(np.array([0.1, 0.2, 0.9, 0.8]), np.array([1, 1, 0, 0])) == 0.0
    # positives 0.9, 0.3; negatives 0.5, 0.1: pairs won 3 of 4
    assert roc_auc(np.array([0.9, 0.3, 0.5, 0.1]), np.array([1, 1, 0, 0])) == pytest.approx(0.75)
    assert roc_auc(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5  # a tie counts half
    with pytest.raises(ValidationError):
        roc_auc(np.array([0.5, 0.4]), np.array([1, 1]))


def test_ground_truth_labels() -> None:
    edges = pd.DataFrame({"componentId_pre": ["m/EMBED", "m/L0.H0", "m/EMBED"], "componentId_post": ["m/L0.H0", "m/LOGITS", "m/L0.H0"],
                          "channel": ["q", "in", "v"], "score": [0.1, 2.0, 1.0]})
    out = ground_truth_labels(edges, [["L0.H0", "LOGITS", "in"], ["EMBED", "L0.H0", "q"]], {("EMBED", "L0.H0", "q")})
    assert out["truth"].tolist() == [True, True, False] and out["structural"].tolist() == [True, False, False]
    silent = ground_truth_labels(edges, [["L0.H0", "LOGITS", "in"]], set(), frozenset({"L0.H0"}))
    assert silent["structural"].tolist() == [True, True, True]  # every edge touching a silent head
    with pytest.raises(ValidationError):
        ground_truth_labels(edges, [["L0.H1", "LOGITS", "in"]], set())
