"""Values in flight: the books, and a chest that reads a value back while
its write is under way."""
from __future__ import annotations

import pickle

import pytest

from chest import Chest
from chest.flight import InFlight


def test_a_value_landed_or_taken_back_is_no_longer_in_flight():
    flight = InFlight()
    a, b = [1], [2]
    flight.start("a", a, 56)
    flight.start("b", b, 56)
    assert flight.is_current("a", a) and not flight.is_current("a", b)
    assert not flight.is_current("c", None)  # not in flight: never current
    flight.landed("a")
    assert "a" not in flight and len(flight) == 1
    assert flight.take_back("b") == (b, 56, None) and not flight
    with pytest.raises(KeyError):
        flight.take_back("b")


def test_the_queue_keeps_one_pickle_a_key_and_counts_its_bytes():
    flight = InFlight()
    value = {"x": 1}
    flight.start("k", value, 100)
    assert flight.queue("k", value, 100, 1, b"12345") == 5
    assert flight.queue("k", value, 100, 2, b"123") == 3  # evicted again
    flight.start("j", 0, 28)
    assert flight.queue("j", 0, 28, 3, b"77") == 5
    flight.discard("j")                                 # set or deleted
    assert list(flight.queued) == ["k"] and flight.queued_bytes == 3
    batch = flight.take_queue()
    assert [(key, version) for key, _, _, version, _ in batch] == [("k", 2)]
    assert flight.queued_bytes == 0 and "k" in flight  # still in flight
    flight.clear()
    assert not flight and not flight.queued


def test_a_value_taken_back_comes_with_its_queued_pickle():
    flight = InFlight()
    value = {"x": 1}
    flight.start("k", value, 100)
    flight.queue("k", value, 100, 1, b"12345")
    # The key's value as it left, and the size it was counted with.
    assert flight.take_back("k") == (value, 100, b"12345")
    assert not flight and not flight.queued and flight.queued_bytes == 0


class ReadBackWhileWriting:
    """A ``dump`` that reads the key back through the chest while it
    writes it (the lock is released during the write, as another thread
    would find it)."""

    def __init__(self, key):
        self.key, self.chest, self.seen = key, None, []

    def __call__(self, value, f):
        if self.chest is not None and value is None and not self.seen:
            self.seen.append(self.chest[self.key])
        pickle.dump(value, f, protocol=5)


@pytest.mark.parametrize("value_read_back", [None, 0])
def test_a_value_read_back_during_its_write_stays_in_memory(tmp_path, value_read_back):
    # None used to be mistaken for "still in flight" (dict.get's default),
    # and the write's commit then failed with a KeyError.
    dump = ReadBackWhileWriting("k")
    c = Chest(path=str(tmp_path / "c"), available_memory=90, dump=dump,
              load=pickle.load)
    dump.chest = c
    c["k"] = value_read_back
    c["big"] = b"x" * 50                       # pushes k out: written
    if value_read_back is None:
        assert dump.seen == [None]             # read back mid-write
    assert c["k"] == value_read_back
    c.flush()
    c.close()
    again = Chest(path=str(tmp_path / "c"), dump=pickle.dump, load=pickle.load)
    assert again["k"] == value_read_back and again["big"] == b"x" * 50
    again.close()
