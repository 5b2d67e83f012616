"""S3 start-up without botocore: the native configuration agrees with botocore's, falls back to it
whenever only botocore knows, and a no-op sync never imports boto3 or botocore."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pos3.profiles import Profile
from pos3.stores.s3 import S3Backend
from pos3.stores.s3_config import native_config

ENDPOINTS = [None, "http://127.0.0.1:8333", "http://localhost:9000/", "https://s3.example.com/base"]
REGIONS = [None, "us-east-1", "eu-west-1", "cn-north-1"]
STYLES = ["auto", "path", "virtual"]
BUCKETS = ["my-bucket", "my.bucket", "ab", "My_Bucket"]


class _Sent(Exception):
    """Raised by a ``before-send`` hook: the request botocore would send, not sent."""


def _botocore_request(backend: S3Backend, bucket: str) -> tuple[str, str]:
    """(URL, signing region) of the HeadObject botocore would send for ``bucket``/``k/x y``."""
    seen: dict[str, Any] = {}

    def stop(request: Any, **_: Any) -> None:
        seen["url"] = request.url
        seen["auth"] = request.headers.get("Authorization", b"").decode()
        raise _Sent

    events = backend.client.meta.events
    events.unregister("before-send.s3", unique_id="pos3-test-stop")
    events.register("before-send.s3", stop, unique_id="pos3-test-stop")
    with pytest.raises(_Sent):
        backend.client.head_object(Bucket=bucket, Key="k/x y")
    return seen["url"], seen["auth"].split("/")[2]


def _check(backend: S3Backend, bucket: str) -> bool:
    """Assert that a natively derived bucket URL and region are botocore's; False if not native."""
    native = backend.native
    assert native is not None
    base = native.bucket_base(bucket)
    if base is None:
        return False
    url, region = _botocore_request(backend, bucket)
    scheme = "https" if native.https else "http"
    assert (f"{scheme}://{base[0]}{base[1]}k/x%20y", native.region) == (url, region)
    return True


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_native_bucket_urls_are_botocores_for_an_isolated_profile(endpoint: str | None) -> None:
    native = 0
    for region in REGIONS:
        for style in STYLES:
            profile = Profile(
                "k", endpoint, region, options={"addressing_style": style}, access_key="A", secret_key="S"
            )
            backend = S3Backend(profile, 2)
            native += sum(_check(backend, bucket) for bucket in BUCKETS)
    assert native >= 6  # the common cases are resolved natively


def test_native_ambient_configuration_is_botocores(monkeypatch: pytest.MonkeyPatch) -> None:
    for endpoint_var, region_var in [
        ("AWS_ENDPOINT_URL", "AWS_REGION"),
        ("AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION"),
        (None, "AWS_DEFAULT_REGION"),
        (None, "AWS_REGION"),
    ]:
        for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "A")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "S")
        if endpoint_var:
            monkeypatch.setenv(endpoint_var, "http://127.0.0.1:1/")
        monkeypatch.setenv(region_var, "eu-west-1")
        assert _check(S3Backend(Profile(), 2), "my-bucket")


def test_an_isolated_profile_reads_only_the_env_keys() -> None:
    hostile = {
        "AWS_PROFILE": "nope",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
        "AWS_DEFAULT_REGION": "xx-nowhere-1",
        "AWS_CONFIG_FILE": __file__,
        "AWS_ACCESS_KEY_ID": "EA",
        "AWS_SECRET_ACCESS_KEY": "ES",
    }
    keyed = native_config("http://h:1", None, False, {"access_key_id": "A", "secret_access_key": "S"}, True, hostile)
    assert keyed is not None and (keyed.endpoint, keyed.region, keyed.credentials) == (
        "http://h:1",
        "us-east-1",
        ("A", "S", None),
    )
    env_keyed = native_config("http://h:1", "eu-west-1", False, {}, True, hostile)
    assert env_keyed is not None and env_keyed.credentials == ("EA", "ES", None) and env_keyed.region == "eu-west-1"
    public = native_config(None, None, True, {}, True, hostile)
    assert public is not None and public.credentials is None and public.endpoint is None


