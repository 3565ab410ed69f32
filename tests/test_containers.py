"""List and Set: against CPython's list and set (contracts, hypothesis state
machines with reopening in between), and what they keep on disk."""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading

import pytest
from conftest import kill_when_busy, open_at_once
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, rule,
                                 run_state_machine_as_test)

from chest import Chest, List, Set
from chest.containers import _META, between

try:
    import lmdb  # noqa: F401
    ENGINES_HERE = ("sqlite", "lmdb")
except ImportError:
    ENGINES_HERE = ("sqlite",)

CONFIGS = [
    pytest.param({}, id="default"),
    pytest.param({"available_memory": 0}, id="all-on-disk"),
    pytest.param({"available_memory": 0, "packed": None}, id="files"),
    pytest.param({"available_memory": 300, "packed": "sqlite"}, id="packed"),
    pytest.param({"available_memory": 0, "dump": json.dump, "load": json.load,
                  "mode": "t"}, id="json"),
    pytest.param({"write_through": True, "available_memory": 100}, id="write-through"),
]


# -- positions -------------------------------------------------------------------
def test_between_is_always_strictly_between():
    import random
    rng = random.Random(0)
    positions = [between(None, None)]
    for _ in range(3000):
        j = rng.randrange(len(positions) + 1)
        low = positions[j - 1] if j else None
        high = positions[j] if j < len(positions) else None
        p = between(low, high)
        assert (low is None or low < p) and (high is None or p < high), (low, p, high)
        positions.insert(j, p)
    assert positions == sorted(positions)
    assert max(map(len, positions)) < 40  # keys stay short


# -- List --------------------------------------------------------------------------
def check_sequence(make):
    """``make()`` (empty) behaves as a list."""
    x, ref = make(), []
    for op in [
        lambda l: l.append(1), lambda l: l.extend([2, 3, 4]), lambda l: l.insert(0, 0),
        lambda l: l.insert(2, "mid"), lambda l: l.insert(-1, "before last"),
        lambda l: l.insert(100, "end"), lambda l: l.insert(-100, "start"),
        lambda l: l.__setitem__(1, "one"), lambda l: l.__setitem__(-1, "last"),
        lambda l: l.__delitem__(3), lambda l: l.__delitem__(-2),
        lambda l: l.__setitem__(slice(1, 3), ["a", "b", "c"]),
        lambda l: l.__setitem__(slice(None, None, 2), list(range(len(l[::2])))),
        lambda l: l.__delitem__(slice(0, 2)), lambda l: l.reverse(),
        lambda l: l.append("x"), lambda l: l.__iadd__([7, 8]),
        lambda l: l.remove("x"), lambda l: l.reverse(), lambda l: l.insert(1, "y"),
    ]:
        op(x)
        op(ref)
        assert list(x) == ref and len(x) == len(ref) and x == ref
    assert [x[i] for i in range(-len(ref), len(ref))] == ref + ref
    assert x[1:4] == ref[1:4] and x[::-1] == ref[::-1] and list(reversed(x)) == ref[::-1]
    assert x.index(ref[2]) == ref.index(ref[2]) and x.count(ref[0]) == ref.count(ref[0])
    assert ref[0] in x and "missing" not in x and bool(x)
    for bad in (len(ref), -len(ref) - 1):
        with pytest.raises(IndexError):
            x[bad]
        with pytest.raises(IndexError):
            del x[bad]
    with pytest.raises(ValueError):
        x.remove("missing")
    with pytest.raises(ValueError):
        x[::2] = [1]
    with pytest.raises(TypeError):
        x["a"]
    assert x.pop() == ref.pop() and x.pop(0) == ref.pop(0) and x.pop(-2) == ref.pop(-2)
    nums, nums_ref = make(), [3, 1, 2, 1]
    nums.extend(nums_ref)
    nums.sort()
    nums_ref.sort()
    assert list(nums) == nums_ref
    nums.sort(key=lambda v: -v, reverse=True)
    nums_ref.sort(key=lambda v: -v, reverse=True)
    assert list(nums) == nums_ref
    nums *= 2
    nums_ref *= 2
    assert list(nums) == nums_ref
    nums *= 0
    assert list(nums) == [] and not nums
    x.clear()
    assert len(x) == 0 and list(x) == [] and x == []
    return x, nums


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_list_behaves_as_a_list_and_reopens(tmp_path, kwargs):
    made = []

    def make():
        made.append(List(path=str(tmp_path / f"l{len(made)}"), **kwargs))
        return made[-1]

    try:
        check_sequence(make)
        l = make()
        l.extend([{"a": 1}, [1, 2], "three"])
        l.insert(1, "inserted")
        l.reverse()
        l.close()
        again = List(path=l.path, **kwargs)
        assert list(again) == ["three", [1, 2], "inserted", {"a": 1}]
        again.close()
    finally:
        for m in made:
            m.close()


def test_a_temporary_list_and_repr():
    l = List(range(3))
    assert repr(l) == "List([0, 1, 2])"
    l.extend(range(3, 50))
    assert "50 items" in repr(l)
    path = l.path
    l.close()
    assert not os.path.exists(path)


CRASHING_CHILD = '''
import os, sys
from chest import List, Set
kind, path, packed = sys.argv[1:]
kwargs = {} if packed == "default" else {"packed": None if packed == "None" else packed}
if kind == "list":
    List([{"i": 1}, {"i": 2}], path=path, write_through=True, **kwargs)
else:
    Set(["a", "b"], path=path, write_through=True, **kwargs)
os._exit(0)  # (no close: the journal holds them, flushed never)
'''


