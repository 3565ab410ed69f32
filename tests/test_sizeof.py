"""nbytes: exact for arrays, pandas, bytes, str and containers (runs of ints
sampled); types chest does not know go to dask's registry once dask is imported."""
from __future__ import annotations

import os
import sys

import numpy as np
import pandas as pd
import pytest

from chest import sizeof
from chest.sizeof import MAX_DEPTH, SizeRegistry, nbytes


def test_numpy_arrays_views_and_broadcasts():
    x = np.ones((100, 100))
    assert nbytes(x) == 80_000
    assert nbytes(x[:10]) == 8_000
    assert nbytes(x[::2, ::2]) == 20_000
    assert nbytes(np.broadcast_to(np.ones(100), (10_000, 100))) == 800
    assert nbytes(np.float64(1.0)) >= 8


def test_object_arrays_count_their_objects():
    x = np.array(["x" * 1000] * 100, dtype=object)
    assert nbytes(x) > 100_000


def test_bytes_like_and_str():
    assert nbytes(b"x" * 1000) == sys.getsizeof(b"x" * 1000)
    assert nbytes(bytearray(1000)) == sys.getsizeof(bytearray(1000))
    assert nbytes(memoryview(b"x" * 1000)) >= 1000
    assert nbytes("é" * 1000) == sys.getsizeof("é" * 1000)


def test_pandas():
    df = pd.DataFrame({"a": np.arange(10_000), "s": ["word" * 5] * 10_000})
    deep = df.memory_usage(deep=True).sum()
    assert 0.8 * deep < nbytes(df) < 1.3 * deep
    assert nbytes(df["a"]) >= 80_000
    assert nbytes(pd.Index(np.arange(1000))) >= 8_000


#: Made anew for each test: pandas keeps what sizing may have made.
PANDAS_VALUES = {
    "range index": lambda: pd.DataFrame({"a": np.arange(100_000), "b": np.ones(100_000)}),
    "categorical": lambda: pd.Series(pd.Categorical(
        np.random.default_rng(0).choice(["apple", "banana", "cherry"], 100_000))),
    "categorical index": lambda: pd.DataFrame(
        {"x": np.arange(100_000)},
        index=pd.CategoricalIndex(np.repeat(["a", "b"], 50_000))),
    "multi index": lambda: pd.DataFrame(
        {"x": np.arange(100_000)},
        index=pd.MultiIndex.from_product([np.arange(1000), ["a", "b"] * 50])),
    "period": lambda: pd.Series(pd.period_range("2000", periods=100_000, freq="D")),
    "interval": lambda: pd.Series(pd.interval_range(0, 100_000)),
    "nullable ints": lambda: pd.Series(pd.array(np.arange(100_000), dtype="Int64")),
    "python strings": lambda: pd.Series(np.arange(100_000).astype(str), dtype="string[python]"),
    "objects": lambda: pd.Series(np.arange(100_000).astype(str).astype(object)),
    "datetimes": lambda: pd.Series(pd.date_range("2000", periods=100_000, freq="s", tz="UTC")),
    "sparse": lambda: pd.Series(pd.arrays.SparseArray(np.zeros(100_000))),
    "range index alone": lambda: pd.RangeIndex(100_000),
}


@pytest.mark.parametrize("name", sorted(PANDAS_VALUES))
def test_pandas_values_are_sized_as_pandas_counts_them(name):
    value = PANDAS_VALUES[name]()
    usage = value.memory_usage(deep=True)
    deep = int(usage if np.isscalar(usage) else usage.sum())
    assert 0.8 * deep <= nbytes(value) <= 1.3 * deep + 2048


def test_numpy_scalars_are_python_objects():
    # Sized by their nbytes (np.int64: 8 bytes of 32): a list of them
    # counted 2.5x less than it held.
    assert nbytes(np.int64(1)) == sys.getsizeof(np.int64(1))
    assert nbytes(np.bool_(True)) == sys.getsizeof(np.bool_(True))
    items = list(np.arange(10_000))
    held = sys.getsizeof(items) + sum(map(sys.getsizeof, items))
    assert 0.9 * held <= nbytes(items) <= 1.1 * held