PLAIN = {"AWS_CONFIG_FILE": "/nonexistent", "AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "S"}


@pytest.mark.parametrize(
    ("env", "options"),
    [
        ({**PLAIN, "AWS_PROFILE": "x"}, {}),  # named profiles, SSO, credential_process...
        ({**PLAIN, "AWS_CONFIG_FILE": __file__}, {}),  # an existing config file (region, endpoint_url, s3...)
        ({**PLAIN, "AWS_USE_FIPS_ENDPOINT": "true"}, {}),  # any variable the rule does not know
        ({"AWS_CONFIG_FILE": "/nonexistent"}, {}),  # no keys: credentials file, containers, instance metadata
        ({"AWS_CONFIG_FILE": "/nonexistent", "AWS_ACCESS_KEY_ID": "A"}, {}),  # partial keys: botocore's error
        (PLAIN, {"aws_profile": "x"}),
    ],
)
def test_configuration_only_botocore_knows_goes_to_botocore(env: dict[str, str], options: dict[str, str]) -> None:
    assert native_config(None, None, False, options, False, env) is None
    assert native_config(None, None, False, {}, False, PLAIN) is not None  # the plain case is native


def test_a_noop_sync_never_imports_boto3(s3, s3_server, bucket: str, tmp_path: Path) -> None:
    """Download a prefix and a single key (a HEAD), upload with deletes (a lease: conditional PUT,
    ancestor GETs, DeleteObjects), then again with nothing to do: boto3 and botocore stay unimported."""
    for i in range(5):
        s3.put_object(Bucket=bucket, Key=f"d/f{i}", Body=b"x" * i)
    script = textwrap.dedent(f"""
        import sys
        import pos3
        for _ in range(2):
            with pos3.mirror(cache_root={str(tmp_path / "cache")!r}, show_progress=False):
                d = pos3.download("s3://{bucket}/d")
                one = pos3.download("s3://{bucket}/d/f3")
                up = pos3.upload("s3://{bucket}/u", local={str(tmp_path / "up")!r}, interval=None)
                (up / "a").write_text("a")
                (up / "gone").unlink(missing_ok=True)
                if not (up / "b").exists():
                    (up / "b").write_text("b")
                    (up / "gone").write_text("g")
        print(sorted(p.name for p in d.iterdir()), one.read_bytes())
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("boto3", "botocore")))
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["['f0', 'f1', 'f2', 'f3', 'f4'] b'xxx'", "[]"]
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="u/").get("Contents", []))
    assert keys == ["u/.pos3-lease", "u/a", "u/b"] or keys == ["u/a", "u/b"]


@pytest.mark.parametrize("trust", ["AWS_CA_BUNDLE", "ca_bundle in the config file", "the profile option ca_bundle"])
def test_an_endpoint_only_a_ca_bundle_trusts(
    s3, s3_server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trust: str
) -> None:
    """HTTPS to an endpoint whose certificate only the user's CA bundle trusts: the CRT trusts what
    botocore trusts, so listings and transfers go through (they stalled until the timeout, the CRT
    knowing only the system's CAs). ``AWS_CA_BUNDLE`` keeps the native configuration (no botocore);
    a config file's ``ca_bundle`` is read through botocore; a profile with an endpoint (isolated from
    ``AWS_*``) gives its own ``ca_bundle``."""
    import pos3
    from pos3.testing.faultproxy import FaultProxy, self_signed

    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"d/f{i}", Body=b"x" * (i + 1))
    cert, tls = self_signed(tmp_path)
    with FaultProxy(s3_server.endpoint, tls=tls) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        profile = None
        if trust == "AWS_CA_BUNDLE":
            monkeypatch.setenv("AWS_CA_BUNDLE", str(cert))
        elif trust == "ca_bundle in the config file":
            config = tmp_path / "aws-config"
            config.write_text(f"[default]\nca_bundle = {cert}\n")
            monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
        else:
            monkeypatch.setenv("AWS_CA_BUNDLE", str(tmp_path / "ignored: a profile with an endpoint reads no AWS_*"))
            profile = Profile(local_name="tls", endpoint=proxy.endpoint, options={"ca_bundle": str(cert)})
        backend = S3Backend(profile or Profile(), 4)
        assert (backend.native is not None) == (trust != "ca_bundle in the config file")
        backend.close()
        with pos3.mirror(cache_root=tmp_path / "cache", show_progress=False):
            d = pos3.download(f"s3://{bucket}/d", profile=profile)
            up = pos3.upload(f"s3://{bucket}/u", local=tmp_path / "up", interval=None, profile=profile)
            (up / "a").write_bytes(b"abc")
        assert sorted(p.read_bytes() for p in d.iterdir()) == [b"x", b"xx", b"xxx"]
        assert proxy.count("PUT") >= 1 and proxy.count("GET") >= 3
    assert s3.get_object(Bucket=bucket, Key="u/a")["Body"].read() == b"abc"


def test_an_untrusted_certificate_is_named_within_seconds(
    s3, s3_server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CRT reports no TLS failure (it keeps trying until the timeout, three times: six minutes by
    default): an unanswered request's host is checked after a few seconds, and a certificate nobody
    told pos3 to trust is the error, naming the remedy; nothing is written locally."""
    import time

    import pos3
    from pos3.stores.s3_crt import tls_problem
    from pos3.testing.faultproxy import FaultProxy, self_signed

    s3.put_object(Bucket=bucket, Key="d/f", Body=b"x")
    cert, tls = self_signed(tmp_path)
    with FaultProxy(s3_server.endpoint, tls=tls) as proxy:
        host = proxy.endpoint.split("//", 1)[1]
        assert tls_problem(host, str(cert)) is None
        assert "not trusted" in (tls_problem(host, None) or "")
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        started = time.monotonic()
        with pytest.raises(pos3.StoreError, match=r"TLS: the certificate of .* is not trusted .*option ca_bundle"):
            with pos3.mirror(cache_root=tmp_path / "cache", show_progress=False):
                pos3.download(f"s3://{bucket}/d", local=tmp_path / "d")
        assert time.monotonic() - started < 60
        assert proxy.count() == 0  # no request got through
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())
    with pytest.raises(ValueError, match="ca_bundle: no such file"):
        S3Backend(Profile(endpoint="https://127.0.0.1:1", options={"ca_bundle": str(tmp_path / "nope.pem")}), 4)
    closed = socket_port_closed()
    assert tls_problem(f"127.0.0.1:{closed}", None) is None  # refused: not a TLS problem


def socket_port_closed() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
