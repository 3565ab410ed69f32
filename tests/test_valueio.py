"""One value written out of sight and read back (chest.valueio), over every
way a value goes: a packed slot, a small file, a streamed file, the journal,
a dump of the user's."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

import chest.valueio
from chest.codec import Codec
from chest.errors import ValueFileError
from chest.fingerprint import fingerprint
from chest.files import Written
from chest.store import Packed, Store
from chest.valueio import PACKED_LIMIT, ValueIO


@pytest.fixture
def make_io(tmp_path):
    stores = []

    def make(packed=None, codec=None, packed_limit=PACKED_LIMIT, journal=False):
        codec = codec or Codec()
        store = Store(str(tmp_path / f"c{len(stores)}"), codec.dump, codec.load,
                      open=codec.open, mode=codec.mode, unbuffered=codec.default,
                      packed=packed, journal=journal)
        stores.append(store)
        return ValueIO(codec, store, threading.RLock(), packed_limit)

    yield make
    for store in stores:
        store.drop()


def round_trip(io, key, value, size):
    written, token = io.write_temp(key, None, value, size)
    io.store.commit(key, written)
    place = io.store.slots.get(key)
    filename = "" if place is not None else io.store.filename(key)
    back, read, seconds, again = io.read(key, filename, place)
    return written, token, back, read, again


@pytest.mark.parametrize("engine", ["sqlite", "lmdb"])
def test_a_small_value_goes_to_a_slot_and_back_with_the_same_token(make_io, engine):
    io = make_io(packed=engine)
    written, token, back, read, again = round_trip(io, "k", {"a": 1}, 232)
    assert isinstance(written, Packed) and "k" in io.store.slots
    assert back == {"a": 1} and token is not None and again == token
    assert read == written.size


def test_a_pickle_over_the_packed_limit_gets_a_file_of_its_own(make_io):
    io = make_io(packed="sqlite", packed_limit=100)
    written, token, back, _, again = round_trip(io, "k", b"x" * 500, 533)
    assert isinstance(written, Written) and "k" not in io.store.slots
    assert back == b"x" * 500 and again == token


def test_without_an_engine_nothing_packs(make_io):
    io = make_io()
    assert not io.packs(10)
    written, token, back, _, again = round_trip(io, "k", [1, 2], 72)
    assert isinstance(written, Written) and back == [1, 2] and again == token


def test_a_broken_engine_packs_nothing_more(make_io):
    io = make_io(packed="sqlite")
    assert io.packs(100) and not io.packs(chest.valueio.SMALL_VALUE + 1)
    io.store.broken["sqlite"] = OSError("damaged")
    assert not io.packs(100)


@pytest.mark.parametrize("large", [False, True])
def test_an_array_is_streamed_with_its_fingerprint(make_io, monkeypatch, large):
    if large:  # fingerprinted on another thread while it is written
        monkeypatch.setattr(chest.valueio, "LARGE_VALUE", 10_000)
    io = make_io(packed="sqlite")
    value = np.arange(20_000)
    written, token, back, _, again = round_trip(io, "a", value, value.nbytes)
    assert isinstance(written, Written)
    assert token == fingerprint(value) and np.array_equal(back, value)
    assert again is None  # (a large file is not hashed as it is read)


def test_a_dump_of_the_users_is_read_back_with_the_codecs_token(make_io):
    io = make_io(codec=Codec(json.dump, json.load, mode="t"))
    value = {"a": [1, 2]}
    written, token, back, _, again = round_trip(io, "k", value, 300)
    assert back == value and token == fingerprint(value)
    assert again is not None and again == io.codec.token(value)


def test_a_value_in_the_journal_is_read_from_its_place(make_io):
    io = make_io(packed="sqlite", journal=True)
    data = io.codec.dumps({"n": 5})
    io.store.write_through("k", data)
    place = ("journal", *io.store.journaled["k"])
    assert place[0] == chest.valueio.IN_JOURNAL
    value, read, _, token = io.read("k", "", place)
    assert value == {"n": 5} and read == len(data) and token is not None


def test_damaged_bytes_raise_an_error_naming_key_and_file(make_io):
    io = make_io(packed="sqlite")
    written, _ = io.write_temp("k", None, b"payload" * 10, 103)
    io.store.commit("k", written)
    engine = io.store.slots["k"][0]
    with pytest.raises(ValueFileError, match="'k'") as info:
        io.read("k", "", (engine, 10**9))  # no such slot
    assert io.store.packed_path(engine) in str(info.value)
    plain = make_io()
    written, _ = plain.write_temp("f", None, [1], 72)
    plain.store.commit("f", written)
    with open(plain.store.filename("f"), "wb") as f:
        f.write(b"not a pickle")
    with pytest.raises(ValueFileError, match="'f'") as info:
        plain.read("f", plain.store.filename("f"))
    assert plain.store.filename("f") in str(info.value)
