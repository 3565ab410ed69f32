"""Eviction policies: exact order with lazy, O(1) hits."""
from __future__ import annotations

import random

import pytest

from chest.policy import LRU, LargestFirst, make_policy


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
