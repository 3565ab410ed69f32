"""How many bytes a value holds in memory.

``nbytes(value)`` looks the value's type up in a registry (walking the
type's MRO), so numpy and pandas are sized without being imported here, and
users can add their own types with ``nbytes.register``.

Examples
--------
>>> nbytes(b"x" * 1000) >= 1000
True
>>> class Blob:
...     def __init__(self, n):
...         self.n = n
>>> @nbytes.register(Blob)
... def _(blob):
...     return blob.n
>>> nbytes(Blob(123))
123
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Dict, Union

__all__ = ["nbytes"]

#: How many items of a big container are sized to estimate the rest.
SAMPLE = 20


class SizeRegistry:
    """A function from values to byte counts, dispatched on the value's type.

    Types can be registered as classes, or as ``"module.QualName"`` strings
    so that a library need not be imported until one of its values is seen.
    """

    def __init__(self) -> None:
        self._by_type: Dict[type, Callable[[Any], int]] = {}
        self._by_name: Dict[str, Callable[[Any], int]] = {}
        self._cache: Dict[type, Callable[[Any], int]] = {}

    def register(self, cls: Union[type, str]) -> Callable:
        """Register the sizing function of ``cls`` (a type or "module.Name")."""

        def decorator(func: Callable[[Any], int]) -> Callable[[Any], int]:
            if isinstance(cls, str):
                self._by_name[cls] = func
            else:
                self._by_type[cls] = func
            self._cache.clear()
            return func

        return decorator

    def dispatch(self, cls: type) -> Callable[[Any], int]:
        """The sizing function for values of type ``cls``."""
        try:
            return self._cache[cls]
        except KeyError:
            pass
        func = _default_size
        for base in cls.__mro__:
            found = self._by_type.get(base) or self._by_name.get(
                f"{base.__module__}.{base.__qualname__}"
            )
            if found is not None:
                func = found
                break
        self._cache[cls] = func
        return func

    def __call__(self, value: Any) -> int:
        try:
            return int(self.dispatch(type(value))(value))
        except Exception:
            # A broken __sizeof__ or nbytes must not make the value unstorable.
            return sys.getsizeof(value, 64)


def _default_size(value: Any) -> int:
    size = getattr(value, "nbytes", None)
    if isinstance(size, int):
        return size
    return sys.getsizeof(value)


nbytes = SizeRegistry()


for _scalar in (int, float, complex, bool, bytes, bytearray, type(None)):
    nbytes.register(_scalar)(sys.getsizeof)

# What CPython adds to a non-ASCII str's characters (the ASCII one is exact).
_STR_HEADER = sys.getsizeof("x\xe9") - 3


@nbytes.register(str)
def _size_str(text: str) -> int:
    # sys.getsizeof of a non-ASCII str grows once its UTF-8 form is cached
    # (by pickling it, say): count the characters, so the size stays put.
    if text.isascii():
        return sys.getsizeof(text)
    code = ord(max(text))
    kind = 1 if code < 0x100 else 2 if code < 0x10000 else 4
    return _STR_HEADER + (len(text) + 1) * kind


def _sampled(items: Any) -> int:
    """Estimated size of the items of a container, sizing at most SAMPLE."""
    n = len(items)
    if n > SAMPLE:
        items = list(items)
        step = n / SAMPLE
        return int(_size_items([items[int(i * step)] for i in range(SAMPLE)])
                   * n / SAMPLE)
    return _size_items(items)


def _size_items(items: Any) -> int:
    # Containers are sized on every set, and their items are mostly builtins
    # registered under their exact type: call those functions directly, and
    # sys.getsizeof without a Python call around it.
    by_type = nbytes._by_type
    getsizeof = sys.getsizeof
    total = 0
    for x in items:
        func = by_type.get(type(x))
        if func is getsizeof or (func is _size_str and x.isascii()):
            total += getsizeof(x)
            continue
        if func is not None:
            try:
                total += int(func(x))
                continue
            except Exception:
                pass
        total += nbytes(x)
    return total


@nbytes.register(list)
@nbytes.register(tuple)
@nbytes.register(set)
@nbytes.register(frozenset)
def _size_sequence(value: Any) -> int:
    return sys.getsizeof(value) + _sampled(value)


@nbytes.register(dict)
def _size_dict(value: dict) -> int:
    return sys.getsizeof(value) + _sampled(value.keys()) + _sampled(value.values())


@nbytes.register(memoryview)
def _size_memoryview(value: memoryview) -> int:
    return sys.getsizeof(value) + value.nbytes


@nbytes.register("numpy.ndarray")
def _size_ndarray(array: Any) -> int:
    if 0 in array.strides:
        # A broadcast array holds only the data of its non-repeated axes.
        index = tuple(slice(None) if s else slice(0, 1) for s in array.strides)
        array = array[index]
    size = int(array.nbytes)
    if array.dtype.hasobject:
        size += _sampled(array.ravel().tolist()) if array.size else 0
    return size


@nbytes.register("pandas.Series")
@nbytes.register("pandas.core.series.Series")
@nbytes.register("pandas.Index")
@nbytes.register("pandas.core.indexes.base.Index")
def _size_series(series: Any) -> int:
    return _pandas_array_size(series.array) + (
        _size_index(series.index) if hasattr(series, "index") else 0
    ) + 256


def _size_index(index: Any) -> int:
    return _pandas_array_size(index.array) if len(index) else 64


@nbytes.register("pandas.DataFrame")
@nbytes.register("pandas.core.frame.DataFrame")
def _size_dataframe(frame: Any) -> int:
    columns = sum(_pandas_array_size(frame.iloc[:, i].array)
                  for i in range(frame.shape[1]))
    return columns + _size_index(frame.index) + _size_index(frame.columns) + 512


def _pandas_array_size(array: Any) -> int:
    """Size of a pandas array; Python objects (strings) in it are sampled."""
    if getattr(array.dtype, "kind", "O") != "O" or "pyarrow" in str(
        getattr(array.dtype, "storage", "")
    ):
        return int(array.nbytes)
    import numpy as np

    return _size_ndarray(np.asarray(array, dtype=object))
