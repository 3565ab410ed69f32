"""List and Set: against CPython's list and set (contracts, hypothesis state
machines with reopening in between), and what they keep on disk."""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest
from conftest import kill_when_busy
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant,
                                 precondition, rule, run_state_machine_as_test)

from chest import Chest, List, Set
from chest.containers import between

CONFIGS = [
    pytest.param({}, id="default"),
    pytest.param({"available_memory": 0}, id="all-on-disk"),
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
