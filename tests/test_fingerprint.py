"""fingerprint: detects in-place changes of arrays; trusts immutables only."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from chest.fingerprint import IMMUTABLE, bytes_token, fingerprint, unchanged


@pytest.mark.parametrize("value", [None, 1, 2.5, "s", b"b", (1, "a"),
                                   frozenset({1}), np.float32(1), True])
def test_immutables(value):
    assert fingerprint(value) is IMMUTABLE


@pytest.mark.parametrize("value", [[1], {"a": 1}, {1}, (1, [2]), object()])
def test_unknown_mutables_have_no_token(value):
    assert fingerprint(value) is None


@pytest.mark.parametrize("make", [
    lambda: np.arange(100.0),
    lambda: np.asfortranarray(np.ones((10, 10))),
    lambda: np.zeros(5, dtype="i1"),
])
def test_array_changes_change_the_token(make):
    x = make()
    before = fingerprint(x)
    assert fingerprint(x.copy(order="K")) == before
    x.flat[3] = 7
    assert fingerprint(x) != before


def test_reshape_in_place_changes_the_token():
    x = np.arange(12)
    before = fingerprint(x)
    x.shape = (3, 4)
    assert fingerprint(x) != before


def test_non_contiguous_and_object_arrays_have_no_token():
    assert fingerprint(np.ones((10, 10))[:, ::2]) is None
    assert fingerprint(np.array([1, "a"], dtype=object)) is None


def test_unchanged_hashes_an_array_once(monkeypatch):
    import chest.fingerprint as module

    x = np.arange(1000.0)
    token = fingerprint(x)
    calls = []
    real = module.xxhash.xxh3_64_intdigest
    monkeypatch.setattr(module.xxhash, "xxh3_64_intdigest",
                        lambda data: calls.append(1) or real(data))
    assert unchanged(token, x, pickle.dumps)
    assert len(calls) == 1  # eviction of a clean array costs one pass over it
    x[0] = -1
    assert not unchanged(token, x, pickle.dumps)


def test_unchanged_small_values_compare_their_pickle():
    value = {"a": [1, 2]}
    token = bytes_token(pickle.dumps(value, protocol=5))
    assert unchanged(token, value, lambda v: pickle.dumps(v, protocol=5))
    value["a"].append(3)
    assert not unchanged(token, value, lambda v: pickle.dumps(v, protocol=5))
