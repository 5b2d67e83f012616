"""Fixtures for the GCS and Azure stores: one emulator per test session, a fresh bucket per test.

Loaded by the test modules that need them with ``pytest_plugins = ["emulator_fixtures"]``.
Every fixture here clears the cloud SDKs' environment first, so a developer's
own Google or Azure configuration never leaks into a test.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from pos3 import Profile
from pos3.testing.emulators import AzureServer, GCSServer, azurite, fake_gcs

_counter = itertools.count()
CLOUD_ENV = ("GOOGLE_", "GCLOUD_", "CLOUDSDK_", "STORAGE_EMULATOR_HOST", "AZURE_")


def unique(stem: str) -> str:
    """A bucket or container name no other test of this session uses."""
    return f"{stem}-{os.getpid()}-{next(_counter)}"


@pytest.fixture
def clean_cloud_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith(CLOUD_ENV):
            monkeypatch.delenv(var)


# -- GCS (fake-gcs-server) -------------------------------------------------------


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GCSServer]:
    with fake_gcs(tmp_path_factory.mktemp("fake-gcs")) as server:
        yield server


@pytest.fixture
def gcs(gcs_server: GCSServer, clean_cloud_env: None):
    """A google-cloud-storage client for arranging and checking test data."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project=gcs_server.project,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": gcs_server.endpoint},
    )
    yield client
    client.close()


@pytest.fixture
def gcs_bucket(gcs) -> str:
    """A new, empty bucket for this test."""
    return gcs.create_bucket(unique("gcs")).name


@pytest.fixture
def gcs_profile(gcs_server: GCSServer) -> Profile:
    """A profile reaching the emulator through ``endpoint`` (emulators take anonymous requests)."""
    return Profile(local_name="gcs-emu", endpoint=gcs_server.endpoint, public=True)


# -- Azure (Azurite) ----------------------------------------------------------------


@pytest.fixture(scope="session")
def azure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureServer]:
    with azurite(tmp_path_factory.mktemp("azurite")) as server:
        yield server


@pytest.fixture
def az(azure_server: AzureServer, clean_cloud_env: None):
    """An azure-storage-blob service client for arranging and checking test data."""
    from azure.storage.blob import BlobServiceClient

    client = BlobServiceClient.from_connection_string(azure_server.connection_string)
    yield client
    client.close()


@pytest.fixture
def az_container(az) -> str:
    """A new, empty (private) container for this test."""
    return az.create_container(unique("az")).container_name


@pytest.fixture
def az_profile(azure_server: AzureServer) -> Profile:
    """A profile reaching Azurite through ``endpoint`` (the account URL) and the account key."""
    return Profile(
        local_name="az-emu", endpoint=azure_server.endpoint, options={"account_key": azure_server.account_key}
    )