def test_numpy_strings_are_sized_by_what_they_hold():
    # As Python strings (tolist): 4x what they hold, 0.36 s and 64 MB for a
    # million.
    short = np.array([str(i) for i in range(100_000)], dtype=np.dtypes.StringDType())
    assert nbytes(short) == short.nbytes
    long = np.array(["x" * 100] * 1000, dtype=np.dtypes.StringDType())
    assert nbytes(long) == long.nbytes + 100 * 1000


def test_a_wide_frame_is_sized_by_its_blocks_as_by_its_columns(monkeypatch):
    n = 1000
    frame = pd.DataFrame({
        "i": np.arange(n), "f": np.random.default_rng(0).random(n),
        "s": np.arange(n).astype(str), "o": [[i] for i in range(n)],
        "c": pd.Categorical(np.arange(n) % 3),
        "t": pd.date_range("2000", periods=n, tz="UTC"),
        "n": pd.array(np.arange(n), dtype="Int64"),
        "p": pd.Series(np.arange(n).astype(str), dtype="string[python]"),
        "i2": np.arange(n), "sp": pd.arrays.SparseArray(np.zeros(n))})
    by_columns = nbytes(frame)
    monkeypatch.setattr(sizeof, "BY_BLOCKS", 0)
    assert nbytes(frame) == by_columns
    wide = pd.DataFrame(np.zeros((50, 10_000)))
    assert wide.values.nbytes <= nbytes(wide) <= 1.01 * wide.memory_usage(deep=True).sum()


@pytest.mark.parametrize("name", ["range index", "range index alone", "categorical"])
def test_sizing_a_pandas_value_makes_nothing_it_did_not_hold(name):
    """A RangeIndex's values were made (and then kept by pandas, 8 bytes a
    row for as long as the frame lived); a categorical was turned into an
    array of objects (a column of 1 MB counted as 70 MB)."""
    import tracemalloc

    value = PANDAS_VALUES[name]()
    tracemalloc.start()
    try:
        nbytes(value)
        fresh, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, peak

def test_containers_are_sampled_and_close():
    items = [np.ones(100) for _ in range(1000)]
    assert 800_000 <= nbytes(items) < 900_000
    d = {i: "x" * 100 for i in range(10_000)}
    assert nbytes(d) > 10_000 * 100
    assert nbytes((1, 2, 3)) > sys.getsizeof((1, 2, 3))


def test_registry_by_type_and_by_name():
    sizes = SizeRegistry()

    class Thing:
        pass

    class SubThing(Thing):
        pass

    sizes.register(Thing)(lambda t: 7)
    assert sizes(SubThing()) == 7
    sizes.register(f"{__name__}.test_registry_by_type_and_by_name.<locals>.Other")(
        lambda o: 9)

    class Other:
        pass

    assert sizes(Other()) == 9


def test_a_broken_size_function_does_not_break_storage():
    class Broken:
        @property
        def nbytes(self):
            raise RuntimeError("no")

    assert nbytes(Broken()) > 0


@pytest.mark.parametrize("value", [None, 1, 1.5, "s", b"b", (), [], {}, set()])
def test_everything_has_a_size(value):
    assert nbytes(value) > 0


@pytest.mark.parametrize("char", ["a", "\xe9", "\u03b1", "\U0001F600"])
def test_str_size_is_exact_and_stable(char):
    import pickle
    text = "x" + char * 10
    assert nbytes(text) == sys.getsizeof("x" + char * 10)
    pickle.dumps(text)  # caches the UTF-8 form of a non-ASCII str
    assert nbytes(text) == sys.getsizeof("x" + char * 10)


def test_items_of_containers_use_the_registered_size(monkeypatch):
    # A registration for this test only: the registry is global.
    monkeypatch.setattr(nbytes, "_by_type", dict(nbytes._by_type))
    monkeypatch.setattr(nbytes, "_cache", {})
    nbytes.register(int)(lambda n: 10_000)  # say, ints that stand for handles
    assert nbytes([5, 6]) == sys.getsizeof([5, 6]) + 20_000
    assert nbytes({"k": 5}) == sys.getsizeof({"k": 5}) + nbytes("k") + 10_000


# -- big items among small ones: measured, never extrapolated --------------------
def _true_size(d):
    return (sys.getsizeof(d) + sum(map(nbytes, d))
            + sum(v.nbytes for v in d.values()))


