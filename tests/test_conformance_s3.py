"""The store conformance suite against the S3 store, on the session's SeaweedFS server."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import boto3
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
from pos3.testing.faultproxy import FaultProxy
from pos3.testing.servers import S3Server


def _profile(server: S3Server, name: str, secret: str, transfer_client: str, **options: object) -> Profile:
    return Profile(
        local_name=name,
        endpoint=options.pop("endpoint", server.endpoint),  # type: ignore[arg-type]
        region="us-east-1",
        options={
            "access_key_id": server.access_key,
            "secret_access_key": secret,
            "transfer_client": transfer_client,
            **options,
        },
    )


@pytest.fixture(scope="module", params=["crt", "boto3"])
def transfer_client(request: pytest.FixtureRequest) -> str:
    """Both ways object bodies move: the native CRT client (default) and plain boto3 (the fallback)."""
    return request.param


@pytest.fixture(scope="module")
def s3_profile(s3_server: S3Server, transfer_client: str) -> Profile:
    return _profile(s3_server, f"conformance-{transfer_client}", s3_server.secret_key, transfer_client)


@pytest.fixture(scope="module")
def s3_backends(
    s3_server: S3Server, s3_profile: Profile, transfer_client: str
) -> Iterator[tuple[Backend, Backend, Backend, FaultProxy]]:
    """A backend with the server's credentials, one whose secret is wrong, and one reaching
    the server through a fault proxy (with one retry and short timeouts)."""
    good = store_spec("s3").connect(s3_profile, 8)
    denied = store_spec("s3").connect(_profile(s3_server, "denied", "not-the-secret", transfer_client), 8)
    with FaultProxy(s3_server.endpoint, flavour="s3", seed=1) as proxy:
        faulty = _profile(
            s3_server,
            "proxied",
            s3_server.secret_key,
            transfer_client,
            endpoint=proxy.endpoint,
            max_attempts=2,
            timeout=5,
        )
        proxied = store_spec("s3").connect(faulty, 8)
        yield good, denied, proxied, proxy
        proxied.close()
    good.close()
    denied.close()


@pytest.fixture(scope="module")
def conformance_bucket(s3_server: S3Server) -> str:
    """One bucket for the module; each test works under its own prefix."""
    name = f"conformance-{secrets.token_hex(4)}"
    boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        region_name="us-east-1",
    ).create_bucket(Bucket=name)
    return name


class TestS3Conformance(StoreConformance, AccessControlConformance, NetworkFaultConformance):
    @pytest.fixture
    def conformance_target(self, s3_backends, s3_profile: Profile, conformance_bucket: str) -> Target:
        good, denied, proxied, proxy = s3_backends
        prefix = unique_prefix()
        return Target(
            url=f"s3://{conformance_bucket}/{prefix}",
            store=good.store(conformance_bucket),
            prefix=prefix,
            missing_store=good.store(f"pos3-missing-{secrets.token_hex(4)}"),
            profile=s3_profile,
            denied_store=denied.store(conformance_bucket),
            sorted_listing=False,  # SeaweedFS 4.48 lists "a/b" before "a-b" (see test_scale.py)
            put_creates_bucket=True,  # SeaweedFS 4.48 creates a missing bucket on PUT
            proxy=proxy,
            proxied_store=proxied.store(conformance_bucket),
        )
