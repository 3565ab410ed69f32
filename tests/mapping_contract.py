"""One check of the ``MutableMapping`` contract, run on every configuration."""
from __future__ import annotations

from collections.abc import MutableMapping
from typing import Callable

import pytest


def check_mapping(make: Callable[[], MutableMapping], values: list) -> None:
    """Check that ``make()`` (empty) behaves as a dict, with ``values`` stored.

    ``values`` are at least three distinct, comparable values the mapping
    can hold.
    """
    m = make()
    d: dict = {}
    assert isinstance(m, MutableMapping)
    assert len(m) == 0 and list(m) == [] and not m.keys()
    keys = ["x", 1, ("a", "b"), ("a", ("b", 2)), None, 2.5, b"raw", frozenset({1, 2})]
    for i, key in enumerate(keys):
        m[key] = d[key] = values[i % len(values)]
    assert len(m) == len(d)
    assert list(m) == list(d)
    assert dict(m.items()) == d
    assert m == d
    for key in keys:
        assert key in m
        assert m[key] == d[key]
        assert m.get(key) == d[key]
    assert "missing" not in m
    assert m.get("missing") is None
    assert m.get("missing", 7) == 7
    with pytest.raises(KeyError):
        m["missing"]
    with pytest.raises(KeyError):
        del m["missing"]
    with pytest.raises(TypeError):
        m[["unhashable"]] = 1
    with pytest.raises(TypeError):
        m[{"unhashable": 1}]

    # Equal keys are one key, as in a dict; the first key object stays.
    m[1.0] = d[1.0] = values[1]
    m[True] = d[True] = values[2]
    assert list(m) == list(d) and m[1] == d[1]

    assert m.pop("x") == d.pop("x")
    assert m.pop("x", "default") == "default"
    assert m.setdefault("new", values[0]) == d.setdefault("new", values[0])
    assert m.setdefault("new", values[1]) == d.setdefault("new", values[1])
    assert m.popitem() == d.popitem()
    m.update({"u": values[1]}, v=values[2])
    d.update({"u": values[1]}, v=values[2])
    assert m == d and list(m) == list(d)
    del m[None]
    del d[None]
    assert list(m) == list(d)
    m.clear()
    assert len(m) == 0 and list(m) == []
