"""Default dump/load: pickle 5, cloudpickle fallback, readable by pickle.load."""
from __future__ import annotations

import io
import pickle

import numpy as np
import pytest

from chest.serialize import dump, load


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
