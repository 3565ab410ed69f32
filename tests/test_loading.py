"""Loading alone (chest.loading), over the parts a chest gives it (as in
tests/test_eviction.py): a value read back, taken back from flight or from
a holder elsewhere, read again when its key changed meanwhile."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from test_eviction import Parts

from chest.codec import open_many
from chest.errors import ValueFileError
from chest.loading import Loading


class Loaded(Parts):
    def __init__(self, folder, budget, on_miss=None, **kwargs):
        super().__init__(folder, budget, **kwargs)
        self.count = itertools.count(1000)
        self.loading = Loading(
            lock=self.lock, memory=self.memory, flight=self.flight, store=self.store,
            io=self.io, ledger=self.ledger, stats=self.stats, eviction=self.eviction,
            codec=self.codec, versions=self.versions, next_version=self.count,
            on_miss=on_miss)


@pytest.fixture
def parts(tmp_path):
    made = []

    def make(**kwargs):
        p = Loaded(tmp_path / f"c{len(made)}", **kwargs)
        made.append(p)
        return p

    yield make
    for p in made:
        p.store.drop()


def test_a_value_read_back_is_kept_clean_and_sized_once(parts):
    missed = []
    p = parts(budget=1000, on_miss=missed.append)
    p.set("k", {"a": 1}, 300)
    p.eviction.evict_next()
    kept: list = []
    value = p.loading.load("k", True, lambda: kept.append("k" in p.memory.values))
    assert value == {"a": 1} and kept == [True] and "k" in p.memory.values
    assert p.ledger.is_clean("k", value, p.store.files) and missed == ["k"]
    assert p.stats.misses == 1 and p.stats.reloads == 1
    size = p.memory.sizes["k"]
    p.eviction.evict_next()  # clean: no write
    assert p.stats.spills == 1
    p.loading.load("k", read=False)  # a prefetch: not a miss, no on_miss
    assert p.stats.misses == 1 and missed == ["k"] and p.memory.sizes["k"] == size
    assert p.loading.load("k", True, lambda: kept.append(0)) == {"a": 1}  # a hit
    assert p.stats.hits == 1 and kept == [True]  # (a hit keeps nothing new)


def test_a_missing_key_and_a_key_without_data(parts):
    p = parts(budget=1000)
    with pytest.raises(KeyError):
        p.loading.load("nope", read=True)
    p.versions["ghost"] = 1  # a key the store has no copy of
    with pytest.raises(ValueFileError, match="holds no data"):
        p.loading.load("ghost", read=True)


def test_a_value_in_flight_is_taken_back_and_its_write_backs_off(parts):
    p = parts(budget=1000)
    value = [1, 2, 3]
    p.set("k", value, 100)
    version = p.versions["k"]
    popped = p.memory.pop_next()
    p.flight.start("k", value, 100)  # (as an eviction outside the lock)
    kept: list = []
    got = p.loading.load("k", True, lambda: kept.append(1))
    assert got is value and not kept and popped[0] == "k"  # (never left memory)
    assert p.versions["k"] != version and "k" not in p.flight
    assert p.memory.sizes["k"] == 100  # counted as it left


def test_a_large_value_held_elsewhere_is_taken_back_unless_changed(parts):
    p = parts(budget=100_000)
    array = np.arange(20_000)  # 160 kB: over the budget, held by the caller
    p.set("a", array, array.nbytes)
    p.eviction.shrink()
    assert "a" in p.ledger.left
    kept: list = []
    got = p.loading.load("a", True, lambda: kept.append(1))
    assert got is array and kept == [1]
    p.eviction.shrink()
    array[0] = -1  # changed in place after it left: the file's value is read
    got = p.loading.load("a", read=True)
    assert got is not array and got[0] == 0


def test_a_key_set_while_its_value_was_read_is_read_again(parts, monkeypatch):
    p = parts(budget=1000)
    p.set("k", "old", 100)
    p.eviction.evict_next()
    read = p.io.read
    calls = []

    def set_meanwhile(key, filename, place=None):
        calls.append(1)
        if len(calls) == 1:  # another thread sets the key while it is read
            p.versions["k"] = next(p.count)
            p.set("k", "new", 100)
        return read(key, filename, place)

    monkeypatch.setattr(p.io, "read", set_meanwhile)
    assert p.loading.load("k", read=True) == "new"
    assert len(calls) == 1


def test_a_value_over_the_whole_budget_is_read_but_not_kept(parts):
    p = parts(budget=1000)
    p.set("big", b"x" * 5000, 5033)
    p.eviction.evict_next()
    kept: list = []
    value = p.loading.load("big", True, lambda: kept.append(1))
    assert value == b"x" * 5000 and not kept and not p.memory.values


def test_load_files_keeps_the_budget_as_it_goes(parts):
    p = parts(budget=2000)
    for i in range(10):
        p.set(i, b"%d" % i * 400, 433)
    p.eviction.shrink()
    on_disk = [k for k in range(10) if k not in p.memory.values]
    kept: list = []
    p.loading.load_files(on_disk, open_many, p.codec.load, "b", lambda: kept.append(1))
    assert p.memory.used <= 2000 and p.stats.reloads == len(on_disk) == len(kept)
    with pytest.raises(ValueFileError) as info:
        p.loading.load_files([on_disk[0], "gone"], open_many, p.codec.load, "b")
    assert info.value.key == "gone"


def test_kept_is_told_before_the_shrink_that_may_raise(parts):
    order = []
    p = parts(budget=500)
    p.set("k", b"x" * 400, 433)
    p.eviction.evict_next()
    p.set("other", b"y" * 400, 433)

    class Interrupted(BaseException):  # (a refusal is passed over; this is not)
        pass

    def refuse(action):
        order.append("shrink")
        raise Interrupted("Ctrl-C while the writer's lock is asked for")

    p.eviction._writable = lambda: refuse  # (as a chest whose lock is taken)
    p.eviction._guarded = lambda: lambda: True
    with pytest.raises(Interrupted):
        p.loading.load("k", True, lambda: order.append("kept"))
    assert order == ["kept", "shrink"] and "k" in p.memory.values


def test_a_read_that_a_close_cut_short_is_made_again(tmp_path):
    # A read is made outside the chest's lock; a close() in another thread
    # closed the packed engine under it, and the read failed with "the
    # packed values ... are closed" (ValueFileError) for a key that was there.
    from chest import Chest
    path = str(tmp_path / "c")
    c = Chest(path=path, packed="sqlite", available_memory=0)
    c["k"] = {"a": 1}
    c.flush()
    engines = c.store.engines
    read = engines.read
    closed = []

    def read_closed_under_it(key, place):
        engine = engines.engine(place[0])
        if not closed:  # (as close() in another thread does, once)
            closed.append(1)
            engines.close()
        try:
            data = engine.get(place[1])
        except Exception as e:
            raise ValueFileError(key, engines.path_of(place[0]), repr(e)) from e
        return read(key, place) if data is None else (data, 0.0)

    engines.read = read_closed_under_it
    try:
        assert c["k"] == {"a": 1} and closed == [1]
    finally:
        del engines.read
        c.close()
