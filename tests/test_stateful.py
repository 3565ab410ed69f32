"""A chest and a dict, driven by the same random operations, must agree.

Hypothesis state machines apply sets, reads, deletes, pops, updates (from
dicts, from other chests and from itself), flushes, evictions, budget
changes, closing, reopening, read-only readers and in-place changes of
read-back arrays to a :class:`~chest.Chest` and to a plain ``dict``, and
check after every step that both hold the same keys (of the same types) in
the same order and the same values, that the files hold what the chest does
not, and that the memory accounting adds up. Variants: a chest whose large
arrays come back as read-only memory maps, and a json chest (text files,
tuple keys).

Keys mix identifiers, awkward text ('', '.keys', '../x', case twins, 300
characters), numbers that are equal as keys (1, 1.0, True), None, bytes,
frozensets and nested tuples; values mix ints, text, bytes, lists, tuples,
dicts and numpy arrays of up to 200 kB (both sides of the 64 KiB
small-value line). Reproduce a run with ``--hypothesis-seed=N``.
"""
from __future__ import annotations

import copy
import json
import os
import pickle
import shutil
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant,
                                 precondition, rule, run_state_machine_as_test)

from chest import Chest
from chest.core import nbytes

# -- keys --------------------------------------------------------------------
SPECIAL_TEXT = [
    "", ".keys", ".Keys", ".", "..", "../x", "/abs", "/", "a/b", "a\\b", "A", "a",
    "_a", "__a", "_A", "x" * 300, "X" * 300, "y" * 200, "y" * 201, ".old.a",
    ".tmp.a", "nul\0", "\ud800", "\u00e9", "con", "a b", "1",
]

IDENTIFIERS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}", fullmatch=True)
# 1, 1.0 and True are one key in a dict (so are 0, 0.0, -0.0 and False).
EQUAL_NUMBERS = st.sampled_from([0, 1, 0.0, -0.0, 1.0, True, False, 2.5])
SCALAR_KEYS = st.one_of(
    IDENTIFIERS,
    st.sampled_from(SPECIAL_TEXT),
    st.text(max_size=12),
    st.integers(-3, 3),
    st.integers(),
    EQUAL_NUMBERS,
    st.floats(allow_nan=False),
    st.none(),
    st.binary(max_size=8),
)
FLAT_KEYS = SCALAR_KEYS | st.frozensets(
    IDENTIFIERS | st.integers(-3, 3) | EQUAL_NUMBERS, max_size=3)


