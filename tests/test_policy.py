"""Eviction policies: exact order with lazy, O(1) hits."""
from __future__ import annotations

import random

import pytest

from chest.policy import LRU, CleanFirst, LargestFirst, make_policy


def reference_order(sizes, uses, largest):
    """Keys in eviction order, computed directly."""
    return sorted(sizes, key=lambda k: ((-sizes[k] if largest else 0), uses[k]))


@pytest.mark.parametrize("cls", [LargestFirst, LRU])
def test_matches_a_direct_computation(cls):
    rng = random.Random(1)
    p = cls()
    sizes, uses, tick = {}, {}, 0
    for _ in range(2000):
        key = rng.randrange(50)
        tick += 1
        if key in sizes and rng.random() < 0.7:
            p.touch(key)
        else:
            sizes[key] = rng.choice([10, 20, 30])
            p.add(key, sizes[key])
        uses[key] = tick
        if rng.random() < 0.05 and sizes:
            gone = rng.choice(list(sizes))
            p.remove(gone)
            del sizes[gone], uses[gone]
    expected = reference_order(sizes, uses, cls is LargestFirst)
    assert [p.pop() for _ in range(len(p))] == expected
    with pytest.raises(KeyError):
        p.pop()


def test_hit_touches_no_heap():
    p = LargestFirst()
    for i in range(100):
        p.add(i, i)
    heap_before = list(p.heap.heap)
    p.touch(5)
    assert list(p.heap.heap) == heap_before


def test_size_change_updates_the_priority():
    p = LargestFirst()
    p.add("a", 10)
    p.add("b", 20)
    p.add("a", 30)
    assert p.pop() == "a"


def test_make_policy():
    assert isinstance(make_policy("lru"), LRU)
    p = LargestFirst()
    assert make_policy(p) is p
    with pytest.raises(ValueError, match="choose one of"):
        make_policy("fifo")


def test_clean_first_evicts_values_already_on_disk_first():
    p = CleanFirst()
    p.add("dirty old", 10)
    p.add("clean", 10, clean=True)
    p.add("dirty new", 10)
    p.add("clean newer", 10, clean=True)
    p.touch("clean")
    assert [p.pop() for _ in range(4)] == ["clean newer", "clean", "dirty old",
                                           "dirty new"]


def test_pop_keeps_a_key_while_another_can_go():
    p = CleanFirst()
    p.add("dirty", 10)
    p.add("just loaded", 10, clean=True)
    assert p.pop(keep="just loaded") == "dirty"
    assert p.pop(keep="just loaded") == "just loaded"  # the last one left
    q = LRU()
    q.add(None, 1)
    q.add("other", 1)
    assert q.pop() is None  # None is a key like any other


def test_clean_first_is_the_default_and_rereads_write_nothing(tmp_path):
    import numpy as np

    from chest import Chest
    c = Chest(path=str(tmp_path / "c"), available_memory=3000)
    assert isinstance(c.policy, CleanFirst)
    for i in range(10):
        c[i] = np.full(100, i)         # 800 bytes each: 3 fit
    spills = c.stats.spills
    for i in range(7):                 # read back what is on disk only
        assert c[i][0] == i
    # Evicting values read back costs nothing: only the first read pushed out
    # one of the three never-written values.
    assert c.stats.spills == spills + 1
    c.close()
