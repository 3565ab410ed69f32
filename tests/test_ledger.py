"""What a chest knows of its keys' stored copies (chest.ledger)."""
from __future__ import annotations

import gc
import json

import numpy as np

from chest.codec import Codec
from chest.fingerprint import bytes_token, fingerprint
from chest.ledger import Ledger
from chest.sizeof import nbytes


def token_of(value):
    return bytes_token(Codec().dumps(value))


def test_clean_only_while_the_file_holds_the_value_as_it_is():
    ledger = Ledger(Codec())
    value = {"a": [1, 2]}
    ledger.wrote("k", 300, token_of(value))
    assert ledger.is_clean("k", value, {"k": 40})
    value["a"].append(3)  # changed in place
    assert not ledger.is_clean("k", value, {"k": 40})
    assert not ledger.is_clean("k", {"a": [1, 2]}, {})  # no file: not clean
    ledger.wrote("k", 300, None)  # written, bytes not known
    assert not ledger.is_clean("k", {"a": [1, 2]}, {"k": 40})


def test_a_users_codec_decides_what_is_unchanged():
    codec = Codec(json.dump, json.load, mode="t")
    ledger = Ledger(codec)
    ledger.wrote("k", 100, codec.token({"n": 1}))
    assert ledger.is_clean("k", {"n": 1}, {"k": 8})
    assert not ledger.is_clean("k", {"n": 2}, {"k": 8})


def test_a_read_size_is_kept_for_the_same_bytes_only():
    ledger = Ledger(Codec())
    old, new = token_of([1]), token_of([2])
    ledger.kept_read("k", 88, old)
    assert ledger.read_size("k", old) == 88
    assert ledger.read_size("k", new) is None and ledger.read_size("k", None) is None
    ledger.wrote("k", 90, new)  # written again: the old size goes
    assert ledger.read_size("k", new) is None
    ledger.kept_read("k", 91, new)
    ledger.changed("k")
    assert ledger.read_size("k", new) is None and "k" not in ledger.tokens
    assert ledger.spilled_sizes == {"k": 90}


def test_a_registered_sizing_drops_the_sizes_kept():
    ledger = Ledger(Codec())
    t = token_of([1])
    ledger.kept_read("k", 88, t)

    class Registered:
        pass

    nbytes.register(Registered)(lambda x: 1)
    assert ledger.read_size("k", t) is None
    ledger.kept_read("k", 89, t)
    assert ledger.read_size("k", t) == 89


def test_a_value_read_without_a_token_is_fingerprinted():
    ledger = Ledger(Codec())
    array = np.arange(10)
    ledger.kept_read("a", 200, None, array)
    assert ledger.tokens["a"] == fingerprint(array) and ledger.read_size("a", fingerprint(array)) == 200
    ledger.kept_read("b", 200, None, object())  # no fingerprint: nothing known
    assert "b" not in ledger.tokens


def test_a_large_value_let_go_is_held_weakly_while_others_hold_it():
    ledger = Ledger(Codec())
    big = np.zeros(100_000)
    ledger.let_go("big", big, big.nbytes)
    ledger.let_go("small", np.zeros(10), 80)  # small: read again instead
    ledger.let_go("list", [0] * 100_000, 800_056)  # no weak reference: passed over
    assert list(ledger.left) == ["big"] and ledger.left["big"] is big
    del big
    gc.collect()
    assert not ledger.left


def test_forget_and_clear():
    ledger = Ledger(Codec())
    ledger.wrote("k", 10, token_of(1))
    ledger.unwritable["k"] = OSError("full")
    ledger.forget("k")
    assert not ledger.tokens and not ledger.unwritable
    assert ledger.spilled_sizes == {"k": 10}  # (goes with its file)
    ledger.clear()
    assert not ledger.spilled_sizes
