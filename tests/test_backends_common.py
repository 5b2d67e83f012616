"""The listing-order helper of the Azure store (no server needed)."""

from __future__ import annotations

import random

import pytest

from pos3 import ObjectMeta
from pos3_backends._common import utf8_order

ALPHABET = ["a", "b", "/", "\u00e9", "\ud7ff", "\ue000", "\uff5e", "\uffff", "\U00010000", "\U0001f600", "\U0010ffff"]


def metas(keys):
    return [ObjectMeta(k, 0) for k in keys]


def utf16(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


@pytest.mark.parametrize("seed", range(30))
def test_utf16_and_utf8_listings_come_out_in_utf8_order(seed):
    rng = random.Random(seed)
    keys = {"".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 5))) for _ in range(200)}
    expected = sorted(keys)  # code point order == UTF-8 byte order
    assert expected == sorted(keys, key=lambda k: k.encode("utf-8"))
    for listing in (sorted(keys, key=utf16), expected):
        assert [m.key for m in utf8_order(metas(listing))] == expected


def test_plain_keys_stream_without_being_held():
    seen = []

    def source():
        for k in ["a", "b", "c"]:
            seen.append(k)
            yield ObjectMeta(k, 0)

    out = utf8_order(source())
    assert next(out).key == "a" and seen == ["a"]


def test_any_other_disorder_passes_through_for_the_engine_to_detect():
    assert [m.key for m in utf8_order(metas(["b", "a", "c"]))] == ["b", "a", "c"]
