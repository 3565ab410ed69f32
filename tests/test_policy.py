"""Eviction policies: exact order, O(1) hits."""
from __future__ import annotations

import random
import threading

import pytest

from chest.policy import LOOK, LRU, CleanFirst, LargestFirst, make_policy


def reference_order(sizes, uses, cleans, cls):
    """Keys in eviction order, computed directly."""
    def priority(key):
        if cls is LargestFirst:
            return (-sizes[key], uses[key])
        if cls is CleanFirst:
            return (not cleans[key], uses[key])
        return (uses[key],)
    return sorted(sizes, key=priority)


@pytest.mark.parametrize("cls", [LargestFirst, LRU, CleanFirst])
@pytest.mark.parametrize("seed", range(5))
def test_matches_a_direct_computation(cls, seed):
    rng = random.Random(seed)
    p = cls()
    sizes, uses, cleans, tick = {}, {}, {}, 0
    for _ in range(2000):
        key = rng.randrange(50)
        tick += 1
        if key in sizes and rng.random() < 0.7:
            p.touch(key)
        else:
            sizes[key] = rng.choice([10, 20, 30])
            cleans[key] = rng.random() < 0.5
            p.add(key, sizes[key], cleans[key])
        uses[key] = tick
        if rng.random() < 0.05 and sizes:
            gone = rng.choice(list(sizes))
            p.remove(gone)
            p.remove(gone)  # not tracked any more: no error
            del sizes[gone], uses[gone], cleans[gone]
        if rng.random() < 0.02 and len(sizes) > 1:
            keep = rng.choice(list(sizes))
            gone = p.pop(keep=keep)
            assert gone == [k for k in reference_order(sizes, uses, cleans, cls)
                            if k != keep][0]
            del sizes[gone], uses[gone], cleans[gone]
    expected = reference_order(sizes, uses, cleans, cls)
    assert list(p.priorities()) == expected
    assert len(p) == len(expected) and all(key in p for key in expected)
    assert [p.pop() for _ in range(len(p))] == expected
    with pytest.raises(KeyError):
        p.pop()
    p.touch(expected[0])  # a hit racing an eviction: no error


@pytest.mark.parametrize("cls", [LargestFirst, LRU, CleanFirst])
def test_clear(cls):
    p = cls()
    for i in range(10):
        p.add(i, i, clean=i % 2)
    p.clear()
    assert len(p) == 0 and 3 not in p and p.priorities() == {}
    with pytest.raises(KeyError):
        p.pop()