def test_one_big_array_among_small_ones_is_counted():
    # Found by probing: 40 small arrays and one of 40 MB counted as ~6.6 kB,
    # so a chest with a 10 MB budget kept 400 MB in memory.
    d = {f"a{i}": np.ones(10) for i in range(40)}
    d["big"] = np.ones(5_000_000)
    assert abs(nbytes(d) - _true_size(d)) < 0.02 * _true_size(d)
    items = [np.ones(10) for _ in range(100)]
    items[37] = np.ones(1_000_000)  # not at an evenly spaced sample position
    assert nbytes(items) >= 8_000_000


@pytest.mark.parametrize("big", ["x" * 10_000_000, b"x" * 10_000_000,
                                 "\xe9" * 10_000_000])
def test_one_long_string_among_short_ones_is_counted(big):
    items = [big[:3]] * 999
    items[501] = big
    assert nbytes(items) >= 10_000_000
    assert nbytes({i: s for i, s in enumerate(items)}) >= 10_000_000
    assert nbytes({s: 1 for s in items}) >= 10_000_000


def test_big_values_nested_in_containers_are_counted():
    rows = [(i, [1.0, 2.0], {"k": "v"}) for i in range(1000)]
    rows[333] = (333, [1.0, np.ones(1_000_000)], {"k": "v"})
    assert nbytes(rows) >= 8_000_000
    records = [{"id": i, "tags": ["a", "b"]} for i in range(1000)]
    records[777]["tags"].append("x" * 5_000_000)
    assert nbytes(records) >= 5_000_000


def test_a_value_held_twice_is_counted_once():
    x = np.ones(1_000_000)
    assert 8_000_000 <= nbytes([x] * 100) < 9_000_000
    assert 8_000_000 <= nbytes({"a": x, "b": [x, (x,)]}) < 9_000_000
    assert 1_000_000 <= nbytes(["x" * 1_000_000] * 100) < 1_100_000
    assert 1_000_000 <= nbytes([b"x" * 1_000_000] * 100) < 1_100_000
    row = tuple(range(1000))  # a tuple of more than SAMPLE items is counted once
    assert nbytes([row] * 1000) < 2 * nbytes(row) + sys.getsizeof([row] * 1000)


def test_self_references_and_deep_nesting_terminate():
    a: list = [1, 2]
    a.append(a)
    assert sys.getsizeof(a) < nbytes(a) < 1000
    d: dict = {"x": np.ones(1000)}
    d["self"] = d
    d["pair"] = [d, a]
    assert 8000 <= nbytes(d) < 10_000
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert nbytes(deep) >= MAX_DEPTH * sys.getsizeof(deep)  # no RecursionError
    chain = (np.ones(1000),)
    for _ in range(100_000):
        chain = (chain, 1)
    assert nbytes(chain) > 0
    shared = (np.ones(1000), 1)
    for _ in range(80):  # 2**80 paths through 81 tuples
        shared = (shared, shared)
    assert 8000 <= nbytes(shared) < 100_000
    obj = np.empty(2, dtype=object)
    obj[0] = obj
    obj[1] = [obj, np.ones(1000)]
    assert 8000 <= nbytes(obj) < 10_000


def test_runs_of_small_scalars_are_exact_or_close():
    ints = list(range(100_000))
    exact = sys.getsizeof(ints) + sum(map(sys.getsizeof, ints))
    assert abs(nbytes(ints) - exact) < 0.02 * exact
    d = {f"key{i}": float(i) for i in range(10_000)}
    exact = sys.getsizeof(d) + sum(map(sys.getsizeof, d)) + 10_000 * sys.getsizeof(1.0)
    assert nbytes(d) == exact
    mixed = [1, "xx", 2.5, None, b"b", True, 3j] * 1000
    exact = sys.getsizeof(mixed) + sum(map(sys.getsizeof, mixed))
    assert nbytes(mixed) == exact


def test_chunks_add_up_to_the_whole(monkeypatch):
    # Big containers are walked CHUNK items at a time: with tiny chunks, the
    # same sizes come out.
    x = np.ones(1000)
    values = [
        list(range(100)),
        [(i, str(i), [1.0, i]) for i in range(100)],
        {str(i): {"v": [i, x], "s": {i}} for i in range(100)},
        set(range(100)) | {"a" * 2000},
        [["x" * 2000] * 3, x, x] * 40,
        frozenset((i, i) for i in range(100)),
    ]
    whole = [nbytes(v) for v in values]
    monkeypatch.setattr(sizeof, "CHUNK", 7)
    assert [nbytes(v) for v in values] == whole


