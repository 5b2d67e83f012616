"""URL parsing and the URL-or-local-path rule: pure unit tests (no I/O), then a few through the API."""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest

import pos3
from pos3.plugins import PluginError
from pos3.urls import RemoteURL, is_url, parse


def test_parse_urls():
    u = parse("s3://bucket/a/b/")
    assert (u.scheme, u.bucket, u.key, u.dir_prefix, u.profile) == ("s3", "bucket", "a/b/", "a/b/", None)
    assert parse("s3://bucket").key == "" and parse("s3://bucket").dir_prefix == ""
    assert parse("s3://bucket/").key == ""
    assert parse("S3://bucket/k").scheme == "s3"
    assert parse("s3://bucket/data").dir_prefix == "data/"
    assert parse("gs://my_bucket.v2/k").bucket == "my_bucket.v2"
    assert parse("az://$web/index.html").bucket == "$web"
    assert parse("s3://b/key with spaces/ü?#").key == "key with spaces/ü?#"  # keys are taken verbatim


def test_rooted_file_urls():
    u = parse("file:///mnt/nfs/data")
    assert (u.bucket, u.key, u.rooted, str(u)) == ("mnt", "nfs/data", True, "file:///mnt/nfs/data")
    assert parse("file:///My Drive/x").bucket == "My Drive"  # a directory name, not a bucket name
    assert parse("file://tmp/x") == RemoteURL("file", "tmp", "x")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "Empty location"),
        ("   ", "Empty location"),
        ("s3:/bucket/data", "expected s3://bucket/key; a pathlib.Path merges '//'"),
        ("s3:bucket/data", r"expected s3://bucket/key$"),
        ("s3:///k", "no bucket between s3:// and '/'"),
        ("s3://", "no bucket"),
        ("s3:///", "no bucket"),
        ("s3://a b/k", "not a valid bucket name"),
        ("s3://bucket?x=1", "not a valid bucket name"),
        ("s3://.hidden/k", "not a valid bucket name"),
        ("s3://@bucket/k", "empty profile name"),
        ("s3://:x@bucket/k", "password in a URL is not supported"),
        ("s3://user:pw@bucket/k", "password in a URL is not supported"),
        ("s3://a@b@c/k", "not a valid bucket name"),
        ("s3://%20@bucket/k", "not a profile name"),
        ("file:///", "no valid directory"),
        ("file:///../x", "no valid directory"),
        (" s3://bucket/k", "starts with whitespace"),
    ],
)
def test_malformed_urls_raise_one_clear_error(url, message):
    with pytest.raises(ValueError, match=message) as info:
        parse(url)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "value",
    ["s3://b/k", "gs://b", "s3:/b/k", "file:///x", "mem://b/", "x-y.z+w://b", " s3://b", "data:/v1"],
)
def test_meant_as_a_url(value):
    assert is_url(value)


def test_a_registered_scheme_without_slashes_is_a_mistyped_url():
    assert is_url("s3:bucket/k", schemes={"s3", "gs"}) and is_url("GS:b", schemes={"s3", "gs"})
    assert not is_url("run:1/x", schemes={"s3", "gs"})


@pytest.mark.parametrize(
    "value",
    ["/tmp/x", "rel/dir", "~/data", "run:1/x", "s3:b", "C:\\data", "C:/data", "2024-01-01T10:00/x", ".", "a/s3://b"],
)
def test_meant_as_a_local_path(value):
    assert not is_url(value)
    assert not is_url(Path(value))


def test_a_path_object_holding_a_collapsed_url_is_a_url():
    assert is_url(Path("s3://bucket/data"))  # str() is 's3:/bucket/data'
    with pytest.raises(ValueError, match="pathlib.Path merges"):
        parse(str(Path("s3://bucket/data")))


def test_profile_in_userinfo():
    u = parse("s3://acme@bucket/data/")
    assert (u.profile, u.bucket, u.key) == ("acme", "bucket", "data/")
    assert str(u) == "s3://bucket/data/"  # what logs, progress bars and errors show
    assert u.qualified == "s3://acme@bucket/data/"  # what ls returns: it round-trips
    assert u.with_key("data/x").qualified == "s3://acme@bucket/data/x"
    assert parse(u.qualified) == u
    assert parse("s3://a/b@c/k") == RemoteURL("s3", "a", "b@c/k")  # an '@' after the bucket is part of the key
    f = parse("file://team.nfs@/mnt/share/x")
    assert (f.profile, f.bucket, f.key, f.rooted, f.qualified) == (
        "team.nfs",
        "mnt",
        "share/x",
        True,
        "file://team.nfs@/mnt/share/x",
    )


# -- through the API: every bad location fails before any request, nothing passes through as a local path


@pytest.mark.reliability(
    "An empty string, a malformed URL, an unknown scheme or profile: one short error, never a local path",
    group="Hostile input",
)
@pytest.mark.parametrize(
    "bad", ["", "s3:/bucket/data", "s3:bucket/data", "s3:///k", "s3://", "s3://@bucket/k", "s3://Bad Bucket/k"]
)
def test_api_refuses_malformed_locations(tmp_path, bad):
    with pos3.mirror(cache_root=tmp_path / "cache", show_progress=False):
        for call in (pos3.download, pos3.upload, pos3.sync, pos3.ls):
            with pytest.raises(ValueError) as info:
                call(bad)
            assert _own_frames(info.value) == []  # the message, not a walk through pos3's internals
    assert [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")] == []  # no cache directory


@pytest.mark.reliability(
    "An empty string, a malformed URL, an unknown scheme or profile: one short error, never a local path",
    group="Hostile input",
)
def test_api_unknown_scheme_lists_the_known_ones(tmp_path):
    with pos3.mirror(cache_root=tmp_path, show_progress=False):
        with pytest.raises(PluginError, match=r"nope://.*s3://") as info:
            pos3.download("nope://bucket/key")
    assert _own_frames(info.value) == []


@pytest.mark.reliability(
    "An empty string, a malformed URL, an unknown scheme or profile: one short error, never a local path",
    group="Hostile input",
)
def test_api_unknown_profile_is_one_short_error(tmp_path):
    with pos3.mirror(cache_root=tmp_path, show_progress=False), pytest.raises(ValueError, match="nosuch") as info:
        pos3.download("s3://nosuch@bucket/key")
    assert _own_frames(info.value) == []


def _own_frames(exc: BaseException) -> list[str]:
    """The frames of pos3's modules in ``exc``'s printed traceback (the API boundary excepted)."""
    lines = traceback.format_exception(exc)
    return [line for line in lines if "/pos3/" in line and "File" in line and "errors.py" not in line]


def test_api_local_paths_pass_through_unchanged(tmp_path):
    with pos3.mirror(cache_root=tmp_path / "cache", show_progress=False):
        assert pos3.download(str(tmp_path / "d")) == tmp_path / "d"
        assert pos3.download("relative/x") == Path("relative/x")
        assert pos3.download("run:1/x") == Path("run:1/x")
        assert pos3.upload(tmp_path / "u") == tmp_path / "u"
