"""fingerprint: detects in-place changes of arrays; trusts immutables only."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from chest.fingerprint import IMMUTABLE, bytes_token, fingerprint, unchanged


@pytest.mark.parametrize("value", [None, 1, 2.5, "s", b"b", (1, "a"),
                                   frozenset({1}), np.float32(1), True])
def test_immutables(value):
    assert fingerprint(value) is IMMUTABLE


@pytest.mark.parametrize("value", [[1], {"a": 1}, {1}, (1, [2]), object()])
def test_unknown_mutables_have_no_token(value):
    assert fingerprint(value) is None


@pytest.mark.parametrize("make", [
    lambda: np.arange(100.0),
    lambda: np.asfortranarray(np.ones((10, 10))),
    lambda: np.zeros(5, dtype="i1"),
])
def test_array_changes_change_the_token(make):
    x = make()
    before = fingerprint(x)
    assert fingerprint(x.copy(order="K")) == before
    x.flat[3] = 7
    assert fingerprint(x) != before


def test_reshape_in_place_changes_the_token():
    x = np.arange(12)
    before = fingerprint(x)
    x.shape = (3, 4)
    assert fingerprint(x) != before


def test_non_contiguous_and_object_arrays_have_no_token():
    assert fingerprint(np.ones((10, 10))[:, ::2]) is None
    assert fingerprint(np.array([1, "a"], dtype=object)) is None


def test_unchanged_hashes_an_array_once(monkeypatch):
    import chest.fingerprint as module

    x = np.arange(1000.0)
    token = fingerprint(x)
    calls = []
    real = module.xxhash.xxh3_64_intdigest
    monkeypatch.setattr(module.xxhash, "xxh3_64_intdigest",
                        lambda data: calls.append(1) or real(data))
    assert unchanged(token, x, pickle.dumps)
    assert len(calls) == 1  # eviction of a clean array costs one pass over it
    x[0] = -1
    assert not unchanged(token, x, pickle.dumps)


def test_unchanged_small_values_compare_their_pickle():
    value = {"a": [1, 2]}
    token = bytes_token(pickle.dumps(value, protocol=5))
    assert unchanged(token, value, lambda v: pickle.dumps(v, protocol=5))
    value["a"].append(3)
    assert not unchanged(token, value, lambda v: pickle.dumps(v, protocol=5))


# pandas ---------------------------------------------------------------------

@pytest.fixture
def pd():
    return pytest.importorskip("pandas")


def roundtrip(value):
    """As the chest reads a value back from its file."""
    return pickle.loads(pickle.dumps(value, protocol=5))


def make_frame(pd):
    # An unsorted index, numbers, strings (pyarrow-backed where pandas 3
    # has pyarrow) and several extension dtypes.
    n = 10
    return pd.DataFrame({
        "a": np.arange(n, dtype="f8"),
        "b": np.arange(n, dtype="i8"),
        "s": [f"s{i}" for i in range(n)],
        "cat": pd.Categorical(list("xyzxyzxyzx")),
        "int": pd.array([1, None] * (n // 2), dtype="Int64"),
        "bool": pd.array([True, None] * (n // 2), dtype="boolean"),
        "tz": pd.date_range("2020", periods=n, tz="Europe/Paris"),
        "period": pd.period_range("2020", periods=n, freq="M"),
        "when": pd.date_range("2020", periods=n),
    }, index=np.arange(n)[::-1].copy())


def test_frame_token_is_stable(pd):
    df = make_frame(pd)
    token = fingerprint(df)
    assert token is not None
    assert fingerprint(df) == token
    assert fingerprint(df.copy()) == token
    assert fingerprint(df.copy(deep=True)) == token
    assert fingerprint(roundtrip(df)) == token  # how the chest reads it
    assert unchanged(token, df, pickle.dumps)


def test_series_and_index_tokens_are_stable(pd):
    df = make_frame(pd)
    for name in df.columns:
        s = df[name]
        token = fingerprint(s)
        assert token is not None, name
        assert fingerprint(s.copy()) == token
        assert fingerprint(roundtrip(s)) == token
    for index in [df.index, df.columns, pd.RangeIndex(3, 30, 3, name="r"),
                  pd.date_range("2020", periods=5, freq="D", name="d"),
                  pd.date_range("2020", periods=5, tz="UTC"),
                  pd.timedelta_range("1D", periods=5),
                  pd.period_range("2020", periods=5, freq="Q"),
                  pd.CategoricalIndex(list("abca")),
                  pd.Index([1, "a", 2.5, None, (1, "b")], dtype=object),
                  pd.MultiIndex.from_product([[1, 2], ["x", "y"]], names=["n", "s"])]:
        token = fingerprint(index)
        assert token is not None, index
        assert fingerprint(index.copy()) == token
        assert fingerprint(roundtrip(index)) == token


def _set_cell(column, value):
    def change(df):
        df.iloc[0, df.columns.get_loc(column)] = value
    return change


def _set_attr(df):
    df.attrs["k"] = 1


def _set_index_name(df):
    df.index.name = "x"


FRAME_CHANGES = {
    "iloc": lambda df: df.iloc.__setitem__((0, 0), -1.0),
    "loc": lambda df: df.loc.__setitem__((5, "b"), 99),
    "iadd": lambda df: df.__setitem__("a", df["a"] + 1),
    "new column": lambda df: df.__setitem__("new", 1),
    "del": lambda df: df.__delitem__("a"),
    "columns": lambda df: setattr(df, "columns", [f"c{i}" for i in range(df.shape[1])]),
    "index": lambda df: setattr(df, "index", df.index + 100),
    "index name": _set_index_name,
    "sort_index": lambda df: df.sort_index(inplace=True),
    "attrs": _set_attr,
    "rename": lambda df: df.rename(columns={"a": "A"}, inplace=True),
    "astype": lambda df: df.__setitem__("b", df["b"].astype("f8")),
    "astype same values": lambda df: df.__setitem__("a", df["a"].astype("f4")),
    "drop": lambda df: df.drop(index=3, inplace=True),
    "reset_index": lambda df: df.reset_index(inplace=True),
    "negative zero": lambda df: df.iloc.__setitem__((df.index.get_loc(0), 0), -0.0),
    "flags": lambda df: setattr(df.flags, "allows_duplicate_labels", False),
    "column order": lambda df: df.insert(0, "a2", df.pop("a")),
    "string": _set_cell("s", "changed"),
    "string to missing": _set_cell("s", None),
    "category": _set_cell("cat", "z"),
    "new category": lambda df: df.__setitem__(
        "cat", df["cat"].cat.rename_categories(["X", "Y", "Z"])),
    "nullable int": _set_cell("int", 7),
    "nullable int to NA": _set_cell("int", None),
    "nullable bool": _set_cell("bool", False),
    "tz-aware": lambda df: _set_cell("tz", df["tz"].iloc[5])(df),
    "timezone": lambda df: df.__setitem__("tz", df["tz"].dt.tz_convert("UTC")),
    "period": _set_cell("period", "1999-01"),
    "datetime": _set_cell("when", np.datetime64("2001-01-01")),
}


@pytest.mark.filterwarnings("ignore:The inplace keyword")  # pandas 3.1
@pytest.mark.parametrize("change", FRAME_CHANGES.values(), ids=FRAME_CHANGES.keys())
def test_frame_changes_change_the_token(pd, change):
    df = make_frame(pd)
    token = fingerprint(df)
    change(df)
    after = fingerprint(df)
    assert after is not None  # still hashable: the change itself is seen
    assert after != token
    assert not unchanged(token, df, pickle.dumps)


def test_duplicate_column_labels(pd):
    df = pd.DataFrame([[1.0, 2.0]], columns=["a", "a"])
    token = fingerprint(df)
    assert token is not None
    df.iloc[0, 1] = 3.0
    assert fingerprint(df) != token


def test_frame_read_back_then_changed(pd):
    df = roundtrip(make_frame(pd))
    token = fingerprint(df)
    df.iloc[-1, 0] = 1e9
    assert fingerprint(df) != token


def test_strided_columns_hash_like_their_copy(pd, monkeypatch):
    import chest.fingerprint as module

    monkeypatch.setattr(module, "_CHUNK", 64)  # several parts a column
    rows = np.arange(3000.0).reshape(1000, 3)
    df = pd.DataFrame(rows, copy=False)  # columns are strided views of rows
    assert not df[0].to_numpy().flags.c_contiguous
    token = fingerprint(df)
    assert token is not None
    assert fingerprint(df.copy()) == token  # contiguous columns
    assert fingerprint(roundtrip(df)) == token
    df.iloc[999, 2] = -1.0
    assert fingerprint(df) != token


def test_series_changes_change_the_token(pd):
    def series():
        return pd.Series(np.arange(5.0), index=list("abcde"), name="s")

    for change in [lambda s: setattr(s, "name", "t"),
                   lambda s: setattr(s, "name", None),
                   lambda s: s.__setitem__("a", 9.0),
                   lambda s: s.iloc.__setitem__(0, 9.0),
                   lambda s: setattr(s, "index", list("vwxyz")),
                   lambda s: s.index.set_names("i", inplace=True),
                   lambda s: s.attrs.update(k=1)]:
        s = series()
        token = fingerprint(s)
        change(s)
        after = fingerprint(s)
        assert after is not None and after != token


def test_labels_and_names_are_told_apart_exactly(pd):
    # == would not tell these apart: 1 == 1.0 == True, 0.0 == -0.0.
    names = [1, 1.0, True, 0.0, -0.0, "1", (1,)]
    tokens = {fingerprint(pd.Series([1.0], name=name)) for name in names}
    assert len(tokens) == len(names)
    labels = [[1, "a"], [1.0, "a"], [True, "a"], ["1", "a"], ["a", 1]]
    tokens = {fingerprint(pd.Index(label, dtype=object)) for label in labels}
    assert len(tokens) == len(labels)
    # String labels: lengths and text, not their concatenation alone.
    assert fingerprint(pd.Index(["ab", "c"], dtype=object)) != \
        fingerprint(pd.Index(["a", "bc"], dtype=object))


def test_index_changes_change_the_token(pd):
    idx = pd.date_range("2020", periods=5, freq="D")
    token = fingerprint(idx)
    idx.freq = None
    assert fingerprint(idx) != token
    mi = pd.MultiIndex.from_product([[1, 2], ["x", "y"]], names=["n", "s"])
    token = fingerprint(mi)
    mi.names = ["n", "t"]
    assert fingerprint(mi) != token
    assert fingerprint(mi.set_levels([3, 4], level=0)) != fingerprint(mi)
    assert fingerprint(pd.RangeIndex(0, 10, 2)) != fingerprint(pd.RangeIndex(0, 10, 3))


def test_pyarrow_strings_hash_by_content(pd):
    s = pd.Series([f"k{i}" for i in range(100)] + [None])
    if type(s.array).__name__ != "ArrowStringArray":
        pytest.skip("strings are not pyarrow-backed here")
    token = fingerprint(s)
    assert token is not None
    # The same strings in two chunks, or sliced, give the same token.
    joined = pd.concat([s.iloc[:10], s.iloc[10:]])
    assert joined.array.__arrow_array__().num_chunks == 2
    assert fingerprint(joined) == token
    part = s.iloc[5:50]
    assert fingerprint(part) == fingerprint(part.copy()) == fingerprint(roundtrip(part))
    assert fingerprint(part) != fingerprint(s.iloc[6:51].set_axis(part.index))


def test_pyarrow_strings_hash_in_bounded_memory(pd, monkeypatch):
    # The lengths of all strings were made at once (12-16 MB more for a
    # column of a million, while the frame was being written); a part at a
    # time now, with the same token.
    import tracemalloc

    import chest.fingerprint

    s = pd.Series([f"key {i}" for i in range(1_000_000)], dtype="string[pyarrow]")
    token = fingerprint(s)
    tracemalloc.start()
    try:
        assert fingerprint(s) == token
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * 2**20, peak
    monkeypatch.setattr(chest.fingerprint, "_LENGTHS_AT_ONCE", 3)
    assert fingerprint(s.iloc[:1000]) == fingerprint(s.iloc[:1000].copy())
    monkeypatch.setattr(chest.fingerprint, "_LENGTHS_AT_ONCE", 10**9)
    assert fingerprint(s) == token


def test_object_columns_have_no_token(pd):
    df = pd.DataFrame({"a": [1.0, 2.0], "o": [[1], [2]]})
    assert df["o"].dtype == object
    # The list changes in place: its column's pointers stay the same, so
    # a token of them would say "unchanged" and the change would be lost.
    before = df["o"].to_numpy().copy()
    df["o"].iloc[0].append(3)
    assert all(x is y for x, y in zip(df["o"].to_numpy(), before))
    assert df["o"].iloc[0] == [1, 3]
    assert fingerprint(df) is None
    assert fingerprint(df["o"]) is None
    assert fingerprint(pd.DataFrame({"a": ["x"]}, dtype=object)) is None


@pytest.mark.parametrize("make", [
    lambda pd: pd.Series([1, 0, 0], dtype="Sparse[int]"),
    lambda pd: pd.Series(pd.interval_range(0, 3)),
    lambda pd: pd.interval_range(0, 3),
    lambda pd: pd.Series(["a", "b"], dtype="string[python]"),
    lambda pd: pd.Series([{"a": 1}]),
    lambda pd: pd.DataFrame({"a": [1.0]}).rename(columns={"a": 1}).set_axis(
        pd.Index([[1]], dtype=object, tupleize_cols=False), axis=1),
    lambda pd: pd.Series([1.0], name=np.int64(1)),
])
def test_what_cannot_be_hashed_has_no_token(pd, make):
    assert fingerprint(make(pd)) is None


def test_unhashable_attrs_and_subclasses_have_no_token(pd):
    df = pd.DataFrame({"a": [1.0]})
    df.attrs["k"] = [1]
    assert fingerprint(df) is None

    class Frame(pd.DataFrame):
        pass

    assert fingerprint(Frame({"a": [1.0]})) is None


def test_pyarrow_numbers_have_no_token(pd):
    pytest.importorskip("pyarrow")
    assert fingerprint(pd.Series([1, 2], dtype="int64[pyarrow]")) is None


def test_pandas_is_not_imported():
    import subprocess
    import sys

    code = ("import sys, chest.fingerprint as f; f.fingerprint([1]); "
            "print('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "False"


# -- found by a probe: structured dtypes, maps of files the chest does not own,
# -- and what a token may cost ------------------------------------------------
@pytest.mark.parametrize("change", ["rename", "byte order", "field types"])
def test_a_structured_dtype_changed_in_place_changes_the_token(change):
    x = np.ones(100, [("a", "<i4"), ("b", "<f8")])
    before = fingerprint(x)
    assert before is not None
    if change == "rename":
        x.dtype.names = ("renamed", "b")
    elif change == "byte order":
        x.dtype = [("a", ">i4"), ("b", "<f8")]
    else:
        x.dtype = [("a", "<f4"), ("b", "<i8")]
    assert fingerprint(x) != before


def test_a_read_only_map_of_a_users_file_is_not_immutable(tmp_path):
    import mmap

    path = tmp_path / "data"
    path.write_bytes(np.zeros(1000).tobytes())
    with open(path, "r+b") as f:
        read_only = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        writable = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_WRITE)
    a = np.frombuffer(read_only, "f8")
    w = np.frombuffer(writable, "f8")
    token = fingerprint(a)
    assert token is not IMMUTABLE and token is not None
    w[0] = -1.0                     # the file changes under the read-only view
    assert a[0] == -1.0
    assert not unchanged(token, a, pickle.dumps)
    del a, w
    read_only.close()
    writable.close()


def test_an_array_over_the_chests_own_map_changes_only_its_view(tmp_path):
    # Its data cannot change; its shape and dtype can (they were taken for
    # unchanged: the change was never written).
    from chest import serialize

    path = tmp_path / "value"
    with open(path, "wb") as f:
        serialize.dump(np.arange(100_000, dtype="f8"), f)
    with open(path, "rb") as f:
        a = serialize.load_mapped(f)
    assert not a.flags.writeable
    token = fingerprint(a)
    assert token[0] == "mapped" and unchanged(token, a, pickle.dumps)
    assert fingerprint(a) == token  # (no hash of the data: nothing to read)
    a.shape = (1000, 100)
    assert not unchanged(token, a, pickle.dumps)
    a.shape = (100_000,)
    assert unchanged(token, a, pickle.dumps)
    a.dtype = ">f8"
    assert not unchanged(token, a, pickle.dumps)


def test_dtype_metadata_is_in_the_token():
    x = np.arange(10.0).astype(np.dtype("f8", metadata={"unit": "m"}))
    token = fingerprint(x)
    x.dtype = np.dtype("f8", metadata={"unit": "km"})
    assert fingerprint(x) != token
    assert fingerprint(np.arange(10.0)) != token


def test_a_wide_frame_of_short_columns_gets_no_token():
    pd = pytest.importorskip("pandas")
    wide = pd.DataFrame(np.zeros((100, 1000)))
    assert fingerprint(wide) is None  # cheaper to write again
    long = pd.DataFrame(np.zeros((5000, 100)))
    assert fingerprint(long) is not None


def test_arrow_strings_in_many_slices_get_the_token_of_their_content():
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    s = pd.Series(["a", None, "bcd"] * 3000, dtype="string[pyarrow]")
    pieces = pd.concat([s.iloc[i:i + 3] for i in range(0, len(s), 3)])
    whole = pd.Series(list(pieces), dtype="string[pyarrow]", index=pieces.index)
    assert fingerprint(pieces) == fingerprint(whole)  # by content, not chunks
    pieces.iloc[4] = "x"
    assert fingerprint(pieces) != fingerprint(whole)