def _tuples(elements: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(elements, max_size=3).map(tuple)


_DEPTH_1 = _tuples(FLAT_KEYS)
_DEPTH_2 = _tuples(FLAT_KEYS | _DEPTH_1)
_DEPTH_3 = _tuples(FLAT_KEYS | _DEPTH_1 | _DEPTH_2)
KEYS = st.one_of(FLAT_KEYS, _DEPTH_1, _DEPTH_2, _DEPTH_3)


# -- values ------------------------------------------------------------------
def _array(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n)


def _big_array(size: int, seed: int, dtype: str, shape: str) -> np.ndarray:
    """An array over 64 KiB (the large-value path: streamed, maybe mapped)."""
    n = size // np.dtype(dtype).itemsize // 2 * 2
    a = (np.random.default_rng(seed).standard_normal(n) * 100).astype(dtype)
    if shape == "C":
        return a.reshape(2, n // 2)
    if shape == "F":
        return np.asfortranarray(a.reshape(2, n // 2))
    return a


ARRAYS = st.builds(_array, st.integers(0, 2000), st.integers(0, 2**16))
BIG_ARRAYS = st.builds(
    _big_array, st.integers(70_000, 200_000), st.integers(0, 2**16),
    st.sampled_from(["float64", "float32", "int32", "uint8", "complex128", "bool"]),
    st.sampled_from(["1d", "C", "F"]))
BLOBS = st.builds(lambda n, b: bytes([b]) * n, st.integers(0, 4000),
                  st.integers(0, 255))
TEXT = st.text(max_size=30)
_PARTS = st.integers() | TEXT | ARRAYS | BIG_ARRAYS
VALUES = st.one_of(
    st.integers(-1000, 1000),
    TEXT,
    BLOBS,
    st.lists(st.integers() | TEXT, max_size=8),
    ARRAYS,
    ARRAYS,  # twice: arrays are what spills, reloads and changes in place
    BIG_ARRAYS,
    st.lists(_PARTS, max_size=3),
    st.tuples(_PARTS, _PARTS),
    st.dictionaries(IDENTIFIERS, _PARTS, max_size=3),
)
JSON_VALUES = st.recursive(
    st.integers(-(2**40), 2**40) | TEXT,
    lambda children: st.lists(children, max_size=4),
    max_leaves=8,
)

BUDGETS = st.sampled_from([0, 100, 1000, 10_000, 100_000, 1_000_000])
POLICIES = st.sampled_from(["largest", "lru"])

SOURCE_BUDGETS = st.sampled_from([0, 1000, 10_000, 10**9])


def array_paths(value, path: tuple = ()) -> list:
    """Where the (non-empty) arrays in ``value`` are: index paths."""
    if isinstance(value, np.ndarray):
        return [path] if value.size else []
    if isinstance(value, (list, tuple)):
        items = enumerate(value)
    elif isinstance(value, dict):
        items = value.items()
    else:
        return []
    return [p for k, v in items for p in array_paths(v, path + (k,))]


def at(value, path: tuple):
    for step in path:
        value = value[step]
    return value


def _may_change_in_place(machine) -> bool:
    return any(array_paths(v) for v in machine.d.values())


# -- comparing ---------------------------------------------------------------
def strict(key):
    """A key that compares equal only to the same key of the same type."""
    if isinstance(key, tuple):
        return ("tuple", tuple(strict(k) for k in key))
    if isinstance(key, frozenset):
        return ("frozenset", frozenset(strict(k) for k in key))
    return (type(key).__name__, key)


def same(a, b) -> bool:
    """Equal values of the same type; numpy arrays compared element-wise."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
                and a.dtype == b.dtype and a.shape == b.shape
                and bool(np.array_equal(a, b)))
    if isinstance(a, (list, tuple)):
        return (type(a) is type(b) and len(a) == len(b)
                and all(same(x, y) for x, y in zip(a, b)))
    if isinstance(a, dict):
        return (type(a) is type(b) and list(a) == list(b)
                and all(same(a[k], b[k]) for k in a))
    return type(a) is type(b) and a == b


def stored_value(c: Chest, key):
    """What the chest holds on disk for ``key``, read without the chest: its
    file with ``load``, or its packed slot's bytes with ``pickle.loads`` (or
    ``load`` of the text)."""
    if key in c.store.journaled:
        return c.codec.loads(c.store.read_journaled(key, c.store.journaled[key])[0])
    place = c.store.slots.get(key)
    if place is None:
        with open(c.key_to_filename(key), "r" + c.mode) as f:
            return c.load(f)
    data = c.store.engine(place[0]).get(place[1])
    return c.codec.loads(data)


def stored_size(c: Chest, key) -> int:
    if key in c.store.journaled:
        return c.store.journaled[key][1]
    place = c.store.slots.get(key)
    if place is None:
        return os.path.getsize(c.key_to_filename(key))
    return len(c.store.engine(place[0]).get(place[1]))


def files_under(path: str) -> list:
    found = []
    for folder, _, names in os.walk(path):
        found.extend(os.path.join(folder, name) for name in names)
    return found


# -- the machine -------------------------------------------------------------
class ChestMachine(RuleBasedStateMachine):
    """A pickle chest of mixed values against a dict."""

    values = VALUES
    chest_kwargs: dict = {}
    read_only_arrays = False  # may reloaded arrays be read-only?
    #: May a second chest open the folder for writing in this process while
    #: the first is open? (Not with packed values: both would give out the
    #: same slots, and a second is refused.)
    shares_its_folder = True
    other_format: dict = {"dump": pickle.dump, "load": pickle.load}

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="chest-stateful-")
        self.path = os.path.join(self.tmp, "chest")
        self.d: dict = {}
        self.c = None
        self.stale: list = []  # flushed and reopened, closed at a later step
        self.sources = 0

    def make(self, budget, policy) -> Chest:
        return Chest(path=self.path, available_memory=budget, policy=policy,
                     **self.chest_kwargs)

    @initialize(budget=BUDGETS, policy=POLICIES, data=st.data())
    def start(self, budget, policy, data):
        items = [(self.draw_key(data), self.draw_value(data))
                 for _ in range(data.draw(st.integers(0, 12), label="n"))]
        self.d = {k: copy.deepcopy(v) for k, v in items}
        self.c = Chest(items if items else None, path=self.path,
                       available_memory=budget, policy=policy, **self.chest_kwargs)

    def teardown(self) -> None:
        try:
            if self.c is not None:
                self.c.close()
                again = self.make(10**9, "largest")
                try:
                    assert [strict(k) for k in again] == [strict(k) for k in self.d]
                    for key, value in self.d.items():
                        assert same(again[key], value)
                finally:
                    again.close()
            for old in self.stale:
                old.close()
        finally:
            self.c = None
            self.stale.clear()
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- drawing ---------------------------------------------------------------
    def draw_key(self, data, existing: bool = True):
        if existing and self.d and data.draw(st.booleans(), label="existing"):
            return data.draw(st.sampled_from(list(self.d)), label="key")
        return data.draw(KEYS, label="key")

    def draw_value(self, data):
        return data.draw(self.values, label="value")

    # -- the dict API ----------------------------------------------------------
    @rule(data=st.data())
    def set(self, data):
        key, value = self.draw_key(data), self.draw_value(data)
        self.d[key] = copy.deepcopy(value)
        self.c[key] = value

    @rule(data=st.data())
    def set_many(self, data):
        for _ in range(data.draw(st.integers(1, 6), label="n")):
            self.set(data)

    @rule(data=st.data())
    def get(self, data):
        key = self.draw_key(data)
        if key in self.d:
            value = self.c[key]
            assert same(value, self.d[key])
            self.change_in_place(data, key, value)
        else:
            with pytest.raises(KeyError):
                self.c[key]

    @rule(data=st.data())
    def get_with_default(self, data):
        key = self.draw_key(data)
        assert same(self.c.get(key), self.d.get(key))
        value = self.c.get(key, "default")
        assert same(value, self.d.get(key, "default"))
        self.change_in_place(data, key, value)

    @rule(data=st.data())
    def contains(self, data):
        key = self.draw_key(data)
        assert (key in self.c) == (key in self.d)

    @rule(data=st.data())
    def delete(self, data):
        key = self.draw_key(data)
        if key in self.d:
            del self.d[key]
            del self.c[key]
        else:
            with pytest.raises(KeyError):
                del self.c[key]

    @rule(data=st.data())
    def pop(self, data):
        key = self.draw_key(data)
        if data.draw(st.booleans(), label="with default"):
            assert same(self.c.pop(key, "default"), self.d.pop(key, "default"))
        elif key in self.d:
            assert same(self.c.pop(key), self.d.pop(key))
        else:
            with pytest.raises(KeyError):
                self.c.pop(key)

    @rule()
    def popitem(self):
        if not self.d:
            with pytest.raises(KeyError):
                self.c.popitem()
            return
        key, value = self.c.popitem()
        expected_key, expected_value = self.d.popitem()
        assert strict(key) == strict(expected_key)
        assert same(value, expected_value)

    @rule(data=st.data())
    def setdefault(self, data):
        key, value = self.draw_key(data), self.draw_value(data)
        expected = self.d.setdefault(key, copy.deepcopy(value))
        value = self.c.setdefault(key, value)
        assert same(value, expected)
        self.change_in_place(data, key, value)

    @rule(data=st.data(), overwrite=st.booleans(), kwargs=st.booleans())
    def update_from_dict(self, data, overwrite, kwargs):
        items = [(self.draw_key(data), self.draw_value(data))
                 for _ in range(data.draw(st.integers(0, 4), label="n"))]
        named = {}
        if kwargs:
            named = {data.draw(IDENTIFIERS, label="kwarg"): self.draw_value(data)}
        # The mapping first, then the keywords, each key as if set alone.
        for key, value in list(dict(items).items()) + list(named.items()):
            if overwrite or key not in self.d:
                self.d[key] = copy.deepcopy(value)
        self.c.update(dict(items), overwrite=overwrite, **named)

    @rule(data=st.data(), overwrite=st.booleans(), budget=SOURCE_BUDGETS,
          with_path=st.booleans(), same_format=st.booleans())
    def update_from_chest(self, data, overwrite, budget, with_path, same_format):
        kwargs = dict(self.chest_kwargs if same_format else self.other_format)
        if with_path:
            self.sources += 1
            kwargs["path"] = os.path.join(self.tmp, f"source{self.sources}")
        else:
            kwargs.pop("write_through", None)  # a temporary chest keeps nothing
        other = Chest(available_memory=budget, **kwargs)
        try:
            expected: dict = {}
            for _ in range(data.draw(st.integers(0, 4), label="n")):
                key, value = self.draw_key(data), self.draw_value(data)
                other[key] = value
                expected[key] = copy.deepcopy(value)
            self.c.update(other, overwrite=overwrite)
        finally:
            other.close()
        for key, value in expected.items():
            if overwrite or key not in self.d:
                self.d[key] = value

    @rule(overwrite=st.booleans())
    def update_from_itself(self, overwrite):
        self.c.update(self.c, overwrite=overwrite)

    @rule(really=st.integers(0, 19))
    def clear(self, really):
        if really == 19:  # rarely
            self.c.clear()
            self.d.clear()

    # -- in-place changes ------------------------------------------------------
    def change_in_place(self, data, key, x) -> None:
        """``x = c[k]; x[i] = ...``: the chest keeps the change while it holds
        ``x`` (and writes it again when ``x`` leaves memory)."""
        paths = array_paths(x)
        if not (paths and _may_change_in_place(self)):
            return
        if not data.draw(st.booleans(), label="change in place"):
            return
        path = data.draw(st.sampled_from(paths), label="array")
        array = at(x, path)
        i = data.draw(st.integers(0, array.size - 1), label="index")
        new = data.draw(st.integers(0, 100), label="new")
        if not array.flags.writeable:
            assert self.read_only_arrays, "a reloaded array is read-only"
            with pytest.raises(ValueError):
                array.flat[i] = new
            return
        held = key in self.c.inmem and self.c.inmem[key] is x
        array.flat[i] = new
        if held:
            at(self.d[key], path).flat[i] = new

    @precondition(_may_change_in_place)
    @rule(data=st.data())
    def change_read_back_array_in_place(self, data):
        keys = [k for k, v in self.d.items() if array_paths(v)]
        key = data.draw(st.sampled_from(keys), label="key")
        self.change_in_place(data, key, self.c[key])

    # -- the chest's own API ---------------------------------------------------
    @rule()
    def flush(self):
        self.c.flush()
        assert not self.c.inmem
        assert os.path.exists(os.path.join(self.path, ".keys"))
        leftovers = [f for f in files_under(self.path)
                     if os.path.basename(f).startswith((".old.", ".tmp."))]
        assert not leftovers

    @precondition(lambda self: self.c is not None and self.c.inmem)
    @rule(data=st.data())
    def move_to_disk(self, data):
        key = data.draw(st.sampled_from(list(self.c.inmem)), label="key")
        self.c.move_to_disk(key)
        assert key not in self.c.inmem

    @rule(data=st.data())
    def move_to_disk_any(self, data):
        key = self.draw_key(data)
        if key in self.d:
            self.c.move_to_disk(key)
            assert key not in self.c.inmem
        else:
            with pytest.raises(KeyError):
                self.c.move_to_disk(key)

    @rule(data=st.data())
    def prefetch(self, data):
        keys = [self.draw_key(data)
                for _ in range(data.draw(st.integers(0, 3), label="n"))]
        keys = [k for k in keys if k in self.d]
        self.c.prefetch(keys)

    @rule()
    def shrink(self):
        self.c.shrink()

    @rule()
    def evict(self):
        had = len(self.c.inmem)
        freed = self.c.evict()
        assert (freed >= 0) == (had > 0)
        assert len(self.c.inmem) == max(had - 1, 0)

    @rule(data=st.data())
    def get_from_disk(self, data):
        key = self.draw_key(data)
        if key in self.d:
            self.c.get_from_disk(key)
        else:
            with pytest.raises(KeyError):
                self.c.get_from_disk(key)

    @rule(data=st.data())
    def read_only_reader(self, data):
        """After a flush, a reader (``readonly=True``) sees the same."""
        self.c.flush()
        reader = Chest(path=self.path, readonly=True, **self.chest_kwargs)
        try:
            assert [strict(k) for k in reader] == [strict(k) for k in self.d]
            if self.d:
                key = data.draw(st.sampled_from(list(self.d)), label="key")
                assert same(reader[key], self.d[key])
            assert "chest" in repr(reader).lower()
        finally:
            reader.close()

    @rule(budget=BUDGETS)
    def change_budget(self, budget):
        self.c.available_memory = budget
        assert self.c.available_memory == budget

    @rule(budget=BUDGETS, policy=POLICIES, how=st.sampled_from(["flush", "close"]))
    def reopen(self, budget, policy, how):
        old, self.c = self.c, None
        if how == "flush" and self.shares_its_folder:
            old.flush()
            self.stale.append(old)  # dropped later, after more changes
        else:
            old.close()
        del old
        self.c = self.make(budget, policy)
        assert not self.c.inmem

    @rule()
    def close_and_keep_using(self):
        """A closed chest with a path can still be used."""
        self.c.close()

    @precondition(lambda self: self.stale)
    @rule()
    def drop_stale_chest(self):
        """A flushed chest object that was reopened elsewhere goes away."""
        self.stale.pop(0).close()

    @rule()
    def read_everything(self):
        assert [strict(k) for k in self.c.keys()] == [strict(k) for k in self.d]
        for (key, value), expected in zip(self.c.items(), self.d.values()):
            assert same(value, expected)

    # -- after every step ------------------------------------------------------
    @invariant()
    def same_keys_in_the_same_order(self):
        assert list(self.c) == list(self.d)
        assert [strict(k) for k in self.c] == [strict(k) for k in self.d]
        assert len(self.c) == len(self.d)

    @invariant()
    def same_values(self):
        """Checked without reading through the chest (that would load and
        evict): in-memory values directly, the others from their files."""
        c = self.c
        for key, expected in self.d.items():
            assert key in c
            if key in c.inmem:
                value = c.inmem[key]
            elif key in c.flight:  # evicted, to be packed with others
                value = c.flight.values[key]
            else:
                value = stored_value(c, key)
            assert same(value, expected), key

    @invariant()
    def memory_accounting(self):
        c = self.c
        assert c.memory_usage == sum(nbytes(v) for v in c.inmem.values())
        if not c.ledger.unwritable:
            assert c.memory_usage <= c.available_memory
        assert all(k in self.d for k in c.inmem)

    @invariant()
    def spilled_keys(self):
        """What dask.distributed reads: ``fast``, ``slow``, ``spilled_total``."""
        c = self.c
        on_disk = [k for k in self.d if k not in c.inmem]
        assert c.fast is c.inmem
        assert len(c.slow) == len(on_disk)
        assert set(c.slow) == set(on_disk)
        assert all(k in c.slow for k in on_disk)
        sizes = [stored_size(c, k) for k in on_disk if k in c.store.files]
        assert c.spilled_total.disk == sum(sizes)

    @invariant()
    def no_temporary_files_left(self):
        assert not [f for f in files_under(self.path)
                    if os.path.basename(f).startswith(".tmp.")]


class MappedChestMachine(ChestMachine):
    """A chest whose large arrays come back as read-only memory maps."""

    chest_kwargs = {"mmap": True}
    read_only_arrays = True


class JsonChestMachine(ChestMachine):
    """A json chest (text files, tuple keys) of json values against a dict."""

    values = JSON_VALUES
    chest_kwargs = {"dump": json.dump, "load": json.load, "mode": "t"}
    other_format: dict = {}


class PackedChestMachine(ChestMachine):
    """Small values packed in SQLite; reopened with LMDB, files only, SQLite
    in turn: values packed by another engine stay readable."""

    shares_its_folder = False

    chest_kwargs = {"packed": "sqlite", "packed_limit": 2000}
    other_format: dict = {"packed": "lmdb"}
    engines = ["lmdb", None, "sqlite"]

    def make(self, budget, policy) -> Chest:
        self.reopened = getattr(self, "reopened", 0) + 1
        engine = self.engines[self.reopened % len(self.engines)]
        return Chest(path=self.path, available_memory=budget, policy=policy,
                     **dict(self.chest_kwargs, packed=engine))


class WriteThroughChestMachine(ChestMachine):
    """Every change written through (small values packed in SQLite once the
    journal is folded); a crash (the folder copied as it is) at any step
    loses nothing."""

    shares_its_folder = False

    chest_kwargs = {"write_through": True, "packed": "sqlite", "packed_limit": 2000}

    def change_in_place(self, data, key, x) -> None:
        """A change made inside a value (``x = c[k]; x[0] = 1``) is no call
        on the chest: it is not written through (the key must be set again),
        so it would not survive a crash. Not done here."""

    @rule()
    def crash(self):
        copy = os.path.join(self.tmp, "crashed")
        shutil.copytree(self.path, copy)
        try:
            reopened = Chest(path=copy)
            try:
                assert [strict(k) for k in reopened] == [strict(k) for k in self.d]
                for key, value in self.d.items():
                    assert same(reopened[key], value), key
            finally:
                reopened.close()
        finally:
            shutil.rmtree(copy, ignore_errors=True)


class JsonPackedChestMachine(JsonChestMachine):
    """A json chest whose small values are packed in LMDB."""

    shares_its_folder = False

    chest_kwargs = dict(JsonChestMachine.chest_kwargs, packed="lmdb")


SETTINGS = settings(max_examples=60, stateful_step_count=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


def test_chest_behaves_as_a_dict():
    run_state_machine_as_test(ChestMachine, settings=SETTINGS)


def test_memory_mapped_chest_behaves_as_a_dict():
    run_state_machine_as_test(
        MappedChestMachine, settings=settings(SETTINGS, max_examples=25))


def test_json_chest_behaves_as_a_dict():
    run_state_machine_as_test(
        JsonChestMachine, settings=settings(SETTINGS, max_examples=25))


def test_packed_chest_behaves_as_a_dict():
    pytest.importorskip("lmdb")
    run_state_machine_as_test(
        PackedChestMachine, settings=settings(SETTINGS, max_examples=40))


def test_write_through_chest_behaves_as_a_dict_and_survives_a_crash():
    run_state_machine_as_test(
        WriteThroughChestMachine, settings=settings(SETTINGS, max_examples=40))


def test_json_packed_chest_behaves_as_a_dict():
    pytest.importorskip("lmdb")
    run_state_machine_as_test(
        JsonPackedChestMachine, settings=settings(SETTINGS, max_examples=20))


# -- bugs the machines found, reduced (fixed) -------------------------------
def test_update_from_a_half_spilled_chest_keeps_the_order(tmp_path):
    other = Chest(path=str(tmp_path / "other"), available_memory=100)
    other["a"] = np.zeros(100)  # 800 bytes: on disk
    other["b"] = 1  # in memory
    c = Chest(path=str(tmp_path / "c"))
    try:
        c.update(other)
        assert list(c) == list(other) == ["a", "b"]
    finally:
        c.close()
        other.close()


def test_nbytes_of_a_value_does_not_change_when_it_is_pickled(tmp_path):
    other = Chest(path=str(tmp_path / "other"))
    other["x"] = ["caf" + chr(0xE9)]  # a new str, not a cached constant
    c = Chest(path=str(tmp_path / "c"))
    try:
        c.update(other)  # c holds other's list
        other.flush()  # pickles it
        assert c.memory_usage == sum(nbytes(v) for v in c.inmem.values())
    finally:
        c.close()
        other.close()


def test_closed_chest_writes_an_in_place_change_when_closed_again(tmp_path):
    path = str(tmp_path / "c")
    c = Chest(path=path, available_memory=10**6)
    c["x"] = np.zeros(3)
    c.close()
    x = c["x"]  # reloaded, and held in memory
    x[0] = 5
    c.close()
    again = Chest(path=path)
    try:
        assert again["x"][0] == 5
    finally:
        again.close()
