"""The store conformance suite against the GCS store, on the session's fake-gcs-server.

fake-gcs-server checks no credentials, so the permission test is skipped.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from pos3 import Backend, Profile
from pos3.plugins import store_spec
from pos3.testing.conformance import StoreConformance, Target, unique_prefix
from pos3.testing.emulators import GCSServer

pytest_plugins = ["emulator_fixtures"]

PAGE = 50


@pytest.fixture(scope="module")
def gcs_conformance_profile(gcs_server: GCSServer) -> Profile:
    return Profile(local_name="gcs-conformance", endpoint=gcs_server.endpoint, public=True, options={"page_size": PAGE})


@pytest.fixture(scope="module")
def gcs_backend(gcs_conformance_profile: Profile) -> Iterator[Backend]:
    backend = store_spec("gs").connect(gcs_conformance_profile, 8)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def gcs_conformance_bucket(gcs_backend) -> str:
    """One bucket for the module; each test works under its own prefix."""
    return gcs_backend.client.create_bucket(f"conformance-{secrets.token_hex(4)}").name


class TestGCSConformance(StoreConformance):
    @pytest.fixture
    def conformance_target(
        self, gcs_backend, gcs_conformance_profile: Profile, gcs_conformance_bucket: str, clean_cloud_env: None
    ) -> Target:
        prefix = unique_prefix()
        return Target(
            url=f"gs://{gcs_conformance_bucket}/{prefix}",
            store=gcs_backend.store(gcs_conformance_bucket),
            prefix=prefix,
            missing_store=gcs_backend.store(f"pos3-missing-{secrets.token_hex(4)}"),
            profile=gcs_conformance_profile,
            page_size=PAGE,
        )
