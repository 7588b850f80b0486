from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atlas.errors import ValidationError
from atlas.ids import ComponentRef, component_id, parse_component_id
from atlas.schema import ComponentKind

model_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,12}(/[A-Za-z0-9][A-Za-z0-9_.\-]{0,12})?", fullmatch=True)
small = st.integers(min_value=0, max_value=10_000)


@given(model_ids, st.sampled_from(list(ComponentKind)), small, small, st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,10}", fullmatch=True))
def test_round_trip(model_id: str, kind: ComponentKind, layer: int, index: int, dictionary: str) -> None:
    cid = component_id(model_id, kind, layer=layer, head=index, neuron=index, feature=index, dictionary_id=dictionary)
    ref = parse_component_id(cid)
    assert ref.model_id == model_id and ref.kind is kind
    assert ref.component_id == cid or kind in (ComponentKind.EMBED, ComponentKind.LOGITS)
    if kind not in (ComponentKind.EMBED, ComponentKind.LOGITS):
        assert ref.layer == layer


def test_examples() -> None:
    assert component_id("induction-2l", "head", layer=1, head=3) == "induction-2l/L1.H3"
    assert parse_component_id("gpt2/L5.N1023") == ComponentRef("gpt2", ComponentKind.NEURON, layer=5, neuron=1023)
    ref = parse_component_id("EleutherAI/pythia-70m/L3.F10452@res-sae")
    assert (ref.model_id, ref.feature, ref.dictionary_id) == ("EleutherAI/pythia-70m", 10452, "res-sae")
    assert parse_component_id("gpt2/EMBED").layer == -1


@pytest.mark.parametrize("bad", ["", "noslash", "gpt2/", "gpt2/L1.X2", "gpt2/L-1.H0", "gpt2/L1.F3", "/L1.H0", "gpt2/L1.H0 "])
def test_rejects_malformed(bad: str) -> None:
    with pytest.raises(ValidationError):
        parse_component_id(bad)


def test_build_rejects_missing_fields() -> None:
    with pytest.raises(ValidationError):
        component_id("m", ComponentKind.HEAD, layer=1)
    with pytest.raises(ValidationError):
        component_id("m", ComponentKind.FEATURE, layer=1, feature=2)
    with pytest.raises(ValidationError):
        component_id("bad id!", ComponentKind.EMBED)
