"""The method registry: complete, read by the job's validation and by sharding, and mirrored in the docs."""

from __future__ import annotations

from pathlib import Path

import pytest

from atlas.errors import ValidationError
from atlas.schema import Method, Metric, ModelFamily
from ingest.edges import methods
from ingest.edges.registry import METHODS, get_method, method_spec, methods_table
from ingest.jobs.run import IngestConfig

pytestmark = pytest.mark.unit
DOCS = Path(__file__).resolve().parents[2] / "docs" / "methods.md"


def test_every_stored_method_has_one_entry_whose_function_resolves() -> None:
    assert set(METHODS) == set(Method)
    for name, spec in METHODS.items():
        assert spec.method is name
        assert get_method(name.value) is getattr(methods, spec.compute.split(":")[1])
    with pytest.raises(ValidationError, match="unknown method 'acdc'"):
        method_spec("acdc")


def test_the_docs_table_is_the_registry() -> None:
    assert methods_table() in DOCS.read_text()


def test_the_job_validates_through_the_registry() -> None:
    with pytest.raises(ValidationError, match="vanishes at the clean run"):
        IngestConfig(model="m", method="eap", metric="kl").validate()
    with pytest.raises(ValidationError, match="--per-position needs a gradient method"):
        IngestConfig(model="m", method="patching", per_position=True).validate()
    with pytest.raises(ValidationError, match="encoders are scored with eap or patching, not eap-ig"):
        method_spec("eap-ig").check(metric=Metric.COSINE.value, family=ModelFamily.ENCODER.value)
    IngestConfig(model="m", method="eap-ig", metric="kl").validate()  # accepted where the registry says so


def test_steps_count_where_the_registry_says_they_do() -> None:
    steps_methods = {spec.method.value for spec in METHODS.values() if spec.uses_steps}
    assert steps_methods == {"eap-ig", "eap-ig-act"}
    for name in Method:
        a, b = IngestConfig(model="m", method=name.value, steps=3), IngestConfig(model="m", method=name.value, steps=7)
        assert (a.to_json() != b.to_json()) == (name.value in steps_methods)


def test_sharding_and_passes_come_from_the_registry() -> None:
    assert {m.value for m, s in METHODS.items() if s.shards_by == "edges"} == {"patching"}
    assert method_spec("eap").passes(5, 1000) == 3
    assert method_spec("eap-ig").passes(5, 1000) == 7
    assert method_spec("patching").passes(5, 1000) == 1000
