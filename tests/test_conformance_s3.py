"""The store conformance suite against the S3 store, on the session's SeaweedFS server."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

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
    """``transfer_client`` ``crt-botocore``: the CRT configured from boto3 (an ``aws_profile`` in the
    credentials file `_botocore_chain` writes), not natively."""
    if transfer_client == "crt-botocore":
        keys: dict[str, object] = {"aws_profile": name, "transfer_client": "crt"}
    else:
        keys = {"access_key_id": server.access_key, "secret_access_key": secret, "transfer_client": transfer_client}
    return Profile(
        local_name=name,
        endpoint=options.pop("endpoint", server.endpoint),  # type: ignore[arg-type]
        region="us-east-1",
        options={**keys, **options},
    )


@pytest.fixture(scope="module")
def aws_credentials(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A credentials file with one section per `_profile` name of the ``crt-botocore`` backends."""
    creds = tmp_path_factory.mktemp("aws") / "credentials"
    sections = [("conformance-crt-botocore", s3_server.secret_key), ("denied", "not-the-secret")]
    sections.append(("proxied", s3_server.secret_key))
    key = s3_server.access_key
    creds.write_text("".join(f"[{n}]\naws_access_key_id = {key}\naws_secret_access_key = {k}\n" for n, k in sections))
    return creds


def _point_at(mp: pytest.MonkeyPatch, creds: Path) -> None:
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    mp.setenv("AWS_CONFIG_FILE", str(creds.parent / "no-config"))


@pytest.fixture(autouse=True)
def _botocore_chain(request: pytest.FixtureRequest, _aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """For the ``crt-botocore`` backends, botocore's chain reads `aws_credentials` in every test too."""
    if "transfer_client" in request.fixturenames and request.getfixturevalue("transfer_client") == "crt-botocore":
        _point_at(monkeypatch, request.getfixturevalue("aws_credentials"))


@pytest.fixture(scope="module", params=["crt", "crt-botocore", "boto3"])
def transfer_client(request: pytest.FixtureRequest) -> str:
    """Every way requests are made: the CRT configured natively (default) or from boto3's chain
    (configuration only botocore reads), and plain boto3 (the fallback)."""
    return request.param


@pytest.fixture(scope="module")
def s3_profile(s3_server: S3Server, transfer_client: str) -> Profile:
    return _profile(s3_server, f"conformance-{transfer_client}", s3_server.secret_key, transfer_client)


@pytest.fixture(scope="module")
def s3_backends(
    s3_server: S3Server, s3_profile: Profile, transfer_client: str, aws_credentials: Path
) -> Iterator[tuple[Backend, Backend, Backend, FaultProxy]]:
    """A backend with the server's credentials, one whose secret is wrong, and one reaching
    the server through a fault proxy (with one retry and short timeouts)."""
    with FaultProxy(s3_server.endpoint, flavour="s3", seed=1) as proxy:
        with pytest.MonkeyPatch.context() as mp:  # botocore reads its chain when a backend connects
            if transfer_client == "crt-botocore":
                _point_at(mp, aws_credentials)
            good = store_spec("s3").connect(s3_profile, 8)
            denied = store_spec("s3").connect(_profile(s3_server, "denied", "not-the-secret", transfer_client), 8)
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
        native = [getattr(b, "native", None) is not None for b in (good, denied, proxied)]
        assert native == [transfer_client == "crt"] * 3
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
