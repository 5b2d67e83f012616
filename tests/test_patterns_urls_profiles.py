"""Pure unit tests: exclude patterns, key safety (URLs: test_urls.py; profiles: test_profiles.py)."""

from __future__ import annotations

import pytest

import pos3
from pos3.local import UnsafeKeyError, check_rel
from pos3.patterns import Excluder


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


@pytest.mark.parametrize("key", ["../x", "a/../../x", "a//b", "/abs", "a/./b", "a/", "a\0b", ""])
def test_unsafe_keys_are_refused(key):
    with pytest.raises(UnsafeKeyError, match="Refusing remote key"):
        check_rel(key, "prefix/" + key)


def test_safe_keys_pass():
    assert check_rel("a b/ü/..x/x..", "k") == "a b/ü/..x/x.."


def test_api_outside_mirror_raises():
    for call in (lambda: pos3.download("s3://b/k"), lambda: pos3.upload("s3://b/k"), lambda: pos3.ls("s3://b/")):
        with pytest.raises(RuntimeError, match="pos3.mirror"):
            call()
