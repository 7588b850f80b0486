"""The peer benchmark's edge-name mapping (auto-circuit node names -> our ids) and its metric."""

from __future__ import annotations

import torch

from bench.__main__ import peer_edge_key
from ingest.model.tasks import PromptBatch, get_task


def test_auto_circuit_names_map_to_our_edges() -> None:
    assert peer_edge_key("Resid Start", "A0.3.Q") == ("EMBED", "L0.H3", "q")
    assert peer_edge_key("A0.3", "A11.10.V") == ("L0.H3", "L11.H10", "v")
    assert peer_edge_key("MLP 2", "MLP 5") == ("L2.MLP", "L5.MLP", "in")
    assert peer_edge_key("A4.0", "Resid End") == ("L4.H0", "LOGITS", "in")


def test_target_logit_metric_is_the_raw_logit() -> None:
    logits = torch.tensor([[[0.0, 1.0, 5.0], [2.0, 3.0, 7.0]]])
    batch = PromptBatch(torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2, dtype=torch.long),
                        torch.tensor([[0, 2]]), torch.tensor([[False, True]]))
    assert get_task("induction", metric="target-logit").metric(logits, batch).item() == 7.0
    assert get_task("induction", metric="logit").metric(logits, batch).item() == 7.0 - 4.0
