"""The store conformance suite against the ``file://`` store, on temporary directories."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from pos3 import Profile
from pos3.plugins import store_spec
from pos3.testing.conformance import StoreConformance, Target
from pos3.urls import parse


class TestFileConformance(StoreConformance):
    @pytest.fixture
    def conformance_target(self, tmp_path: Path) -> Target:
        root = tmp_path / "remote"  # created by the first put: an empty directory would be a marker
        url = f"file://{root}/"
        parsed = parse(url)
        backend = store_spec("file").connect(Profile(), 8)
        return Target(
            url=url,
            store=backend.store(parsed.bucket),
            prefix=parsed.key,
            missing_store=backend.store(f"pos3-missing-{secrets.token_hex(4)}"),
        )