@pytest.mark.parametrize("kind", [List, Set])
def test_a_new_container_packs_small_items_unless_told_otherwise(tmp_path, kind):
    # Files only if asked for (packed=None) or with a dump of the user's (a
    # file each, as pysos's text files). Reopened, each keeps what it was,
    # also over a journal left by a crash before the first index.
    items = [{"i": 1}, {"i": 2}] if kind is List else ["a", "b"]
    cases = [({}, "sqlite", 0), ({"packed": "lmdb"}, "lmdb", 0),
             ({"packed": None}, None, 2),
             ({"dump": json.dump, "load": json.load, "mode": "t"}, None, 2)]
    for i, (kwargs, engine, files) in enumerate(cases):
        if engine == "lmdb":
            pytest.importorskip("lmdb")
        path = str(tmp_path / f"c{i}")
        c = kind(items, path=path, **kwargs)
        assert c.chest.store.packed == engine
        c.close()
        found = [f for f in os.listdir(path) if not f.startswith(".")]
        # (A List's settings key is one more value: what tells it from a Set.)
        assert len(found) == files + (files and kind is List), (kwargs, found)
        again = kind(path=path, **{k: v for k, v in kwargs.items() if k != "packed"})
        assert again.chest.store.packed == engine and list(again) == items
        copied = again.copy(path=path + "-copy")  # as its index says, not as new
        assert copied.chest.store.packed == engine and list(copied) == items
        copied.close()
        again.close()
    # Killed before its first flush: reopened (or repaired) with the engine
    # it was made with, which its index names from the start (a files List
    # came back packed, and repair made a file of each value).
    for name in ("list", "set"):
        for packed, files in (("default", 0), ("None", 2), ("lmdb", 0)):
            if packed == "lmdb" and "lmdb" not in ENGINES_HERE:
                continue
            path = str(tmp_path / f"crashed-{name}-{packed}")
            subprocess.run([sys.executable, "-c", CRASHING_CHILD, name, path, packed],
                           check=True)
            engine = {"default": "sqlite", "None": None}.get(packed, packed)
            if packed != "lmdb":
                from chest.cli import main as cli
                assert cli(["repair", path]) == 0
            again = List(path=path) if name == "list" else Set(path=path)
            assert again.chest.store.packed == engine and len(again) == 2
            again.close()
            assert len([f for f in os.listdir(path) if not f.startswith(".")]) == \
                files + (files and name == "list")


def test_inserting_in_the_middle_writes_one_item(tmp_path):
    l = List(range(100), path=str(tmp_path / "l"), available_memory=0)
    try:
        written = l.chest.stats.spills
        l.insert(50, "new")
        del l[20]
        l[70] = "set"
        assert l.chest.stats.spills - written == 2  # the inserted and the set item
        assert l[49] == "new" and l[70] == "set" and len(l) == 100
    finally:
        l.close()


def test_a_chest_that_is_not_a_lists_is_refused(tmp_path):
    Chest(path=str(tmp_path / "c"), data={"x": 1}).close()
    with pytest.raises(ValueError, match="not a List's.*'x'"):
        List(path=str(tmp_path / "c"))


UNWRITABLE = [
    pytest.param({}, threading.Lock(), id="pickle"),
    pytest.param({"dump": json.dump, "load": json.load, "mode": "t"}, object(), id="json"),
]


@pytest.mark.parametrize("kwargs, bad", UNWRITABLE)
def test_a_slice_assignment_that_cannot_be_written_changes_nothing(tmp_path, kwargs, bad):
    path = str(tmp_path / "l")
    l = List([1, 2, 3, 4], path=path, write_through=True, **kwargs)
    try:
        for s, values in [(slice(0, 2), [bad]), (slice(1, 3), ["new", bad]),
                          (slice(4, 4), ["appended", bad]), (slice(0, 4), []),
                          (slice(None, None, 2), ["new", bad]),
                          (slice(None, None, -1), [5, 6, 7, bad])]:
            if not values:
                continue
            with pytest.raises(TypeError):
                l[s] = values
            assert list(l) == [1, 2, 3, 4], s
        l[1:3] = ["b", "c", "d"]  # and what can be written is
        l[-2::-2] = ["x", "y"]
        assert list(l) == [1, "y", "c", "x", 4]
    finally:
        l.close()
    with List(path=path, **kwargs) as again:
        assert list(again) == [1, "y", "c", "x", 4]


