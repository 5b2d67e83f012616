"""The store conformance suite against the GCS store, on the session's fake-gcs-server.

fake-gcs-server checks no credentials: the denied store reaches it through a
fault proxy that answers 403 to every request, as GCS answers bad credentials.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from pos3 import Backend, Profile
from pos3.plugins import store_spec
from pos3.testing.conformance import (
    AccessControlConformance,
    NetworkFaultConformance,
    StoreConformance,
    Target,
    unique_prefix,
)
from pos3.testing.emulators import GCSServer
from pos3.testing.faultproxy import FaultProxy

pytest_plugins = ["emulator_fixtures"]

PAGE = 50


@pytest.fixture(scope="module", params=["native", "sdk"])
def transfer_client(request: pytest.FixtureRequest) -> str:
    """Both ways object bodies move: the native engine (default) and the SDK (the fallback)."""
    return request.param


@pytest.fixture(scope="module")
def gcs_conformance_profile(gcs_server: GCSServer, transfer_client: str) -> Profile:
    options = {"page_size": PAGE, "transfer_client": transfer_client}
    return Profile(
        local_name=f"gcs-conformance-{transfer_client}", endpoint=gcs_server.endpoint, public=True, options=options
    )


@pytest.fixture(scope="module")
def gcs_backend(gcs_conformance_profile: Profile) -> Iterator[Backend]:
    backend = store_spec("gs").connect(gcs_conformance_profile, 8)
    yield backend
    backend.close()


def _via(proxy: FaultProxy, name: str, transfer_client: str) -> Backend:
    options = {"page_size": PAGE, "timeout": 5, "retry_deadline": 3, "transfer_client": transfer_client}
    return store_spec("gs").connect(Profile(local_name=name, endpoint=proxy.endpoint, public=True, options=options), 8)


@pytest.fixture(scope="module")
def gcs_proxied(gcs_server: GCSServer, transfer_client: str) -> Iterator[tuple[Backend, Backend, FaultProxy]]:
    """A backend refused everything (a proxy answering 403), and one behind a fault proxy."""
    with (
        FaultProxy(gcs_server.endpoint, flavour="gcs") as deny,
        FaultProxy(gcs_server.endpoint, flavour="gcs") as proxy,
    ):
        deny.set("deny")
        denied = _via(deny, "gcs-denied", transfer_client)
        proxied = _via(proxy, "gcs-proxied", transfer_client)
        yield denied, proxied, proxy
        denied.close()
        proxied.close()


@pytest.fixture(scope="module")
def gcs_conformance_bucket(gcs_backend) -> str:
    """One bucket for the module; each test works under its own prefix."""
    return gcs_backend.client.create_bucket(f"conformance-{secrets.token_hex(4)}").name


class TestGCSConformance(StoreConformance, AccessControlConformance, NetworkFaultConformance):
    @pytest.fixture
    def conformance_target(
        self,
        gcs_backend,
        gcs_proxied,
        gcs_conformance_profile: Profile,
        gcs_conformance_bucket: str,
        clean_cloud_env: None,
    ) -> Target:
        denied, proxied, proxy = gcs_proxied
        prefix = unique_prefix()
        return Target(
            url=f"gs://{gcs_conformance_bucket}/{prefix}",
            store=gcs_backend.store(gcs_conformance_bucket),
            prefix=prefix,
            missing_store=gcs_backend.store(f"pos3-missing-{secrets.token_hex(4)}"),
            profile=gcs_conformance_profile,
            page_size=PAGE,
            denied_store=denied.store(gcs_conformance_bucket),
            proxy=proxy,
            proxied_store=proxied.store(gcs_conformance_bucket),
        )
