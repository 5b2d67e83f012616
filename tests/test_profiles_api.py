"""Profiles through the API against SeaweedFS: URL profiles, the profiles file, isolation, name conflicts."""

from __future__ import annotations

from pathlib import Path

import pytest

import pos3
from helpers import local_tree, put, remote_tree, write
from pos3 import profiles
from pos3.profiles import Profile
from pos3.stores.s3 import S3Backend

Q = {"show_progress": False}


@pytest.fixture(autouse=True)
def registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A fresh code registry per test, and a profiles file path of this test's own."""
    monkeypatch.setattr(profiles, "_registered", {})
    path = tmp_path / "conf" / "profiles.toml"
    monkeypatch.setenv("POS3_PROFILES_FILE", str(path))
    return path


def write_profiles(path: Path, s3_server, name: str = "acme", creds: str | None = None) -> None:
    """A profiles file with ``name`` reaching the server, its secret in a credentials file beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = f'endpoint = "{s3_server.endpoint}"\nregion = "us-east-1"\ncredentials_file = "{name}.creds"\n'
    path.write_text(f"[profiles.{name}]\n{entry}")
    if creds is None:
        creds = (
            f"[{name}]\naws_access_key_id = {s3_server.access_key}\naws_secret_access_key = {s3_server.secret_key}\n"
        )
    (path.parent / f"{name}.creds").write_text(creds)


def hostile_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Ambient AWS configuration that breaks every client built from it: a missing AWS_PROFILE, bogus keys."""
    config = tmp_path / "aws-config"
    config.write_text("[profile other]\nregion = xx-nowhere-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_PROFILE", "nope-missing")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "bogus-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "bogus-secret")
    monkeypatch.setenv("AWS_REGION", "xx-nowhere-1")


def test_a_url_profile_selects_the_profile_and_wins_over_the_argument(s3, s3_server, bucket, cache, monkeypatch):
    put(s3, bucket, {"d/a": b"1", "d/sub/b": b"2"})
    pos3.register_profile(
        "weed", endpoint=s3_server.endpoint, access_key=s3_server.access_key, secret_key=s3_server.secret_key
    )
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")  # the default profile can no longer sign
    anon = Profile(local_name="anon", endpoint=s3_server.endpoint, public=True)  # cannot read this bucket
    with pos3.mirror(cache_root=cache, **Q):
        path = pos3.download(f"s3://weed@{bucket}/d", profile=anon)
        assert path == cache / "weed" / bucket / "d" and local_tree(path) == {"a": b"1", "sub/b": b"2"}
        listed = pos3.ls(f"s3://weed@{bucket}/d")
        assert listed == [f"s3://weed@{bucket}/d/a", f"s3://weed@{bucket}/d/sub/"]  # the user's form: it round-trips
        assert pos3.download(listed[0]) == cache / "weed" / bucket / "d" / "a"
        put(s3, bucket, {"d/new": b"3"})
        plan = pos3.plan_download(f"s3://weed@{bucket}/d")  # a plan is returned too: its URLs round-trip
        assert plan.to_copy == [(f"s3://weed@{bucket}/d/new", str(cache / "weed" / bucket / "d" / "new"))]
        out = pos3.upload(f"s3://weed@{bucket}/out", interval=None)
        write(out, {"r": b"result"})
        with pytest.raises(FileNotFoundError) as info:
            pos3.download(f"s3://weed@{bucket}/missing")
        assert f"s3://{bucket}/missing" in str(info.value) and "weed@" not in str(info.value)
        with pytest.raises(PermissionError):
            pos3.download(f"s3://{bucket}/d", local=cache / "default")  # proves the default profile was not used
    assert remote_tree(s3, bucket, "out/") == {"r": b"result"}


def test_an_unknown_url_profile_never_falls_back_to_the_default_credentials(s3, bucket, cache):
    put(s3, bucket, {"d/a": b"1"})  # the default profile (the test server's env) could read this
    with pos3.mirror(cache_root=cache, **Q):
        for call in (pos3.download, pos3.upload, pos3.sync, pos3.ls):
            with pytest.raises(ValueError, match="Unknown profile 'ghost'"):
                call(f"s3://ghost@{bucket}/d")
    assert [p for p in cache.iterdir() if not p.name.startswith(".")] == []  # no cache directory was made
    assert remote_tree(s3, bucket) == {"d/a": b"1"}


def test_the_profiles_file_and_its_credentials_file(s3, s3_server, bucket, cache, registry):
    put(s3, bucket, {"d/a": b"1"})
    write_profiles(registry, s3_server)
    with pos3.mirror(cache_root=cache, **Q):
        assert local_tree(pos3.download(f"s3://acme@{bucket}/d")) == {"a": b"1"}
        write(pos3.upload(f"s3://{bucket}/up", profile="acme", interval=None), {"u": b"2"})
    assert remote_tree(s3, bucket, "up/") == {"u": b"2"}
    assert (cache / "acme" / bucket / "d" / "a").read_bytes() == b"1"


