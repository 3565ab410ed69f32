"""Default dump/load: pickle 5, cloudpickle fallback, readable by pickle.load."""
from __future__ import annotations

import io
import collections
import pickle

import numpy as np
import pytest

from chest.serialize import dump, dumps, load


def roundtrip(value):
    f = io.BytesIO()
    dump(value, f)
    f.seek(0)
    return pickle.load(f)


def test_protocol_5_and_plain_pickle_load():
    f = io.BytesIO()
    dump({"a": 1}, f)
    assert f.getvalue()[:2] == b"\x80\x05"
    f.seek(0)
    assert load(f) == {"a": 1}


def test_arrays_roundtrip_including_fortran_and_views():
    x = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    assert np.array_equal(roundtrip(x), x)
    assert np.array_equal(roundtrip(x[:, ::2]), x[:, ::2])


def test_cloudpickle_fallback_after_a_partial_write():
    def local(y):
        return y * 2

    class Local:
        pass

    value = [np.ones(10), local, Local]
    back = roundtrip(value)
    assert back[1](2) == 4 and back[2].__name__ == "Local"


def test_unpicklable_raises_the_pickle_error():
    import threading
    with pytest.raises(TypeError):
        dump(threading.Lock(), io.BytesIO())


def file_of(value, tmp_path):
    path = tmp_path / "value"
    with open(path, "wb", buffering=0) as f:
        dump(value, f)
    return path


@pytest.mark.parametrize("make", [
    lambda: np.arange(100_000.0),
    lambda: {"x": np.arange(100_000.0), "small": [1, 2],
             "f": np.ones((300, 400), order="F")},
    lambda: (np.arange(100_000), np.arange(100_000)),  # the second one memoized
    lambda: [np.ones(20_000), bytearray(100_000), np.ones(20_000)],
    lambda: bytearray(200_000),
    lambda: np.array(["x"] * 100_000, dtype=object),
    lambda: np.arange(10**6).reshape(1000, 1000)[:, :500],
    lambda: "small",
])
def test_load_reads_exactly_what_pickle_load_reads(tmp_path, make):
    value = make()
    path = file_of(value, tmp_path)
    with open(path, "rb", buffering=0) as f:
        ours = load(f)
    with open(path, "rb") as f:
        theirs = pickle.load(f)
    assert type(ours) is type(theirs)
    assert pickle.dumps(ours, protocol=5) == pickle.dumps(theirs, protocol=5)


def innermost_base(array):
    while isinstance(getattr(array, "base", None), np.ndarray):
        array = array.base
    return array.base


def test_large_arrays_are_read_into_numpy_memory(tmp_path):
    big = np.zeros(2**22)  # 32 MiB: from here on, numpy's memory fills faster
    path = file_of({"a": big, "b": bytearray(100_000)}, tmp_path)
    with open(path, "rb", buffering=0) as f:
        value = load(f)
    assert innermost_base(value["a"]) is None  # numpy's own memory, no bytearray
    assert value["a"].flags.writeable and np.array_equal(value["a"], big)
    assert type(value["b"]) is bytearray  # not numpy's: read in-band


def test_smaller_arrays_are_read_by_pickle_load(tmp_path):
    # Below 32 MiB, pickle.load (all in C) is the faster reader.
    path = file_of(np.arange(100_000.0), tmp_path)
    with open(path, "rb", buffering=0) as f:
        value = load(f)
    assert innermost_base(value) is not None  # a view of pickle's bytearray
    assert value.flags.writeable and value[-1] == 99_999.0


def test_truncated_file_raises(tmp_path):
    path = file_of(np.arange(100_000.0), tmp_path)
    path.write_bytes(path.read_bytes()[:-100])
    with open(path, "rb", buffering=0) as f, pytest.raises(Exception):
        load(f)


def test_cloudpickle_fallback_in_a_file_that_cannot_be_cut_back(tmp_path):
    # gzip files cannot seek back and truncate: the fallback pickles in memory.
    import gzip

    def local(y):
        return y * 3

    with gzip.open(tmp_path / "v.gz", "wb") as f:
        dump([np.ones(3), local], f)
    with gzip.open(tmp_path / "v.gz", "rb") as f:
        back = load(f)
    assert back[1](2) == 6


def test_cloudpickle_fallback_in_a_plain_file_cuts_back(tmp_path):
    def local(y):
        return y * 2

    value = [np.ones(100_000), local]
    back = pickle.loads(file_of(value, tmp_path).read_bytes())
    assert back[1](2) == 4 and np.array_equal(back[0], value[0])


class WithFinalizer:
    def __del__(self):
        pass


class Plain:
    pass


@pytest.mark.parametrize("value", [
    WithFinalizer(), [1, {"deep": (WithFinalizer(),)}], {"x": Plain(), "y": WithFinalizer()}])
def test_values_holding_a_finalizer_are_refused(value, tmp_path):
    # An object whose __del__ frees a resource (partd's File deletes its
    # folder) must not be copied to disk and dropped.
    from chest.errors import BoundToMemoryError
    with pytest.raises(BoundToMemoryError, match="WithFinalizer.*__del__"):
        dumps(value)
    with pytest.raises(BoundToMemoryError):
        file_of(value, tmp_path)


def test_keep_in_memory_names_a_type_by_class_or_name():
    from chest import keep_in_memory
    from chest.errors import BoundToMemoryError

    class Handle:
        pass

    class Sub(Handle):
        pass

    assert dumps(Sub())
    keep_in_memory(Handle)
    with pytest.raises(BoundToMemoryError, match="keep_in_memory"):
        dumps([Sub()])

    class Named:
        pass
    Named.__module__ = "somelib"
    Named.__qualname__ = "Named"
    keep_in_memory("somelib.Named")
    with pytest.raises(BoundToMemoryError):
        dumps({"a": Named()})


@pytest.mark.parametrize("value", [
    {"a": 1, "b": "text", "c": [1, 2.5, None]},        # builtins only: the fast path
    [147, 130, "\u0393\u0394", b"\x93\x82", (1, 2)],  # a class's bytes in the data
    ({"nested": {"deep": [True, 3j]}},),
    [collections.OrderedDict(a=1), {1, 2}],            # classes: the checked path
])
def test_records_pickle_as_pickle_does(value):
    assert dumps(value) == pickle.dumps(value, protocol=5)
    assert pickle.loads(dumps(value)) == value


def test_a_finalizer_deep_in_a_record_is_still_refused():
    from chest.errors import BoundToMemoryError
    with pytest.raises(BoundToMemoryError):
        dumps({"a": 1, "b": [2, {"c": (3, WithFinalizer())}]})
