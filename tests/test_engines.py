"""The packed engines of one folder and their slots (chest.engines), over
both engines."""
from __future__ import annotations

import threading

import pytest

from chest.engines import Engines
from chest.errors import ValueFileError
from chest.packed import ENGINES

ENGINE_NAMES = sorted(ENGINES)


@pytest.fixture
def make_engines(tmp_path):
    made = []

    def make(**kwargs):
        e = Engines(str(tmp_path), **kwargs)
        made.append(e)
        return e

    yield make
    for e in made:
        e.close()


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_slot_numbers_are_never_given_twice_across_threads(make_engines, name):
    engines = make_engines()
    places: list = []

    def write(i):
        for j in range(20):
            if j % 2:
                places.append(engines.put(name, b"%d-%d" % (i, j)).place)
            else:
                places.extend(p.place for p in engines.put_many(name, [b"a", b"b"]))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    numbers = [n for _, n in places]
    assert len(numbers) == len(set(numbers)) == 4 * 30
    assert engines.next_slot == max(numbers) + 1


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_a_missing_slot_raises_naming_the_database_and_the_slot(make_engines, name):
    engines = make_engines()
    with pytest.raises(ValueFileError, match="slot 7 is missing") as info:
        engines.read("k", (name, 7))
    assert engines.path_of(name) in str(info.value) and "'k'" in str(info.value)
    engines.put(name, b"x")
    reader = make_engines(readonly=True)
    with pytest.raises(ValueFileError, match="reopen the chest"):
        reader.read("k", (name, 99))


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_sizes_and_slots_written_since_the_mark(make_engines, name):
    engines = make_engines()
    engines.put_many(name, [b"1", b"22", b"333"])
    engines.mark = 2
    assert engines.written_since_mark(name) == {2: 2, 3: 3}
    assert engines.size((name, 1)) == 1 and engines.size((name, 3)) == 3
    assert engines.delete(name, [3]) and engines.size((name, 1)) == 1
    engines.opened()  # what was scanned is read again
    assert engines.written_since_mark(name) == {2: 2}
    other = [n for n in ENGINE_NAMES if n != name][0]
    assert engines.written_since_mark(other) == {}  # no file: nothing, no file made
    assert not engines.exists(other)


def test_a_damaged_database_is_recorded_and_deleting_never_raises(make_engines, caplog):
    engines = make_engines()
    engines.put("sqlite", b"x")
    engines.close()
    with open(engines.path_of("sqlite"), "r+b") as f:
        f.write(b"garbage" * 100)
    engines.mark = 0
    assert engines.written_since_mark("sqlite") == {}
    assert "sqlite" in engines.broken
    assert engines.delete("sqlite", [1]) is False
    assert engines.size(("sqlite", 1)) is None


def test_before_first_open_is_called_before_each_engine_opens(make_engines):
    calls = []
    engines = make_engines(before_first_open=lambda: calls.append(1))
    engines.put("sqlite", b"x")
    engines.put("sqlite", b"y")
    assert calls == [1]
    engines.close()
    assert engines.read("k", ("sqlite", 1))[0] == b"x"  # opened again on use
    assert calls == [1, 1]
