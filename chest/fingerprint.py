"""How a chest knows that a value it read from disk is still unchanged.

A value loaded from disk stays in memory *and* in its file. When it is
evicted again, the chest writes it only if it may have changed since it was
read. ``fingerprint(value)`` gives a token taken at load time and compared at
eviction time:

- immutable values (``None``, numbers, ``str``, ``bytes``, and tuples or
  frozensets of those) cannot change: their token is :data:`IMMUTABLE`;
- numpy arrays and ``bytearray`` get a 64-bit xxh3 hash of their memory
  (about 20 GB/s) together with dtype and shape;
- anything else (lists, dicts, pandas objects, user classes) has no token:
  the chest cannot tell, so it writes the value again on eviction.

Examples
--------
>>> fingerprint((1, "a", b"b")) is IMMUTABLE
True
>>> x = bytearray(b"abc")
>>> before = fingerprint(x)
>>> x[0] = 0
>>> fingerprint(x) == before
False
>>> fingerprint([1, 2]) is None
True
"""
from __future__ import annotations

import sys
from typing import Any, Hashable, Optional

import xxhash

__all__ = ["fingerprint", "IMMUTABLE"]


class _Immutable:
    def __repr__(self) -> str:
        return "IMMUTABLE"


#: The token of values that cannot change in place.
IMMUTABLE = _Immutable()

_SCALARS = (type(None), bool, int, float, complex, str, bytes)


def _is_immutable(value: Any, depth: int = 0) -> bool:
    if type(value) in _SCALARS:
        return True
    if type(value) in (tuple, frozenset) and depth < 3 and len(value) <= 64:
        return all(_is_immutable(v, depth + 1) for v in value)
    return False


def fingerprint(value: Any) -> Optional[Hashable]:
    """A token that changes when ``value`` changes in place; None if unknown."""
    if _is_immutable(value):
        return IMMUTABLE
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.generic) and not isinstance(
        value, numpy.void
    ):
        return IMMUTABLE
    if type(value) is bytearray:
        return ("bytearray", len(value), xxhash.xxh3_64_intdigest(value))
    if numpy is not None and type(value) is numpy.ndarray:
        if value.dtype.hasobject:
            return None
        if value.flags.c_contiguous:
            data = value
        elif value.flags.f_contiguous:
            data = value.T
        else:
            return None
        return (
            "ndarray",
            value.dtype.str,
            value.shape,
            value.strides,
            xxhash.xxh3_64_intdigest(data.reshape(-1).view("u1")) if value.size else 0,
        )
    return None