def middle_inserts(l, n):
    """Insert ``n`` items, each in the middle of ``l``."""
    for i in range(n):
        l.insert(len(l) // 2, i)


def test_inserting_in_one_place_keeps_positions_short(tmp_path):
    l = List([0, 1])
    try:
        # Each insert halves the room between the two newest items: a digit
        # (GAP = 2**64) takes ~64 of them (with steps of 1 it took two: 4,000
        # made a position of 2,001 ints and a 20.7 MB index; now 62 ints).
        middle_inserts(l, 4000)
        assert max(map(len, l._positions)) < 100
        assert l._positions == sorted(l._positions)
        ref = [0, 1]
        middle_inserts(ref, 4000)
        assert list(l) == ref
        before = max(map(len, l._positions))
        for index in (0, 1, 1000, -1, len(l)):  # the same place, again and again
            for i in range(300):
                l.insert(index, i)
        assert max(map(len, l._positions)) <= before + 2
        assert l._positions == sorted(l._positions)
    finally:
        l.close()


def test_a_list_of_the_former_positions_reopens_and_takes_inserts(tmp_path):
    # Positions as the first scheme made them (steps of 1, one digit more
    # when there was no room).
    path = str(tmp_path / "l")
    old = [(-1,), (0,), (0, -1), (0, -1, 0), (0, 0), (1,), (2, 0, 0), (3,)]
    with Chest(path=path) as c:
        for i, p in enumerate(old):
            c[p] = i
    with List(path=path) as l:
        assert list(l) == list(range(len(old)))
        ref = list(range(len(old)))
        for j in range(len(old) + 1):
            l.insert(j * 2, f"at {j * 2}")
            ref.insert(j * 2, f"at {j * 2}")
        assert list(l) == ref and l._positions == sorted(l._positions)
    with List(path=path) as l:
        assert list(l) == ref


def test_list_takes_what_list_takes():
    np = pytest.importorskip("numpy")
    l = List([1, 2, 3])
    other = List([1, 2, 4])
    try:
        assert l[np.int64(1)] == 2 and l[np.int32(-1)] == 3
        l[np.int64(0)] = 0
        del l[np.int64(0)]
        l.insert(np.int64(0), 1)
        assert l.pop(np.int64(0)) == 1 and list(l) == [2, 3]
        l.insert(0, 1)
        assert l + [4] == [1, 2, 3, 4] and type(l + [4]) is list
        assert [0] + l == [0, 1, 2, 3] and type([0] + l) is list
        assert l + other == [1, 2, 3, 1, 2, 4]
        assert l * 2 == [1, 2, 3] * 2 and 2 * l == [1, 2, 3] * 2 and type(l * 2) is list
        assert l * np.int64(2) == [1, 2, 3] * 2
        with pytest.raises(TypeError):
            l + (4,)
        with pytest.raises(TypeError):
            l * "x"
        assert l < other and l <= other and other > l and other >= l and l <= l
        assert l < [1, 2, 4] and l < [1, 2, 3, 0] and not l < [1, 2, 3]
        assert [1, 2] < l and [1, 2, 3] >= l and l > [0, 9, 9] and not l > [1, 2, 3]
        with pytest.raises(TypeError):
            l < (1, 2)
        with pytest.raises(ValueError, match=r"^list.remove\(x\): x not in list$"):
            l.remove(9)
        with pytest.raises(ValueError, match=r"^9 is not in list$"):
            l.index(9)
        with pytest.raises(ValueError, match=r"^'a' is not in list$"):
            l.index("a")
        assert l.index(3, -1) == 2 and l.index(1, 0, 1) == 0
        with pytest.raises(ValueError):
            l.index(1, 1)
        with pytest.raises(IndexError, match="^pop index out of range$"):
            l.pop(3)
        x = List([1, 2])
        x *= np.int64(2)
        assert type(x) is List and list(x) == [1, 2, 1, 2]
        with pytest.raises(TypeError, match="can't multiply sequence by non-int of type 'str'"):
            x *= "x"
        assert list(x) == [1, 2, 1, 2]
        x.close()
        empty = List()
        with pytest.raises(IndexError, match="^pop from empty list$"):
            empty.pop()
        empty.close()
    finally:
        l.close()
        other.close()


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_copy_is_a_new_list_or_set_with_the_same_keywords(tmp_path, kwargs):
    l = List([1, "two", [3]], path=str(tmp_path / "l"), **kwargs)
    s = Set([1, "two"], path=str(tmp_path / "s"), **kwargs)
    made = [l, s]
    try:
        l.reverse()
        temporary = l.copy()
        made.append(temporary)
        assert type(temporary) is List and list(temporary) == [[3], "two", 1]
        assert temporary.path != l.path and temporary.chest.write_through is False
        temporary.append("more")
        assert list(l) == [[3], "two", 1]
        kept = l.copy(path=str(tmp_path / "copy"))
        made.append(kept)
        assert kept.chest.write_through is bool(kwargs.get("write_through"))
        assert kept.chest.available_memory == l.chest.available_memory
        kept.close()
        with List(path=str(tmp_path / "copy"), **kwargs) as again:
            assert list(again) == [[3], "two", 1]
        with pytest.raises(ValueError, match="copy.*already holds"):
            l.copy(path=str(tmp_path / "copy"))
        set_copy = s.copy()
        made.append(set_copy)
        set_copy.add(3)
        assert type(set_copy) is Set and set(set_copy) == {1, "two", 3} and s == {1, "two"}
        set_kept = s.copy(path=str(tmp_path / "set copy"))
        made.append(set_kept)
        set_kept.close()
        with Set(path=str(tmp_path / "set copy"), **kwargs) as again:
            assert again == {1, "two"}
    finally:
        for m in made:
            m.close()


class ListMachine(RuleBasedStateMachine):
    """A List and a list, the same operations, reopened in between."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="chest-list-")
        self.path = os.path.join(self.tmp, "l")
        self.ref: list = []
        self.l = None

    @initialize(budget=st.sampled_from([0, 200, 10**6]),
                packed=st.sampled_from([None, "sqlite"]))
    def start(self, budget, packed):
        self.kwargs = {"available_memory": budget, "packed": packed}
        self.l = List(path=self.path, **self.kwargs)

    def teardown(self):
        if self.l is not None:
            self.l.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    values = st.one_of(st.integers(-5, 5), st.text(max_size=4), st.none())
    index = st.integers(-12, 12)

    @rule(v=values)
    def append(self, v):
        self.l.append(v)
        self.ref.append(v)

    @rule(i=index, v=values)
    def insert(self, i, v):
        self.l.insert(i, v)
        self.ref.insert(i, v)

    @rule(i=index, v=values)
    def setitem(self, i, v):
        if -len(self.ref) <= i < len(self.ref):
            self.l[i] = v
            self.ref[i] = v
        else:
            with pytest.raises(IndexError):
                self.l[i] = v

    @rule(i=index)
    def delitem(self, i):
        if -len(self.ref) <= i < len(self.ref):
            del self.l[i]
            del self.ref[i]
        else:
            with pytest.raises(IndexError):
                del self.l[i]

    @rule(i=index)
    def pop(self, i):
        if -len(self.ref) <= i < len(self.ref):
            assert self.l.pop(i) == self.ref.pop(i)
        else:
            with pytest.raises(IndexError):
                self.l.pop(i)

    @rule(a=index, b=index, step=st.sampled_from([None, 1, 2, -1]),
          vs=st.lists(values, max_size=4))
    def slices(self, a, b, step, vs):
        s = slice(a, b, step)
        assert self.l[s] == self.ref[s]
        if step in (None, 1):
            self.l[s] = vs
            self.ref[s] = vs
        else:
            del self.l[s]
            del self.ref[s]

    @rule()
    def reverse(self):
        self.l.reverse()
        self.ref.reverse()

    @rule(reverse=st.booleans())
    def sort(self, reverse):
        self.l.sort(key=repr, reverse=reverse)
        self.ref.sort(key=repr, reverse=reverse)

    @rule(v=values)
    def remove(self, v):
        if v in self.ref:
            self.l.remove(v)
            self.ref.remove(v)
        else:
            with pytest.raises(ValueError):
                self.l.remove(v)

    @rule(how=st.sampled_from(["close", "flush"]))
    def reopen(self, how):
        if how == "flush":
            self.l.flush()
            self.l.chest.close()
        else:
            self.l.close()
        self.l = List(path=self.path, **self.kwargs)

    @invariant()
    def same(self):
        assert len(self.l) == len(self.ref)
        assert list(self.l) == self.ref


class SetMachine(RuleBasedStateMachine):
    """A Set and a set, the same operations, reopened in between."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="chest-set-")
        self.path = os.path.join(self.tmp, "s")
        self.ref: set = set()
        self.s = None

    @initialize(budget=st.sampled_from([0, 200, 10**6]),
                packed=st.sampled_from([None, "sqlite", "lmdb"]))
    def start(self, budget, packed):
        self.kwargs = {"available_memory": budget, "packed": packed}
        self.s = Set(path=self.path, **self.kwargs)

    def teardown(self):
        if self.s is not None:
            self.s.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    elements = st.one_of(st.integers(-6, 6), st.text(max_size=2),
                         st.tuples(st.integers(0, 2), st.text(max_size=1)))
    others = st.sets(elements, max_size=6)

    @rule(x=elements)
    def add(self, x):
        self.s.add(x)
        self.ref.add(x)

    @rule(x=elements)
    def discard(self, x):
        self.s.discard(x)
        self.ref.discard(x)

    @rule(x=elements)
    def remove(self, x):
        if x in self.ref:
            self.s.remove(x)
            self.ref.remove(x)
        else:
            with pytest.raises(KeyError):
                self.s.remove(x)

    @rule()
    def pop(self):
        if self.ref:
            x = self.s.pop()
            assert x in self.ref
            self.ref.remove(x)
        else:
            with pytest.raises(KeyError):
                self.s.pop()

    @rule(o=others, op=st.sampled_from(["update", "intersection_update",
                                        "difference_update",
                                        "symmetric_difference_update"]))
    def in_place(self, o, op):
        getattr(self.s, op)(o)
        getattr(self.ref, op)(o)

    @rule(o=others, op=st.sampled_from(["__ior__", "__iand__", "__isub__", "__ixor__"]))
    def operators_in_place(self, o, op):
        self.s = getattr(self.s, op)(o)
        self.ref = getattr(self.ref, op)(o)

    @rule(o=others)
    def new_sets(self, o):
        for op in ("union", "intersection", "difference", "symmetric_difference"):
            result = getattr(self.s, op)(o)
            try:
                assert set(result) == getattr(self.ref, op)(o) and isinstance(result, Set)
            finally:
                result.close()
        for op in ("__or__", "__and__", "__sub__", "__xor__"):
            result = getattr(self.s, op)(o)
            try:
                assert set(result) == getattr(self.ref, op)(o)
            finally:
                result.close()
        assert self.s.issubset(o) == self.ref.issubset(o)
        assert self.s.issuperset(o) == self.ref.issuperset(o)
        assert self.s.isdisjoint(o) == self.ref.isdisjoint(o)
        assert (self.s <= o) == (self.ref <= o) and (self.s < o) == (self.ref < o)
        assert (self.s >= o) == (self.ref >= o) and (self.s == o) == (self.ref == o)

    @rule()
    def reopen(self):
        self.s.close()
        self.s = Set(path=self.path, **self.kwargs)

    @invariant()
    def same(self):
        assert len(self.s) == len(self.ref) and set(self.s) == self.ref
        assert self.s == self.ref


SETTINGS = settings(max_examples=40, stateful_step_count=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def test_list_against_list():
    run_state_machine_as_test(ListMachine, settings=SETTINGS)


def test_set_against_set():
    pytest.importorskip("lmdb")
    run_state_machine_as_test(SetMachine, settings=SETTINGS)


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_set_contract(tmp_path, kwargs):
    s = Set([1, "a", (2, "b"), frozenset({3})], path=str(tmp_path / "s"), **kwargs)
    try:
        assert len(s) == 4 and 1 in s and (2, "b") in s and 9 not in s
        assert s == {1, "a", (2, "b"), frozenset({3})}
        with pytest.raises(TypeError):
            [1] in s
        u = s.union([9], path=str(tmp_path / "u"))
        assert set(u) == {1, "a", (2, "b"), frozenset({3}), 9}
        u.close()
        assert set(Set(path=str(tmp_path / "u"))) == set(u) | set()
        s.close()
        assert Set(path=str(tmp_path / "s"), **kwargs) == {1, "a", (2, "b"),
                                                           frozenset({3})}
    finally:
        s.close()


# -- every append on disk: kill -9 --------------------------------------------------
APPENDING_CHILD = '''
import sys
from chest import List, Set
kind, path = sys.argv[1:]
if kind == "list":
    l = List(path=path, write_through=True, available_memory=1000)
    print("ready", flush=True)
    for i in range(10**9):
        if i % 10 == 5:
            l.insert(len(l) // 2, -i)
        else:
            l.append(i)
        print(i, flush=True)
else:
    s = Set(path=path, write_through=True, available_memory=1000, packed="sqlite")
    print("ready", flush=True)
    for i in range(10**9):
        s.add(i)
        if i % 7 == 3:
            s.discard(i - 2)
        print(i, flush=True)
'''


@pytest.mark.parametrize("kind", ["list", "set"])
def test_kill_9_loses_no_acknowledged_change(tmp_path, kind):
    for attempt, delay in enumerate([0.1, 0.3, 0.6]):
        path = str(tmp_path / f"{kind}{attempt}")
        out = kill_when_busy([APPENDING_CHILD, kind, path], delay)
        done = [int(x) for x in out.split() if x.lstrip("-").isdigit()]
        last = done[-1] if done else -1

        def state_after(n):
            state: list = []
            for i in range(n + 1):
                if kind == "list" and i % 10 == 5:
                    state.insert(len(state) // 2, -i)
                    continue
                state.append(i)
                if kind == "set" and i % 7 == 3 and i - 2 in state:
                    state.remove(i - 2)
            return state

        # Every change whose call returned; the one under way may be there.
        allowed = [state_after(last), state_after(last + 1)]
        if kind == "set":
            allowed += [state_after(last) + [last + 1]]  # added, not yet discarded
        reopened = List(path=path) if kind == "list" else Set(path=path)
        try:
            found = list(reopened)
        finally:
            reopened.close()
        if kind == "list":
            assert found in allowed, (last, found[-5:], allowed[0][-5:])
        else:
            assert set(found) in [set(a) for a in allowed], last
        assert last > 10


# -- sort() and kill -9: the old list or the sorted one, never both -----------------
SORTING_CHILD = '''
import sys
from chest import List
path, kind = sys.argv[1:]
if kind == "write-through":
    l = List(path=path, write_through=True, durable=True)
else:  # nothing written through: evicted items are spilled, and journaled
    l = List(path=path, available_memory=2000)
print("ready", flush=True)
l.sort()
print("sorted", flush=True)
'''


@pytest.mark.parametrize("kind", ["write-through", "spilling"])
def test_kill_9_during_sort_leaves_the_old_list_or_the_sorted_one(tmp_path, kind):
    n = 3000
    old, new = list(range(n, 0, -1)), list(range(1, n + 1))
    kwargs = {"write_through": True} if kind == "write-through" else {}
    for attempt, delay in enumerate([0.02, 0.05, 0.1, 0.2, 0.3, 0.5]):
        path = str(tmp_path / f"l{attempt}")
        with List(old, path=path, **kwargs):
            pass
        kill_when_busy([SORTING_CHILD, path, kind], delay)
        with List(path=path) as l:
            found = list(l)
        assert found in (old, new), (delay, len(found), len(set(found)))
        with List(path=path) as l:  # the reopen settled it: no marker is left
            assert list(l) == found and "sort" not in l.chest.get(_META, {})
            assert len(l.chest) == n + (_META in l.chest)


# A process forked for each point k, killed right after the k-th change that
# sort() asks of its chest returns (past the last one: it exits as it is).
KILLED_AFTER_EACH_CHANGE = '''
import os, signal, sys
from chest import Chest, List
folder, engine, through, points = sys.argv[1:]
done = [0]
def killing(method):
    def wrapped(*args, **kwargs):
        result = method(*args, **kwargs)
        if done[0] is not None:
            done[0] += 1
            if done[0] == k:
                os.kill(os.getpid(), signal.SIGKILL)
        return result
    return wrapped
for name in ("__setitem__", "__delitem__", "write", "move_to_disk", "flush"):
    setattr(Chest, name, killing(getattr(Chest, name)))
for k in range(1, int(points) + 1):
    pid = os.fork()
    if pid == 0:
        done[0] = None
        l = List([5, 3, 4, 1], path=os.path.join(folder, str(k)), write_through=through == "1",
                 packed=None if engine == "None" else engine)
        l.flush()
        done[0] = 0
        l.sort()
        os._exit(0)
    os.waitpid(pid, 0)
'''


@pytest.mark.parametrize("engine", [None, "sqlite", "lmdb"])
@pytest.mark.parametrize("through", [False, True])
def test_kill_9_after_any_change_of_a_sort_leaves_the_old_list_or_the_sorted_one(
        tmp_path, engine, through):
    # Without write_through, the List's marker was set in memory, then
    # written: a kill between the two, at the end of sort(), lost the marker
    # that said the sorted items were all written, after the old ones were
    # deleted: the List reopened empty.
    points = 30
    subprocess.run([sys.executable, "-c", KILLED_AFTER_EACH_CHANGE, str(tmp_path),
                    str(engine), "1" if through else "0", str(points)],
                   check=True, timeout=120)
    found = {}
    for k in range(1, points + 1):
        with List(path=str(tmp_path / str(k))) as l:
            found[k] = list(l)
    assert {k: v for k, v in found.items() if v not in ([5, 3, 4, 1], [1, 3, 4, 5])} == {}
    assert found[points] == [1, 3, 4, 5]  # (the last point: no kill, sorted)


def test_threads_adding_discarding_and_popping_one_set_never_fail(tmp_path):
    # discard() looked, then deleted, without a lock: two threads discarding
    # the same element, one between the other's look and its deletion, got
    # KeyError (set.discard never raises); pop() and remove() the same.
    errors = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for attempt in range(5):
            s = Set(path=str(tmp_path / f"s{attempt}"), write_through=True)

            def work(action):
                try:
                    for i in range(1500):
                        action(i % 20)
                except Exception as e:  # pragma: no cover (the defect)
                    errors.append(e)

            def pop(_):
                try:
                    s.pop()
                except KeyError as e:
                    assert str(e) == "'pop from an empty set'"

            threads = [threading.Thread(target=work, args=(action,))
                       for action in (s.add, s.add, s.discard, s.discard, pop)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            s.close()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []


@pytest.mark.parametrize("kind", [List, Set])
def test_a_container_open_for_writing_in_this_process_is_not_opened_twice(tmp_path, kind):
    # A notebook cell run again (l = List(path=p) while the first l is
    # open) made a second writer that did not see the first's items, and
    # whose close undid them.
    path = str(tmp_path / "c")
    first = kind([1, 2], path=path)
    with pytest.raises(ValueError, match="open in this process already.*close that one"):
        kind(path=path)
    first.flush()
    with kind(path=path, readonly=True) as reader:  # (a reader may)
        assert sorted(reader) == [1, 2]
    first.close()
    second = kind(path=path)  # closed: opened again
    # The first, closed, used again while the second is open: it took the
    # lock again, shared, and the one closed last undid the other's change.
    with pytest.raises(ValueError, match="open for writing in this process by a "
                                         "chest that does not share it"):
        first.add(3) if kind is Set else first.append(3)
    with pytest.raises(ValueError, match="List or Set"):
        Chest(path=path)  # (nor a chest)
    second.close()
    assert sorted(kind(path=path, readonly=True)) == [1, 2]


@pytest.mark.parametrize("kind", [List, Set])
def test_threads_opening_one_container_at_once_get_it_once(tmp_path, kind):
    # The check that it is not open here and the opening were two steps: two
    # threads both passed the first, and both wrote the folder.
    for attempt in range(10):
        path = str(tmp_path / f"c{attempt}")
        opened, refused = open_at_once(lambda: kind(path=path), 4)
        assert (len(opened), refused) == (1, 3)
        opened[0].close()


class _CannotBePickled:
    def __reduce__(self):
        raise TypeError("cannot pickle this")


def _raising_after(*items):
    yield from items
    raise RuntimeError("the source failed")


@pytest.mark.parametrize("through", [False, True])
def test_a_change_of_many_items_that_fails_changes_nothing(tmp_path, through):
    # extend, +=, update, |= and the constructors kept the items before the
    # one that failed (a retry of List([1, 2, bad], path=p) gave [1, 2, 1, 2,
    # 3]); a set made at a path by union() left a part of itself there, and
    # the retry was refused ("already holds a Set").
    kw = {"write_through": through}
    path = str(tmp_path / "l")
    failing = [lambda: _raising_after(2, 3)]
    if through:  # (else a value that cannot be written stays in memory)
        failing.append(lambda: [2, _CannotBePickled(), 3])
    for bad in failing:
        with pytest.raises((TypeError, RuntimeError)):
            List(_raising_after(1, 2) if bad is failing[0] else [1, *bad()],
                 path=path, **kw)
        with List(path=path, **kw) as l:  # (closed by the failure: opens again)
            assert list(l) == []
            l.append(1)
            for change in (l.extend, l.__iadd__):
                with pytest.raises((TypeError, RuntimeError)):
                    change(bad())
                assert list(l) == [1]
            l.clear()
    with List(path=path, readonly=True) as l:
        assert list(l) == []
    path = str(tmp_path / "s")
    with pytest.raises(RuntimeError):
        Set(_raising_after(1, 2), path=path, **kw)
    with Set([5], path=path, **kw) as s:
        for change in (s.update, s.__ior__):
            with pytest.raises(RuntimeError):
                change(_raising_after(1, 5, 2))
            assert set(s) == {5}
        target = str(tmp_path / "union")
        with pytest.raises(TypeError, match="unhashable"):
            s.union([7, [6]], path=target)
        assert not os.path.exists(target)
        with s.union([7], path=target) as u:  # the retry
            assert set(u) == {5, 7}
    with Set(path=path, readonly=True) as s:
        assert set(s) == {5}


def test_a_new_container_at_a_path_that_holds_one_is_refused(tmp_path):
    # union(path=P), copy(path=P), fromkeys(path=P) make a *new* container:
    # at a path that holds items they would mix them in (or, at a List's
    # folder, leave a List that no longer opens).
    taken = str(tmp_path / "taken")
    with List(["stale"], path=taken):
        pass
    s = Set({"1", "2"})
    c = Chest()
    c["k"] = 1
    try:
        for make in (lambda: s.union({"3"}, path=taken), lambda: s.copy(path=taken),
                     lambda: s.intersection({"1"}, path=taken),
                     lambda: c.copy(path=taken), lambda: Chest.fromkeys("ab", path=taken)):
            with pytest.raises(ValueError, match="already holds"):
                make()
        with List(path=taken) as again:
            assert list(again) == ["stale"]  # untouched
        made = s.union({"3"}, path=str(tmp_path / "fresh"))
        assert made == {"1", "2", "3"}
        made.close()
    finally:
        s.close()
        c.close()


def test_a_new_container_at_the_path_of_one_open_here_is_refused(tmp_path):
    # Open in this process, a container shares its folder with a new one
    # made there (the lock is shared within a process): refused, not merged.
    path = str(tmp_path / "open")
    l = List(["a", "b"], path=path)
    s = Set({"x"})
    c = Chest()
    try:
        for make in (lambda: l.copy(path=path), lambda: s.union({"y"}, path=path),
                     lambda: c.copy(path=path), lambda: Chest.fromkeys("ab", path=path)):
            with pytest.raises(ValueError, match="open in this process"):
                make()
        l.append("c")
    finally:
        l.close()
        s.close()
        c.close()
    with List(path=path) as again:
        assert list(again) == ["a", "b", "c"]


# -- reverse() writes its flag as sort() does, or changes nothing ------------------
@pytest.mark.parametrize("kwargs", [
    pytest.param({"write_through": True}, id="write-through"),
    pytest.param({}, id="spilling")])
def test_a_reverse_whose_flag_cannot_be_written_changes_nothing(tmp_path, kwargs):
    # The flag was flipped before it was written: after the failure the next
    # append took a position already taken and overwrote an item.
    path = str(tmp_path / "l")
    l = List([("x" * 100, i) for i in range(7)], path=path, **kwargs)
    try:
        l.flush()
        before = [x[1] for x in l]

        def disk_full(key, value):
            raise OSError(errno.ENOSPC, "No space left on device")

        l.chest.write = disk_full  # (the flag's write)
        with pytest.raises(OSError):
            l.reverse()
        del l.chest.write
        assert [x[1] for x in l] == before
        del l[0], l[0]
        l.append(("new", -1))
        expected = before[2:] + [-1]
        assert [x[1] for x in l] == expected
        assert len(l.chest) == len(l) + (_META in l.chest)
    finally:
        l.close()
    with List(path=path) as again:
        assert [x[1] for x in again] == expected


REVERSING_CHILD = '''
import os, sys
from chest import List
l = List(path=sys.argv[1], available_memory=5000, policy="largest")
l.reverse()
for i in range(100, 400):
    l.append(("x" * 2000, i))  # evicted (journaled) after the flag
os.kill(os.getpid(), 9)
'''


def test_kill_9_after_reverse_keeps_the_reversed_order(tmp_path):
    # reverse() without write_through kept its flag in memory: the items
    # appended after it reached the disk, the flag did not, and the list
    # reopened in an order it never had.
    import subprocess
    import sys

    path = str(tmp_path / "l")
    with List(range(10), path=path):
        pass
    subprocess.run([sys.executable, "-c", REVERSING_CHILD, path], check=False)
    with List(path=path) as l:
        found = [x if isinstance(x, int) else x[1] for x in l]
    assert found[:10] == list(range(9, -1, -1)), found[:12]
    assert found[10:] == list(range(100, 100 + len(found) - 10))


# -- threads -------------------------------------------------------------------------
def test_threads_share_a_list():
    # Two appends at once took the same position: the second overwrote the
    # first (4 threads x 2000 appends left 4000 items).
    import sys

    l = List()
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        def work(t):
            for i in range(2000):
                if i % 10 == 3:
                    l.insert(i % 7, (t, i))
                else:
                    l.append((t, i))
                l[-1], len(l[:3])

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switch)
    try:
        items = list(l)
        assert len(items) == len(l) == 8000 == len(set(items))
        assert len(l.chest) == 8000 + (_META in l.chest)
        assert l._positions == sorted(l._positions)
    finally:
        l.close()


# -- sort() with a key that changes the list ---------------------------------------
def test_a_sort_key_that_changes_the_list_gets_valueerror(tmp_path):
    # It sorted the 3 items it had read into 6 new positions, wrote 3 of
    # them and deleted all 6 old items: len 6, and reading raised KeyError.
    path = str(tmp_path / "l")
    l = List([3, 1, 2], path=path)
    try:
        for change in (lambda: l.append(9), lambda: l.insert(0, 9), lambda: l.pop(),
                       lambda: l.__setitem__(0, 9), lambda: l.__delitem__(0),
                       lambda: l.reverse(), lambda: l.sort(), lambda: l.clear(),
                       lambda: l.extend([9]), lambda: l.remove(3)):
            def key(x, change=change):
                change()
                return x

            with pytest.raises(ValueError, match="^list modified during sort$"):
                l.sort(key=key)
            assert list(l) == [3, 1, 2] and len(l) == 3
            assert len(l.chest) == 3 + (_META in l.chest)

        def key(x):  # reading is fine; a refused change is no change
            with pytest.raises(ValueError):
                l.append(9)
            return (l.index(x), l[0], len(l)) and -x

        l.sort(key=key)
        assert list(l) == [3, 2, 1]
    finally:
        l.close()
    with List(path=path) as again:
        assert list(again) == [3, 2, 1]


# -- the List's own key and the user's dump -----------------------------------------
def dump_bytes(value, f):
    f.write(value)  # bytes only: a dump for a list of bytes


def load_bytes(f):
    return f.read()


def dump_str(value, f):
    f.write(value)


def load_str(f):
    return f.read()


OWN_FORMATS = [
    pytest.param({"dump": dump_bytes, "load": load_bytes}, [b"c", b"a", b"b"],
                 id="bytes"),
    pytest.param({"dump": dump_str, "load": load_str, "mode": "t"}, ["c", "a", "b"],
                 id="text"),
    pytest.param({"dump": json.dump, "load": json.load, "mode": "t"}, ["c", "a", "b"],
                 id="json"),
]


@pytest.mark.parametrize("kwargs, items", OWN_FORMATS)
@pytest.mark.parametrize("write_through", [False, True])
def test_the_lists_own_key_needs_nothing_of_dump(tmp_path, kwargs, items,
                                                 write_through):
    # Its {"reversed": ...} went through the user's dump: with one for bytes
    # only, sort() raised TypeError and reverse() was lost at close.
    import warnings

    path = str(tmp_path / "l")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        l = List(items, path=path, write_through=write_through, **kwargs)
        try:
            l.sort()
            assert list(l) == sorted(items)
            l.reverse()
            l.append(items[0] * 2)
            expected = list(l)
            assert expected == sorted(items)[::-1] + [items[0] * 2]
        finally:
            l.close()
        for _ in range(2):
            with List(path=path, **kwargs) as again:
                assert list(again) == expected
    if kwargs["dump"] is json.dump:  # a dict json writes: written as before
        with Chest(path=path, readonly=True, **kwargs) as c:
            assert type(c[_META]) is dict and c[_META] == {"reversed": True}


@pytest.mark.parametrize("kwargs, items", OWN_FORMATS)
@pytest.mark.parametrize("write_through", [False, True])
def test_a_sets_elements_need_nothing_of_dump(tmp_path, kwargs, items, write_through):
    # Each element's value (None) went through the user's dump: one for
    # bytes only could not add an element.
    import warnings

    path = str(tmp_path / "s")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Set(items, path=path, write_through=write_through,
                 available_memory=0, **kwargs) as s:
            s.add(items[0] * 2)
            s.discard(items[1])
        with Set(path=path, **kwargs) as again:
            assert set(again) == {items[0], items[2], items[0] * 2}


def test_a_list_whose_own_key_its_dump_wrote_still_opens(tmp_path):
    # As a List made before kept it: {"reversed": True} through json.dump.
    path = str(tmp_path / "l")
    kwargs = {"dump": json.dump, "load": json.load, "mode": "t"}
    with Chest(path=path, available_memory=0, **kwargs) as c:
        c[(0,)], c[(1,)], c[(2,)] = "a", "b", "c"
        c[_META] = {"reversed": True}
    with List(path=path, **kwargs) as l:
        assert list(l) == ["c", "b", "a"]
        l.append("z")
        l.reverse()
    with List(path=path, **kwargs) as l:
        assert list(l) == ["z", "a", "b", "c"]


# -- loops over a List that changes ---------------------------------------------------
def test_changing_a_list_while_looping_over_it_goes_as_for_a_list():
    # It looped over a copy of the positions: a deleted item raised KeyError
    # naming a position, an appended one was never visited.
    def run(seq):
        seen = []
        for x in seq:
            seen.append(x)
            del seq[-1]
        out = [seen, list(seq)]
        seq[:] = [1, 2, 3, 4]
        seen = []
        for x in seq:
            seen.append(x)
            if x < 3:
                seq.append(x * 10)
        out += [seen, list(seq)]
        seq[:] = [1, 2, 3, 4, 5]
        seen = []
        for x in reversed(seq):
            seen.append(x)
            if x == 4:
                del seq[-3:]
            seq.insert(0, 0)
        return out + [seen, list(seq)]

    l = List([1, 2, 3, 4], available_memory=0)
    try:
        assert run(l) == run([1, 2, 3, 4])
    finally:
        l.close()


# -- as list: identity first, index's bounds ------------------------------------------
def test_items_compare_by_identity_first():
    nan = float("nan")
    l = List([nan, 1])
    on_disk = List([nan], available_memory=0)  # read back: another nan each time
    try:
        assert l == [nan, 1] and not l != [nan, 1] and [nan, 1] == l
        assert l == l and not l != l and l <= l and l >= l and not l < l
        assert on_disk == on_disk and on_disk <= on_disk and not on_disk != on_disk
    finally:
        l.close()
        on_disk.close()


def test_index_takes_the_bounds_list_index_takes():
    np = pytest.importorskip("numpy")
    l = List([1, 2, 3, 1])
    try:
        for args in [(1, None), (1, 0, None), (1, 1.0), (1, "0")]:
            with pytest.raises(TypeError, match="slice indices must be integers"):
                [1, 2, 3, 1].index(*args)
            with pytest.raises(TypeError, match="slice indices must be integers"):
                l.index(*args)
        assert l.index(1, np.int64(1)) == 3 and l.index(1, -1) == 3
        assert l.index(3, 0, np.int32(-1)) == 2
    finally:
        l.close()


@pytest.mark.parametrize("kind", [List, Set])
def test_pickling_or_deep_copying_a_container_is_a_clear_error(kind):
    import copy
    import pickle
    with kind([1, 2]) as c:
        for action in (pickle.dumps, copy.deepcopy):
            with pytest.raises(TypeError, match=f"a {kind.__name__} owns its folder"):
                action(c)
        plain = list if kind is List else set
        assert pickle.loads(pickle.dumps(plain(c))) == plain([1, 2])


@pytest.mark.parametrize("packed", [None, "sqlite"])
def test_a_list_and_a_set_are_told_apart_by_the_lists_settings_key(tmp_path, packed):
    # Told apart by their values only: a Set of tuples of ints opened as a
    # List of Nones (and its first append made it unopenable as a Set); a
    # List of empty dicts, or one whose first item was put before eight
    # Nones, opened as a Set of positions.
    sets = {"coordinates": {(1, 2), (3, 4)}, "positions": {(1,), (2,)}}
    lists = {"dicts": [{}, {}, {}], "nones": [None] * 8, "empty": []}
    for name, elements in sets.items():
        Set(elements, path=str(tmp_path / name), packed=packed).close()
        with pytest.raises(ValueError, match="holds a Set's elements.*chest.Set"):
            List(path=str(tmp_path / name))
        with Set(path=str(tmp_path / name)) as s:
            assert s == elements
    for name, items in lists.items():
        with List(items, path=str(tmp_path / name), packed=packed) as l:
            l.insert(0, "first")
        with pytest.raises(ValueError, match="already holds a List"):
            Set(path=str(tmp_path / name))
        with List(path=str(tmp_path / name)) as l:
            assert list(l) == ["first", *items]
            l.clear()
        with pytest.raises(ValueError, match="already holds a List"):
            Set(path=str(tmp_path / name))  # (cleared: still a List's)


def test_a_set_looks_up_a_set_as_the_frozenset_it_equals_as_set_does():
    with Set([frozenset({1}), 2]) as s:
        assert {1} in s and {3} not in s
        s.discard({1})
        assert s == {2}
        with pytest.raises(KeyError):
            s.remove({1})


@pytest.mark.skipif(sys.version_info < (3, 11), reason="notes are Python 3.11+")
def test_an_item_that_cannot_be_written_is_named_by_its_index(tmp_path):
    # The chest's error named its key, a position such as (3,), which means
    # nothing to the List's user.
    with List([1, 2, 3], path=str(tmp_path / "l"), write_through=True) as l:
        for change in (l.append, lambda v: l.insert(1, v),
                       lambda v: l.__setitem__(-1, v)):
            with pytest.raises(TypeError) as e:
                change(_CannotBePickled())
            notes = "\n".join(e.value.__notes__)
            assert "List at" in notes and "the item at index" in notes, notes
        assert list(l) == [1, 2, 3]
        assert "index 3 " in "\n".join(_notes_of(l.append, _CannotBePickled()))
        assert "index 1 " in "\n".join(_notes_of(lambda v: l.insert(1, v),
                                                  _CannotBePickled()))


def _notes_of(change, value):
    try:
        change(value)
    except TypeError as e:
        return e.__notes__
    raise AssertionError("it did not raise")


@pytest.mark.parametrize("kind", [List, Set])
def test_an_unknown_keyword_is_named_with_the_containers_name(kind):
    with pytest.raises(TypeError, match=rf"^{kind.__name__}\(\) got an unexpected "
                                        rf"keyword argument 'availble_memory'.*available_memory"):
        kind(availble_memory="1GB")


def test_the_repr_of_a_list_with_a_damaged_item_shows_the_others(tmp_path):
    path = str(tmp_path / "l")
    with List(["a", "b", "c"], path=path, packed=None):
        pass
    with List(path=path) as l:
        name = l.chest.key_to_filename(l._positions[1])
        with open(name, "wb") as f:
            f.write(b"damaged")
        text = repr(l)
        assert text.startswith("List(['a', <item 1 unreadable: ") and text.endswith(", 'c'])")
        assert name in text


def test_a_json_list_opened_without_its_format_says_so(tmp_path):
    path = str(tmp_path / "l")
    List([1, 2], path=path, dump=json.dump, load=json.load, mode="t").close()
    for open_it in (lambda: List(path=path, readonly=True), lambda: Set(path=path)):
        with pytest.raises(ValueError, match="made with another dump and load.*json"):
            open_it()
    with List(path=path, dump=json.dump, load=json.load, mode="t") as l:
        assert list(l) == [1, 2]


def test_a_closed_list_reads_while_its_folder_is_open_again(tmp_path):
    path = str(tmp_path / "l")
    old = List(range(200), path=path, available_memory=500)
    old.close()
    new = List(path=path)
    try:
        assert sum(old) == 19900 and list(old)[:3] == [0, 1, 2]
        old.close()
    finally:
        new.close()


def test_a_set_refuses_a_lists_folder(tmp_path):
    # It took the List's positions for its elements, and its first add made
    # the List unopenable (a List refused a Set's folder already).
    path = str(tmp_path / "l")
    List(["a", "b"], path=path).close()
    with pytest.raises(ValueError, match="already holds a List"):
        Set(path=path)
    with List(path=path) as again:
        assert list(again) == ["a", "b"]
        again.sort(reverse=True)  # (its settings' key: a dict)
    with pytest.raises(ValueError, match="already holds a List"):
        Set(path=path)
    # A Set of positions, and of the name of a List's own key, is a Set.
    positions = str(tmp_path / "s")
    Set([(1,), (2,), "list"], path=positions).close()
    with Set(path=positions) as s:
        assert s == {(1,), (2,), "list"}