def test_the_profiles_file_under_xdg_config_home(s3, s3_server, bucket, cache, tmp_path, monkeypatch):
    put(s3, bucket, {"d/a": b"1"})
    monkeypatch.delenv("POS3_PROFILES_FILE")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    write_profiles(tmp_path / "xdg" / "pos3" / "profiles.toml", s3_server, name="lab")
    with pos3.mirror(cache_root=cache, default_profile="lab", **Q):
        assert pos3.download(f"s3://{bucket}/d") == cache / "lab" / bucket / "d"


def test_a_file_profile_ignores_hostile_ambient_aws_configuration(
    s3, s3_server, bucket, cache, registry, tmp_path, monkeypatch
):
    put(s3, bucket, {"d/a": b"1"})
    write_profiles(registry, s3_server)
    hostile_aws_env(monkeypatch, tmp_path)
    with pos3.mirror(cache_root=cache, **Q):
        assert local_tree(pos3.download(f"s3://acme@{bucket}/d")) == {"a": b"1"}
        write(pos3.upload(f"s3://acme@{bucket}/up", interval=None), {"u": b"2"})
    assert remote_tree(s3, bucket, "up/") == {"u": b"2"}
    with pos3.mirror(cache_root=cache, **Q), pytest.raises(Exception, match="nope-missing"):  # noqa: PT011
        pos3.download(f"s3://{bucket}/d", local=tmp_path / "default")  # the environment is hostile indeed


def test_explicit_keys_ignore_the_endpoint_and_region_of_the_environment(monkeypatch):
    """No request: the client a keyed profile builds is configured from the profile alone."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:2")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    keyed = S3Backend(Profile(local_name="k", access_key="AK", secret_key="SK"), 2)
    assert "127.0.0.1" not in keyed.client.meta.endpoint_url and keyed.client.meta.region_name != "eu-west-3"
    assert keyed.client._request_signer._credentials.access_key == "AK"
    default = S3Backend(Profile(), 2)  # the default profile keeps boto3's chain
    assert default.client.meta.endpoint_url == "http://127.0.0.1:2" and default.client.meta.region_name == "eu-west-3"


def test_an_endpoint_profile_without_keys_signs_with_env_keys_only(s3, s3_server, bucket, cache, monkeypatch):
    put(s3, bucket, {"d/a": b"1"})
    plain = Profile(local_name="plain", endpoint=s3_server.endpoint)
    with pos3.mirror(cache_root=cache, **Q):
        assert local_tree(pos3.download(f"s3://{bucket}/d", profile=plain)) == {"a": b"1"}
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    creds = cache.parent / "aws-credentials"
    creds.write_text(
        f"[default]\naws_access_key_id = {s3_server.access_key}\naws_secret_access_key = {s3_server.secret_key}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))  # ~/.aws is not read for this profile
    with pos3.mirror(cache_root=cache, **Q), pytest.raises(ValueError, match="'plain' .* has no credentials"):
        pos3.download(f"s3://{bucket}/d", profile=plain, local=cache / "again")
    assert not (cache / "again").exists()


def test_broken_credentials_never_fall_back_to_ambient_ones(s3, s3_server, bucket, cache, registry):
    put(s3, bucket, {"d/a": b"1"})  # the ambient (test server) credentials could read this
    write_profiles(registry, s3_server, creds=f"[acme]\naws_access_key_id = {s3_server.access_key}\n")
    with pos3.mirror(cache_root=cache, **Q):
        with pytest.raises(ValueError, match=f"{registry}.*needs both"):
            pos3.download(f"s3://acme@{bucket}/d")
        (registry.parent / "acme.creds").unlink()
        with pytest.raises(ValueError, match=r"acme\.creds does not exist"):
            pos3.download(f"s3://{bucket}/d", profile="acme")
    assert [p for p in cache.iterdir() if not p.name.startswith(".")] == []  # no cache directory was made


def test_two_profiles_with_one_local_name_in_a_mirror(s3, s3_server, bucket, cache):
    put(s3, bucket, {"d/a": b"1"})
    keyed = Profile(
        local_name="dup", endpoint=s3_server.endpoint, access_key=s3_server.access_key, secret_key=s3_server.secret_key
    )
    anon = Profile(local_name="dup", endpoint=s3_server.endpoint, public=True)
    with pos3.mirror(cache_root=cache, **Q):
        path = pos3.download(f"s3://{bucket}/d", profile=keyed)
        with pytest.raises(ValueError, match="local_name 'dup' is already used in this mirror"):
            pos3.download(f"s3://{bucket}/d", profile=anon, local=cache / "elsewhere")
    assert local_tree(path) == {"a": b"1"} and not (cache / "elsewhere").exists()
