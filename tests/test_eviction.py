"""Eviction alone (chest.eviction), over the parts a chest gives it: a memory
tier, values in flight, a store (files or packed), the ledger, a table of key
versions. No Chest here: what the eviction does is seen in those parts."""
from __future__ import annotations

import itertools
import os
import threading

import numpy as np
import pytest

import chest.eviction
from chest.codec import Codec
from chest.errors import ReadOnlyError
from chest.eviction import Eviction
from chest.flight import InFlight
from chest.ledger import Ledger
from chest.memory import MemoryTier
from chest.policy import LRU
from chest.session import Session
from chest.stats import Stats
from chest.store import Store
from chest.valueio import ValueIO


class Parts:
    """An eviction and the parts it moves values between."""

    def __init__(self, folder, budget, packed=None, dump=None, on_overflow=None,
                 readonly=False, writable=None):
        self.codec = Codec(dump) if dump else Codec()
        self.lock = threading.RLock()
        self.memory = MemoryTier(LRU(), budget)
        self.flight = InFlight()
        self.store = Store(str(folder), self.codec.dump, self.codec.load,
                           unbuffered=self.codec.default, packed=packed)
        self.io = ValueIO(self.codec, self.store, self.lock)
        self.ledger = Ledger(self.codec)
        self.stats = Stats()
        self.versions: dict = {}
        self.count = itertools.count()
        self.asked: list = []

        def ask(action):
            self.asked.append(action)
            if writable is not None:
                writable(action)

        self.eviction = Eviction(
            lock=self.lock, memory=self.memory, flight=self.flight, store=self.store,
            io=self.io, ledger=self.ledger, stats=self.stats,
            session=Session(str(folder)), versions=self.versions, path=str(folder),
            on_overflow=on_overflow,
            writable=ask, guarded=lambda: writable is not None,
            own_functions_only=True, readonly=readonly)

    def set(self, key, value, size):
        self.versions[key] = next(self.count)
        self.memory.keep(key, value, size)

    def read(self, key):
        place = self.store.slots.get(key)
        name = "" if place is not None else self.store.filename(key)
        return self.io.read(key, name, place)[0]


@pytest.fixture
def parts(tmp_path):
    made = []

    def make(**kwargs):
        p = Parts(tmp_path / f"c{len(made)}", **kwargs)
        made.append(p)
        return p

    yield make
    for p in made:
        p.store.drop()


def test_shrink_writes_the_least_recently_used_until_the_budget_holds(parts):
    p = parts(budget=250)
    for i in range(4):
        p.set(i, [i] * 10, 100)
    p.memory.touch(0)
    p.eviction.shrink()
    assert sorted(p.memory.values) == [0, 3] and p.memory.used == 200
    assert sorted(p.store.files) == [1, 2] and p.read(1) == [1] * 10
    assert p.stats.spills == 2 and p.ledger.spilled_sizes == {1: 100, 2: 100}
    assert p.ledger.is_clean(2, [2] * 10, p.store.files)


def test_a_value_its_file_holds_leaves_without_a_write(parts):
    p = parts(budget=1000)
    p.set("k", {"a": 1}, 100)
    assert p.eviction.evict_next() == 100 and p.stats.spills == 1
    value = p.read("k")
    p.memory.keep("k", value, 100)
    p.ledger.kept_read("k", 100, p.io.read("k", p.store.filename("k"))[3])
    assert p.eviction.evict_next() == 100 and p.stats.spills == 1  # no second write
    assert p.eviction.evict_next() == -1  # nothing left in memory


def test_a_value_that_cannot_be_written_stays_and_the_next_one_goes(parts):
    def dump(value, f):
        if value == "bad":
            raise TypeError("cannot dump 'bad'")
        Codec().dump(value, f)

    p = parts(budget=150, dump=dump)
    p.set("bad", "bad", 100)
    p.set("good", "good", 100)
    p.eviction.shrink()
    assert list(p.memory.values) == ["bad"] and "good" in p.store.files
    assert isinstance(p.ledger.unwritable["bad"], TypeError)
    assert not p.flight.values
    assert p.eviction.evict_next() == -1  # held: never picked again


def test_a_key_set_by_on_overflow_is_not_written(parts):
    p = None

    def on_overflow(key):
        p.versions[key] = next(p.count)  # set again meanwhile

    p = parts(budget=50, on_overflow=on_overflow)
    p.set("k", "old", 100)
    assert p.eviction.evict_next() == 100
    assert "k" not in p.store.files and p.stats.spills == 0


def test_a_write_whose_key_changed_meanwhile_is_discarded(parts, monkeypatch):
    p = parts(budget=50)
    p.set("k", np.zeros(10), 180)
    write_temp = p.io.write_temp

    def set_meanwhile(*args):
        written = write_temp(*args)
        p.versions["k"] = next(p.count)  # another thread set it
        return written

    monkeypatch.setattr(p.io, "write_temp", set_meanwhile)
    assert p.eviction.evict_next() == 180
    assert "k" not in p.store.files and p.stats.spills == 0
    assert not [n for n in os.listdir(p.store.path) if not n.startswith(".")]


@pytest.mark.parametrize("engine", ["sqlite", "lmdb"])
def test_small_values_are_packed_in_batches(parts, engine):
    p = parts(budget=2 * chest.eviction.PACK_BATCH, packed=engine)
    for i in range(400):
        p.set(i, b"x" * 1000, 1033)
    p.memory.budget = 10_000
    p.eviction.shrink()
    # Queued values count as left memory; a commit once a batch is full.
    assert p.memory.used <= 10_000
    committed = [k for k in range(400) if k in p.store.slots]
    assert committed and p.flight.queued_bytes < chest.eviction.PACK_BATCH
    assert len(committed) + len(p.flight.queued) + len(p.memory.values) == 400
    p.eviction.commit_packing(p.flight.take_queue())
    assert all(p.read(k) == b"x" * 1000 for k in range(400) if k not in p.memory.values)


def test_a_reader_lets_values_go_without_writing(parts):
    p = parts(budget=50, readonly=True)
    p.set("k", "v", 100)
    assert p.eviction.evict_next() == 100 and not p.memory.values
    assert not p.store.files and p.stats.spills == 0


def test_a_guarded_chest_is_asked_before_the_first_write(parts):
    def refuse(action):
        raise ReadOnlyError("/somewhere", action)

    p = parts(budget=50, writable=refuse)
    p.set("k", "v", 100)
    # Refused: it stays in memory, passed over (no other can leave).
    assert p.eviction.evict_next() == -1
    assert p.asked == ["write to disk"] and list(p.memory.values) == ["k"]
    assert isinstance(p.ledger.unwritable["k"], ReadOnlyError)


def test_the_chest_is_held_weakly(tmp_path):
    class Owner:
        def writable(self, action):
            pass

        def guarded(self):
            return True

    owner = Owner()
    e = Eviction(lock=threading.RLock(), memory=MemoryTier(LRU()), flight=InFlight(),
                 store=None, io=None, ledger=None, stats=Stats(),  # type: ignore
                 session=Session(str(tmp_path)), versions={}, path=str(tmp_path),
                 on_overflow=None,
                 writable=owner.writable, guarded=owner.guarded,
                 own_functions_only=True, readonly=False)
    assert e.guarded()
    del owner
    assert not e.guarded()
    e.writable("write")  # (gone: nothing to ask)
