"""How a chest knows that a value it read from disk is still unchanged.

A value loaded from disk stays in memory *and* in its file. When it is
evicted again, the chest writes it only if it may have changed since it was
read. ``fingerprint(value)`` gives a token taken at load time and compared at
eviction time:

- immutable values (``None``, numbers, ``str``, ``bytes``, and tuples or
  frozensets of those) cannot change: their token is :data:`IMMUTABLE`;
- numpy arrays and ``bytearray`` get a 64-bit xxh3 hash of their memory
  (15-25 GB/s) together with dtype and shape;
- anything else (lists, dicts, pandas objects, user classes) has no token
  of its own. Small values written or read by the default serialiser get
  :func:`bytes_token`, a hash of their pickle: pickling them again on
  eviction (microseconds) tells whether the file already holds them. Large
  ones are written again.

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

import mmap
import sys
from typing import Any, Callable, Hashable, Optional

import xxhash

__all__ = ["fingerprint", "bytes_token", "unchanged", "IMMUTABLE"]


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


def bytes_token(data: bytes) -> Hashable:
    """The token of a value whose file holds ``data``.

    A value in memory is unchanged if serialising it again gives the same
    bytes: then its file already holds exactly what would be written.
    """
    return ("bytes", len(data), xxhash.xxh3_64_intdigest(data))


def unchanged(token: Hashable, value: Any, dumps: Callable[[Any], bytes]) -> bool:
    """Does ``value`` still match ``token`` (from :func:`fingerprint` or
    :func:`bytes_token`)?

    A read-only memory map of the key's own file always does.
    """
    if type(token) is tuple and token[0] == "bytes":
        try:
            return bytes_token(dumps(value)) == token
        except Exception:
            return False
    return _is_mapped_array(value) or fingerprint(value) == token


def _is_mapped_array(value: Any) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and type(value) is numpy.ndarray and _is_mapped(value)


def _is_mapped(array: Any) -> bool:
    """Is ``array`` a read-only view of a memory-mapped file?"""
    if array.flags.writeable:
        return False
    base = array.base
    while type(base).__name__ == "ndarray":
        base = base.base
    return isinstance(getattr(base, "obj", base), mmap.mmap)


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
        if _is_mapped(value):
            return IMMUTABLE  # a read-only map of a file no one changes
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
