"""Noise correlations and encoding models against responses whose statistics are set by construction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atlas.errors import ValidationError
from ingest.model.graph import build_graph
from ingest.model.loading import load_model
from ingest.model.tasks import get_task
from ingest.toolbox.coding import encoding_models, noise_correlations, noisy_responses


def test_shared_noise_is_found_and_independent_noise_is_not() -> None:
    rng = np.random.default_rng(0)
    stim, reps = 40, 12
    signal = rng.normal(0, 1, stim)[:, None]
    shared = rng.normal(0, 1, (stim, reps))
    a = signal + shared
    b = signal + 0.6 * shared + 0.8 * rng.normal(0, 1, (stim, reps))  # noise correlation 0.6 with a's
    c = rng.normal(0, 1, stim)[:, None] + rng.normal(0, 1, (stim, reps))
    pairs = noise_correlations(["m/L0.H0", "m/L0.H1", "m/L0.H2"], np.stack([a, b, c]), shuffles=30).set_index(["a", "b"])
    ab, ac = pairs.loc[("m/L0.H0", "m/L0.H1")], pairs.loc[("m/L0.H0", "m/L0.H2")]
    assert ab["r"] == pytest.approx(0.6, abs=0.08) and ab["z"] > 5 and ab["signal"] > 0.9
    assert abs(ac["r"]) < 0.15 and abs(ac["z"]) < 4 and abs(ac["rNull"]) < 0.1


def test_an_encoding_model_finds_the_variable_a_response_is_tuned_to() -> None:
    model = load_model("induction-2l", Path("/nonexistent-atlas-home")).model
    batch = get_task("induction").make_batch(model, 40, 0)
    rng = np.random.default_rng(1)
    tuning = rng.normal(0, 1, model.cfg.d_vocab)
    tokens = batch.clean.numpy()[batch.mask.numpy()]
    stim = tuning[tokens][:, None]
    responses = np.stack([stim + 0.5 * rng.normal(0, 1, (len(tokens), 6)), rng.normal(0, 1, (len(tokens), 6))])
    frame = encoding_models(["m/L0.H0", "m/L0.H1"], responses, batch).set_index("componentId")
    tuned, untuned = frame.loc["m/L0.H0"], frame.loc["m/L0.H1"]
    assert 0.6 < tuned["noiseCeiling"] < 0.9  # about 1 / (1 + 0.25) of a trial's variance is the stimulus's
    assert tuned["r2Token"] > 0.8 * tuned["noiseCeiling"] and tuned["r2Position"] < 0.1 and tuned["r2All"] > 0.5
    assert abs(untuned["noiseCeiling"]) < 0.1 and untuned["r2All"] < 0.05


def test_noisy_presentations_of_a_model() -> None:
    model = load_model("induction-2l", Path("/nonexistent-atlas-home")).model
    graph = build_graph(model, "ind")
    batch = get_task("induction").make_batch(model, 4, 0)
    ids, quiet = noisy_responses(model, graph, batch, repeats=3, sigma=1e-6)
    assert ids == [f"ind/L{l}.H{h}" for l in range(2) for h in range(4)] and quiet.shape == (8, int(batch.mask.sum()), 3)
    assert np.abs(quiet - quiet.mean(axis=2, keepdims=True)).max() < 1e-3 * np.abs(quiet).max()  # tiny noise, tiny variability
    _, loud = noisy_responses(model, graph, batch, repeats=3, sigma=0.2)
    assert (loud.std(axis=2).mean(axis=1) > quiet.std(axis=2).mean(axis=1)).all()
    with pytest.raises(ValidationError, match="at least 2 repeats"):
        noisy_responses(model, graph, batch, repeats=1)
    with pytest.raises(ValidationError, match="--sigma must be positive"):
        noisy_responses(model, graph, batch, sigma=0)
