"""Representational similarity against the published definitions on inputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ortho_group

from atlas.errors import ValidationError
from ingest.toolbox.population import cca_similarity, linear_cka, population_tables, representations, rsa_similarity
from tests.conftest import make_tiny

RNG = np.random.default_rng(0)
X = RNG.normal(size=(400, 20)) @ np.diag(np.linspace(3, 0.3, 20))


def test_identical_and_rotated_and_scaled() -> None:
    q = ortho_group.rvs(20, random_state=1)
    for y in (X, X @ q, 3.0 * X @ q + 5.0):
        assert linear_cka(X, y) == pytest.approx(1.0, abs=1e-10)
        assert linear_cka(X, y, debiased=True) == pytest.approx(1.0, abs=1e-10)
        assert cca_similarity(X, y, svcca=None) == pytest.approx(1.0, abs=1e-8)
    assert rsa_similarity(X, X) == pytest.approx(1.0)


def test_cka_is_not_invariant_to_general_linear_maps_but_cca_is() -> None:
    a = RNG.normal(size=(20, 20)) @ np.diag(np.linspace(5, 0.05, 20))  # invertible, anisotropic
    assert linear_cka(X, X @ a) < 0.95
    assert cca_similarity(X, X @ a, svcca=None) == pytest.approx(1.0, abs=1e-8)


def test_independent_representations() -> None:
    y = RNG.normal(size=(400, 20))
    assert linear_cka(X, y, debiased=True) == pytest.approx(0.0, abs=0.05)
    assert linear_cka(X, y) < 0.15  # biased upward, as the literature warns
    assert cca_similarity(X, y, svcca=None) < 0.2
    assert abs(rsa_similarity(X, y)) < 0.1


def test_hand_computed_cka() -> None:
    x = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    y = x[:, :1]  # drops one of two equal-variance directions
    # X'X = 2 I; Y'X = [2, 0]; CKA = 4 / (|2I|_F * |2|) = 4 / (2 sqrt 2 * 2) = 1/sqrt 2
    assert linear_cka(x, y) == pytest.approx(1 / np.sqrt(2))


def test_guards() -> None:
    with pytest.raises(ValidationError):
        linear_cka(X, X[:10])
    with pytest.raises(ValidationError):
        cca_similarity(X[:30], X[:30], svcca=None)  # features ~ stimuli: CCA would be trivially 1


def test_population_tables_on_a_model() -> None:
    model = make_tiny(2)
    reps = representations(model, "pop", layer=1, n=8)
    tables = population_tables(reps)
    comps = tables["components"]
    assert len(comps) == (4 + 1) * 4 // 2  # 4 heads + MLP of layer 1, pairwise
    assert comps[["cka", "cca", "rsa"]].notna().all().all()
    assert ((comps["cka"] >= 0) & (comps["cka"] <= 1)).all()
    assert len(tables["layers"]) == 1
