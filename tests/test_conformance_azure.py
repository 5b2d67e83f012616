"""The store conformance suite against the Azure store, on the session's Azurite."""

from __future__ import annotations

import base64
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
from pos3.testing.emulators import AzureServer
from pos3.testing.faultproxy import FaultProxy

pytest_plugins = ["emulator_fixtures"]

PAGE = 50


def _profile(server: AzureServer, name: str, key: str, endpoint: str | None = None, **options: object) -> Profile:
    return Profile(
        local_name=name,
        endpoint=endpoint or server.endpoint,
        options={"account_key": key, "page_size": PAGE, **options},
    )


@pytest.fixture(scope="module", params=["native", "sdk"])
def transfer_client(request: pytest.FixtureRequest) -> str:
    """Both ways blob bodies move: the native engine (default) and the SDK (the fallback)."""
    return request.param


@pytest.fixture(scope="module")
def az_conformance_profile(azure_server: AzureServer, transfer_client: str) -> Profile:
    return _profile(
        azure_server, f"az-conformance-{transfer_client}", azure_server.account_key, transfer_client=transfer_client
    )


@pytest.fixture(scope="module")
def az_backends(
    azure_server: AzureServer, az_conformance_profile: Profile, transfer_client: str
) -> Iterator[tuple[Backend, Backend, Backend, FaultProxy]]:
    """A backend with the account's key, one whose key is wrong, and one behind a fault proxy."""
    good = store_spec("az").connect(az_conformance_profile, 8)
    wrong_key = base64.b64encode(b"not the account key").decode()
    denied_profile = _profile(azure_server, "az-denied", wrong_key, transfer_client=transfer_client)
    denied = store_spec("az").connect(denied_profile, 8)
    origin, account = azure_server.endpoint.rsplit("/", 1)
    with FaultProxy(origin, flavour="azure") as proxy:
        faulty = _profile(
            azure_server,
            "az-proxied",
            azure_server.account_key,
            f"{proxy.endpoint}/{account}",
            max_attempts=2,
            timeout=5,
            transfer_client=transfer_client,
        )
        proxied = store_spec("az").connect(faulty, 8)
        yield good, denied, proxied, proxy
        proxied.close()
    good.close()
    denied.close()


@pytest.fixture(scope="module")
def az_conformance_container(az_backends) -> str:
    """One container for the module; each test works under its own prefix."""
    return az_backends[0].client.create_container(f"conformance-{secrets.token_hex(4)}").container_name


class TestAzureConformance(StoreConformance, AccessControlConformance, NetworkFaultConformance):
    @pytest.fixture
    def conformance_target(
        self, az_backends, az_conformance_profile: Profile, az_conformance_container: str, clean_cloud_env: None
    ) -> Target:
        good, denied, proxied, proxy = az_backends
        prefix = unique_prefix()
        return Target(
            url=f"az://{az_conformance_container}/{prefix}",
            store=good.store(az_conformance_container),
            prefix=prefix,
            missing_store=good.store(f"pos3-missing-{secrets.token_hex(4)}"),
            profile=az_conformance_profile,
            denied_store=denied.store(az_conformance_container),
            page_size=PAGE,
            proxy=proxy,
            proxied_store=proxied.store(az_conformance_container),
        )
