"""nbytes: exact for arrays, pandas, bytes and str; sampled for containers."""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from chest.sizeof import SizeRegistry, nbytes


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
