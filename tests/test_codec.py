"""chest.codec: a chest's value format."""
from __future__ import annotations

import json
import pickle

import pytest

from chest import serialize
from chest.codec import Codec, open_many
from chest.fingerprint import bytes_token


def test_the_default_format_takes_the_fast_paths():
    codec = Codec()
    assert codec.default
    value = {"a": [1, 2.5, "x"], "b": None}
    assert codec.dumps(value) == serialize.dumps(value)
    assert codec.loads(codec.dumps(value)) == value


@pytest.mark.parametrize("mode", ["t", "b"])
def test_a_users_format_goes_through_an_in_memory_file(mode):
    if mode == "t":
        codec = Codec(json.dump, json.load, mode="t")
    else:
        codec = Codec(pickle.dump, pickle.load)
    assert not codec.default
    value = {"text": "caf\xe9 \U0001F600", "n": [1, 2]}
    data = codec.dumps(value)
    assert isinstance(data, bytes)
    assert codec.loads(data) == value
    if mode == "t":
        assert json.loads(data.decode("utf-8")) == value


def test_tokens_tell_a_value_unchanged():
    codec = Codec(json.dump, json.load, mode="t")
    value = {"a": [1, 2]}
    token = codec.token(value)
    assert token is not None and token == codec.token({"a": [1, 2]})
    assert token != codec.token({"a": [1, 3]})

    def refuse(value, f):
        raise TypeError("not today")

    assert Codec(refuse, json.load, mode="t").token({"a": [1]}) is None


def test_files_are_shared_only_between_the_same_formats():
    a, b = Codec(), Codec()
    text = Codec(json.dump, json.load, mode="t")
    assert a.reads_files_of(b) and b.reads_files_of(a)
    assert not a.reads_files_of(text) and not text.reads_files_of(a)


def test_a_bad_mode_is_named():
    with pytest.raises(ValueError, match="'x'"):
        Codec(mode="x")


def test_open_many_closes_every_file_it_opened(tmp_path):
    names = [str(tmp_path / f"{i}") for i in range(3)]
    for i, name in enumerate(names):
        with open(name, "w") as f:
            f.write(str(i))
    with open_many(names, "r") as files:
        assert [f.read() for f in files] == ["0", "1", "2"]
    assert all(f.closed for f in files)
    opened = []
    with pytest.raises(FileNotFoundError):
        with open_many(names[:2] + [str(tmp_path / "missing")]) as files:
            opened = files  # pragma: no cover - not reached
    assert opened == []


@pytest.mark.parametrize("mode", ["b", "t"])
def test_unchanged_knows_a_value_read_back_from_its_bytes(mode):
    codec = Codec() if mode == "b" else Codec(json.dump, json.load, mode="t")
    value = {"a": 1, "b": [1, 2]}
    token = bytes_token(codec.dumps(value))
    again = codec.loads(codec.dumps(value))
    assert codec.unchanged(token, again)
    again["b"].append(3)  # changed in place
    assert not codec.unchanged(token, again)


def test_unchanged_falls_back_to_dump_for_what_pickle_refuses():
    # A lambda: C's pickler refuses it, dump writes it with cloudpickle; the
    # check must compare with what dump writes, not give up.
    codec = Codec()
    value = [lambda x: x + 1]
    token = bytes_token(codec.dumps(value))
    assert codec.unchanged(token, value)
    assert not codec.unchanged(token, [lambda x: x + 2])


class Handle:
    """A class named with keep_in_memory after a value holding it was written."""

    def __init__(self, n):
        self.n = n

    def __eq__(self, other):
        return isinstance(other, Handle) and other.n == self.n


def test_unchanged_asks_dump_when_the_value_may_hold_a_class_bound_to_memory():
    codec = Codec()
    value = [Handle(1)]
    token = bytes_token(codec.dumps(value))   # written before the class was named
    assert codec.unchanged(token, value)
    serialize.keep_in_memory(Handle)  # (only this module's class)
    # Now dump refuses it: it is not "unchanged on disk", so eviction tries
    # to write it, fails, and keeps it in memory.
    assert not codec.unchanged(token, value)
