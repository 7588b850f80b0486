"""The install gives the Bolt driver its compiled packstream codec (edge writes pack ~2x faster)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit


def test_the_driver_packs_with_its_rust_codec() -> None:
    from neo4j._codec.packstream import v1

    assert v1._rust_pack is not None, "neo4j-rust-ext is not installed: pip install -e . should have brought it"
