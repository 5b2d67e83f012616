"""Pure unit tests: exclude patterns, URL parsing, profiles, key safety."""

from __future__ import annotations

import pytest

import pos3
from pos3.local import UnsafeKeyError, check_rel
from pos3.patterns import Excluder
from pos3.profiles import resolve
from pos3.urls import is_remote, parse


@pytest.mark.parametrize(
    ("pattern", "path", "excluded"),
    [
        ("*.log", "a.log", True),
        ("*.log", "deep/er/a.log", True),  # no '/' → any depth
        ("*.log", "a.log.txt", False),
        ("build", "build/x/y", True),  # a directory name excludes all below
        ("build", "src/build/y", True),
        ("/top.txt", "top.txt", True),  # leading '/' anchors at the root
        ("/top.txt", "sub/top.txt", False),
        ("docs/*.md", "docs/a.md", True),  # a '/' anchors too
        ("docs/*.md", "x/docs/a.md", False),
        ("docs/*.md", "docs/sub/a.md", False),  # '*' stays in one segment
        ("docs/**/*.md", "docs/sub/deeper/a.md", True),  # '**' crosses segments
        ("ckpt_*", "ckpt_10/model.pt", True),
    ],
)
def test_gitignore_semantics(pattern, path, excluded):
    assert Excluder([pattern]).file(path) is excluded


def test_negation_and_single_string():
    ex = Excluder(["*.tmp", "!keep.tmp"])
    assert ex.file("a.tmp") and not ex.file("keep.tmp")
    assert Excluder("*.tmp").file("x.tmp")
    assert not Excluder(None)


def test_directory_pruning():
    ex = Excluder(["logs/"])
    assert ex.directory("a/logs") and not ex.directory("a/log")


def test_parse_urls():
    u = parse("s3://bucket/a/b/")
    assert (u.scheme, u.bucket, u.key, u.dir_prefix) == ("s3", "bucket", "a/b/", "a/b/")
    assert parse("s3://bucket").key == "" and parse("s3://bucket").dir_prefix == ""
    assert parse("S3://bucket/k").scheme == "s3"
    assert parse("s3://bucket/data").dir_prefix == "data/"
    with pytest.raises(ValueError, match="bucket"):
        parse("s3://")
    assert parse("file:///mnt/nfs/data").bucket == "mnt"
    with pytest.raises(ValueError):
        parse("/local/path")
    assert is_remote("gs://b/k") and not is_remote("/tmp/x") and not is_remote("relative/dir")


@pytest.mark.parametrize("key", ["../x", "a/../../x", "a//b", "/abs", "a/./b", "a/", "a\0b", ""])
def test_unsafe_keys_are_refused(key):
    with pytest.raises(UnsafeKeyError, match="Refusing remote key"):
        check_rel(key, "prefix/" + key)


def test_safe_keys_pass():
    assert check_rel("a b/ü/..x/x..", "k") == "a b/ü/..x/x.."


def test_profile_repr_hides_secrets():
    p = pos3.Profile(local_name="p", options={"secret_access_key": "SUPERSECRET", "access_key_id": "AKIAXXX"})
    assert "SUPERSECRET" not in repr(p) and "AKIAXXX" not in repr(p) and "secret_access_key" in repr(p)
    assert "SUPERSECRET" not in str(p)


def test_register_profile_defaults_local_name_and_resolves():
    pos3.register_profile("unit-profile", endpoint="http://127.0.0.1:1", public=True)
    p = resolve("unit-profile")
    assert (p.local_name, p.endpoint, p.public) == ("unit-profile", "http://127.0.0.1:1", True)
    assert resolve(None).local_name == "_"
    with pytest.raises(ValueError, match="Unknown profile 'nope'"):
        resolve("nope")


def test_profile_local_name_must_be_one_segment():
    with pytest.raises(ValueError, match="single path segment"):
        pos3.Profile(local_name="../x")


def test_api_outside_mirror_raises():
    for call in (lambda: pos3.download("s3://b/k"), lambda: pos3.upload("s3://b/k"), lambda: pos3.ls("s3://b/")):
        with pytest.raises(RuntimeError, match="pos3.mirror"):
            call()