@pytest.mark.parametrize("cls", [LargestFirst, LRU, CleanFirst])
def test_hits_from_other_threads_never_break_eviction(cls):
    p = cls()
    stop = threading.Event()
    errors = []

    def hit():
        try:
            while not stop.is_set():
                for key in range(200):
                    p.touch(key)
        except Exception as e:  # pragma: no cover - what the test looks for
            errors.append(e)

    threads = [threading.Thread(target=hit) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for round in range(50):
            for key in range(200):
                p.add(key, key % 7, clean=key % 3 == 0)
            popped = [p.pop(keep=5) for _ in range(200)]
            assert sorted(popped) == list(range(200)) and popped[-1] == 5
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors


def test_a_hit_on_the_heap_policy_touches_no_heap():
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


class NamedKey:
    """A common user key: its == assumes the other is one too."""

    def __init__(self, name):
        self.name = name

    def __hash__(self):
        return hash(self.name)

    def __eq__(self, other):
        return self.name == other.name


@pytest.mark.parametrize("policy", ["clean-first", "lru", "largest"])
def test_keys_whose_eq_takes_only_their_own_kind(policy):
    # Every eviction compared the key it took with `keep` (a sentinel, or
    # the key just read) by ==: AttributeError out of c[k] = v, and the key
    # taken stayed in memory, over the budget, for good.
    import numpy as np

    from chest import Chest

    c = Chest(available_memory=300_000, policy=policy)
    for name in "abcdef":
        c[NamedKey(name)] = np.zeros(20_000)  # 160 kB: one fits
        c[5] = np.zeros(10)
        assert c[NamedKey(name)].shape == (20_000,)
        assert c.memory_usage <= 300_000
    assert sorted(k.name for k in c if isinstance(k, NamedKey)) == list("abcdef")
    p = make_policy(policy)
    p.add(NamedKey("x"), 10, clean=True)
    p.add(7, 10)
    p.add(NamedKey("y"), 20)
    popped = [p.pop(keep=7) for _ in range(3)]
    assert [type(k) for k in popped] == [NamedKey, NamedKey, int]


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


def test_chest_heap_lists_the_keys_in_memory_in_eviction_order(tmp_path):
    from chest import Chest
    c = Chest(path=str(tmp_path / "c"), available_memory=10_000, policy="lru")
    for key in "abc":
        c[key] = b"x" * 100
    c["a"]
    assert list(c.heap) == ["b", "c", "a"]
    c.close()


@pytest.mark.parametrize("cls", [LRU, CleanFirst])
def test_keys_hit_then_removed_leave_no_pile_of_heap_entries(cls):
    p = cls()
    for round in range(20):
        for key in range(300):
            p.add(key, 1, clean=key % 2)
            p.touch(key)
        # Eviction passes every key, hit since it was added, to the heap.
        first = p.pop()
        p.add(first, 1, clean=first % 2)
        for key in range(300):
            p.remove(key)
    assert len(p) == 0
    assert sum(map(len, p._heaps)) <= 64 + 2 * len(p)
    for key in range(5):
        p.add(key, 1)
    p.touch(0)
    assert [p.pop() for _ in range(5)] == [1, 2, 3, 4, 0]


class HitWhileRead(dict):
    """``_last_use`` whose n-th read lets "another thread" hit the key read,
    as a lock-free hit may land between any two steps of an eviction."""

    def __init__(self, policy, n):
        super().__init__()
        self.policy, self.n = policy, n

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self.n -= 1
        if self.n == 0:
            self.policy.touch(key)
        return value


@pytest.mark.parametrize("cls", [LRU, CleanFirst])
@pytest.mark.parametrize("seed", range(40))
def test_a_hit_during_eviction_never_loses_a_key(cls, seed):
    for when in range(1, 12):
        rng = random.Random(seed)
        p = cls()
        p._last_use = HitWhileRead(p, 0)
        for key in range(6):
            p.add(key, 1, rng.random() < 0.5)
        for _ in range(6):
            p.touch(rng.randrange(6))
        p.pop()  # keys hit since they were added go to the heap
        for _ in range(4):
            p.touch(rng.choice(list(p.priorities())))
        p._last_use.n = when
        left = set(p.priorities())
        popped = [p.pop() for _ in range(len(p))]
        assert sorted(popped) == sorted(left)


@pytest.mark.parametrize("cls", [LargestFirst, LRU, CleanFirst])
def test_hits_racing_removals_leave_no_pile_of_uses(cls):
    p = cls()
    for key in range(10_000):
        p.add(key, 1)
        p.remove(key)
        p.touch(key)  # a hit that read the value just before the removal
    assert len(p._last_use) <= 2 * len(p) + 64 + 1


def test_a_custom_policy_orders_by_its_weight(tmp_path):
    from chest import Chest
    from chest.policy import Policy

    class SmallestFirst(Policy):
        name = "smallest"

        @staticmethod
        def weight(size, clean):
            return size

    c = Chest(path=str(tmp_path / "c"), available_memory=10_000,
              policy=SmallestFirst())
    c["big"] = bytes(5000)  # (made at run time: a literal is held by the code)
    c["small"] = bytes(100)
    c["more"] = bytes(4900)  # over budget: the smallest leaves
    assert "small" not in c.inmem and "big" in c.inmem
    c.close()


def test_a_queue_policy_refuses_a_weight():
    with pytest.raises(TypeError, match="subclass Policy"):
        class Heaviest(LRU):
            @staticmethod
            def weight(size, clean):
                return -size


@pytest.mark.parametrize("cls", [LargestFirst, LRU, CleanFirst])
def test_spared_keys_are_passed_over_and_stay_where_they_were(cls):
    p = cls()
    for key in range(10):
        p.add(key, 1)
    assert p.pop(spare={0, 1}.__contains__) == 2
    assert [p.pop() for _ in range(len(p))] == [0, 1, 3, 4, 5, 6, 7, 8, 9]


@pytest.mark.parametrize("cls", [LargestFirst, LRU, CleanFirst])
def test_when_every_key_looked_at_is_spared_the_first_leaves(cls):
    p = cls()
    for key in range(LOOK + 5):
        p.add(key, 1)
    assert p.pop(spare=lambda key: True) == 0
    # A key past the LOOK keys looked at is not chosen, and all stay in order.
    assert p.pop(spare=lambda key: key < LOOK + 4) == 1
    assert [p.pop() for _ in range(len(p))] == list(range(2, LOOK + 5))


@pytest.mark.parametrize("cls", [LargestFirst, LRU, CleanFirst])
def test_keep_goes_last_even_before_spared_keys(cls):
    p = cls()
    for key in "abc":
        p.add(key, 1)
    # "a" is kept, "b" spared: "c" leaves.
    assert p.pop(keep="a", spare={"b"}.__contains__) == "c"
    # Only kept and spared keys: the spared one leaves before the kept one.
    assert p.pop(keep="a", spare={"b"}.__contains__) == "b"
    assert p.pop(keep="a", spare=lambda key: True) == "a"
    with pytest.raises(KeyError):
        p.pop(spare=lambda key: True)


@pytest.mark.parametrize("cls", [LargestFirst, LRU, CleanFirst])
def test_uses_of_spared_keys_still_count(cls):
    p = cls()
    for key in range(5):
        p.add(key, 1)
    assert p.pop(spare={0}.__contains__) == 1
    p.touch(2)  # used after the eviction looked at it: it goes last
    assert [p.pop() for _ in range(len(p))] == [0, 3, 4, 2]
