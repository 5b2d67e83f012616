"""Shared fixtures: one SeaweedFS server per test session, a fresh bucket per test."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from pos3.testing.servers import S3Server, seaweedfs

pytest_plugins = ["reliability_report"]

_counter = itertools.count()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with seaweedfs(tmp_path_factory.mktemp("weed")) as server:
        yield server


@pytest.fixture(autouse=True)
def _aws_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Point boto3's default chain at the test server (and never at the developer's ~/.aws)."""
    for var in list(os.environ):
        if var.startswith("AWS_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    # A service answering "slow down" for good fails a call after 5 s of backoff (not the default 120 s).
    monkeypatch.setenv("POS3_THROTTLE_DEADLINE", "5")
    if "s3_server" in request.fixturenames:
        server: S3Server = request.getfixturevalue("s3_server")
        for k, v in server.env().items():
            monkeypatch.setenv(k, v)


@pytest.fixture
def s3(s3_server: S3Server):
    """A plain boto3 client for arranging and checking test data."""
    return boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        region_name="us-east-1",
    )


@pytest.fixture
def bucket(s3) -> str:
    """A new, empty bucket for this test."""
    name = f"test-{os.getpid()}-{next(_counter)}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def public_bucket(s3, s3_server: S3Server) -> str:
    """The server's anonymously readable bucket, created on first use."""
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
        s3.create_bucket(Bucket=s3_server.public_bucket)
    return s3_server.public_bucket