# -- types chest does not know: dask's registry, when dask is imported -----------
def test_a_type_registered_with_dask_only_is_sized_by_dask(monkeypatch):
    dask_sizeof = pytest.importorskip("dask.sizeof")
    # Registrations for this test only: both registries are global.
    monkeypatch.setattr(dask_sizeof.sizeof, "_lookup", dict(dask_sizeof.sizeof._lookup))
    monkeypatch.setattr(nbytes, "_by_type", dict(nbytes._by_type))
    monkeypatch.setattr(nbytes, "_cache", {})

    class Handle:
        pass

    class Sub(Handle):
        pass

    plain = nbytes(Handle())  # first seen before its dask registration
    assert plain == sys.getsizeof(Handle())
    dask_sizeof.sizeof.register(Handle)(lambda h: 123_456)
    assert nbytes(Handle()) == 123_456
    assert nbytes(Sub()) == 123_456
    assert nbytes([Handle(), Handle()]) == sys.getsizeof([1, 2]) + 2 * 123_456
    assert nbytes({"k": [Handle()] * 30}) >= 123_456  # held 30 times: once

    # A registration with chest wins over dask's.
    nbytes.register(Handle)(lambda h: 7)
    assert nbytes(Handle()) == 7

    # dask's own fallback (sys.getsizeof) does not hide chest's guess.
    class WithNbytes:
        nbytes = 5_000

    assert nbytes(WithNbytes()) == 5_000

    # A broken dask function falls back to chest's guess.
    def broken(_):
        raise RuntimeError("no")

    dask_sizeof.sizeof.register(WithNbytes)(broken)
    assert nbytes(WithNbytes()) == 5_000


def test_dask_is_consulted_only_once_imported(tmp_path):
    pytest.importorskip("dask")
    import subprocess

    script = """
import sys
import chest
from chest import nbytes

class Handle:
    pass

nbytes(Handle()), nbytes([Handle()] * 30)
assert "dask" not in sys.modules, "sizing imported dask"

import dask.sizeof
dask.sizeof.sizeof.register(Handle)(lambda h: 123_456)
assert nbytes(Handle()) == 123_456, nbytes(Handle())
assert nbytes([Handle(), Handle()]) == sys.getsizeof([1, 2]) + 2 * 123_456
"""
    import chest
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(chest.__file__)))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("record", [
    {"a": 1, "bb": "text", "ccc": [1, 2]},             # ASCII str keys: joined
    {"a": 1, "\xe9t\xe9": 2},                            # a non-ASCII key
    {"a": 1, 2: "two", (3, 4): None},                  # str first, then others
    {1: "a", "b": 2},                                  # not str first
    {"x" * 5000: 1},                                   # a long key
])
def test_small_dicts_keys_are_counted_as_one_by_one(record):
    one_by_one = sys.getsizeof(record) + sum(
        nbytes(k) + nbytes(v) if type(v) is not list
        else nbytes(k) + sys.getsizeof(v) + sum(map(nbytes, v))
        for k, v in record.items())
    assert nbytes(record) == one_by_one


@pytest.mark.parametrize("record", [
    {"a": 1, "b": "x" * 20, "c": [1, 2]},              # peers.py's small value
    {"t": (1, 2.5, None, True, "x"), "n": 3},          # a tuple of scalars
    {"l": [], "t": ()},                                # empty ones
    {"l": ["\xe9"]},                                   # non-ASCII text inside
    {"l": [10 ** 40, -1]},                             # wide ints
    {"l": list(range(9))},                             # longer than the loop takes
    {"l": [1, [2, 3]]},                                # a list inside the list
    {"l": [1], "z": {"k": 2}},                         # a dict after the list
])
def test_records_with_short_lists_are_sized_as_their_parts(record):
    def one(v):
        if type(v) in (list, tuple):
            return sys.getsizeof(v) + sum(map(one, v))
        if type(v) is dict:
            return sys.getsizeof(v) + sum(one(k) + one(x) for k, x in v.items())
        return nbytes(v)
    assert nbytes(record) == one(record)
