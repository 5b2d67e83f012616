"""The store conformance suite against the example plugin ``pos3-memstore`` (``mem://``).

The plugin is found through its entry point, so it must be installed:
``pip install -e examples/pos3-memstore``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pos3 import Profile
from pos3.plugins import store_spec
from pos3.testing.conformance import StoreConformance, Target, unique_prefix

BUCKET = "conformance"


@pytest.fixture(scope="module")
def memstore() -> Iterator[object]:
    try:
        import pos3_memstore
    except ImportError:
        pytest.fail("the example plugin is not installed: pip install -e examples/pos3-memstore")
    pos3_memstore.create_bucket(BUCKET)
    yield pos3_memstore
    pos3_memstore.delete_bucket(BUCKET)


class TestMemConformance(StoreConformance):
    @pytest.fixture
    def conformance_target(self, memstore) -> Target:
        backend = store_spec("mem").connect(Profile(), 8)
        prefix = unique_prefix()
        return Target(
            url=f"mem://{BUCKET}/{prefix}",
            store=backend.store(BUCKET),
            prefix=prefix,
            missing_store=backend.store("no-such-bucket"),
        )
