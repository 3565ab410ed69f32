"""How a chest knows that a value it read from disk is still unchanged.

A value loaded from disk stays in memory *and* in its file. When it is
evicted again, the chest writes it only if it may have changed since it was
read. ``fingerprint(value)`` gives a token taken at load time and compared at
eviction time:

- immutable values (``None``, numbers, ``str``, ``bytes``, and tuples or
  frozensets of those) cannot change: their token is :data:`IMMUTABLE`;
- numpy arrays and ``bytearray`` get a 64-bit xxh3 hash of their memory
  (15-25 GB/s) together with dtype (with its metadata) and shape; a
  read-only map of the chest's own file (``mmap=True``) only its dtype,
  shape and strides: its data cannot change, its view can;
- pandas ``DataFrame``, ``Series`` and ``Index`` (exact classes) get a
  tuple of everything a pickle of them holds: the class, shape, index and
  column labels with their names (``freq`` of datetime indexes), dtypes,
  an xxh3 hash of every column's data (numpy columns; categorical codes and
  categories; nullable data and mask; tz-aware and period integers; the
  lengths and text of pyarrow-backed strings), ``attrs``, ``flags`` and a
  Series' ``name``. Parts that cannot be hashed by content (object or Python
  string columns, sparse, interval, other pyarrow-backed columns, labels
  or ``attrs`` that are not plain immutables, subclasses) give no token;
- anything else (lists, dicts, user classes) has no token
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
import pickle
import sys
from typing import Any, Callable, Hashable, List, Optional, Tuple

import xxhash

__all__ = ["fingerprint", "bytes_token", "unchanged", "IMMUTABLE", "FileMap"]


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

    """
    if type(token) is tuple and token[0] == "bytes":
        try:
            return bytes_token(dumps(value)) == token
        except Exception:
            return False
    now = fingerprint(value)
    if type(now) is tuple and now[0] == "mapped" and type(token) is tuple \
            and token[0] == "ndarray":
        # A map of the file written from the array the token is of: the
        # same data, so the same value if it is viewed the same way.
        return now[1:] == token[1:4]
    return now == token


def _dtype_kind(dtype: Any) -> Any:
    """What of a dtype a token holds: its str ('<f8', with the byte order),
    or its pickle where that says more: a structured dtype's str is only
    its width ('|V12'; its fields' names, types and byte order are in the
    pickle), and metadata (``np.dtype('f8', metadata={...})``, h5py's
    enums) is not in the str either."""
    if dtype.fields is None and dtype.metadata is None:
        return dtype.str
    return pickle.dumps(dtype, protocol=5)


class FileMap(mmap.mmap):
    """A read-only map of a chest's own value file (``mmap=True``). The
    chest never changes a file in place (a new value is a new file renamed
    over it), so an array over one of these cannot change. A map of any
    other file can: another map, or another process, may write to it."""


def _is_mapped(array: Any) -> bool:
    """Is ``array`` a read-only view of a chest's own value file?"""
    if array.flags.writeable:
        return False
    base = array.base
    while type(base).__name__ == "ndarray":
        base = base.base
    return isinstance(getattr(base, "obj", base), FileMap)


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
        dtype = value.dtype
        if _is_mapped(value):
            # A read-only map of a file no one changes: its data cannot
            # change, but its shape and dtype can (``a.shape = ...``).
            return ("mapped", _dtype_kind(dtype), value.shape, value.strides)
        if dtype.hasobject:
            return None
        kind = _dtype_kind(dtype)
        if value.flags.c_contiguous:
            data = value
        elif value.flags.f_contiguous:
            data = value.T
        else:
            return None
        return (
            "ndarray",
            kind,
            value.shape,
            value.strides,
            xxhash.xxh3_64_intdigest(data.reshape(-1).view("u1")) if value.size else 0,
        )
    pandas = sys.modules.get("pandas")
    if pandas is not None and numpy is not None:
        return _pandas_token(value, pandas, numpy)
    return None


# pandas
# ------
# A pandas object's token holds every part its pickle holds, each by
# content, never by identity: a false "unchanged" would leave an in-place
# change out of its file. A part that cannot be hashed so makes the whole
# token None (written again on eviction). pandas is never imported here.
#
# Cost (pandas 3.1, numpy 2.4, 2 cores, best of 7): a 100 MB float64
# DataFrame of 10 columns x 1.25M rows takes 9.5 ms, against 7.7 ms for
# xxh3 of the same bytes as one array and 82 ms for pickling it. Columns
# come through ``DataFrame.items`` and ``Series.to_numpy``: views, nothing
# copied, ~20 us a column (10,000 columns of 100 rows: 150 ms). A small
# frame (2-5 columns of 10-100 rows) takes 130-250 us, more than pickling
# it again (45-100 us), which the chest does for values it packs or reads
# as bytes when they have no token.

#: Bytes copied at a time when a non-contiguous column is hashed.
_CHUNK = 1 << 18


def _pandas_token(value: Any, pandas: Any, numpy: Any) -> Optional[Hashable]:
    try:
        kind = type(value)
        if kind is pandas.DataFrame:
            return _frame_token(value, pandas, numpy)
        if kind is pandas.Series:
            return _series_token(value, pandas, numpy)
        if isinstance(value, pandas.Index):
            return _index_token(value, pandas, numpy)
    except Exception:  # an unforeseen pandas version or object: no token
        return None
    return None


def _plain(value: Any) -> Optional[bytes]:
    """The pickle of an immutable value (a label, a name), which tells
    apart what ``==`` does not (``1``, ``1.0``, ``True``; ``0.0``,
    ``-0.0``); None if it may change in place."""
    if not _is_immutable(value):
        return None
    return pickle.dumps(value, protocol=5)


def _hash_1d(data: Any, numpy: Any) -> Optional[Tuple[Any, ...]]:
    """dtype, length and xxh3 of a 1-d array of plain (not object) items,
    the same whatever its strides."""
    if type(data) is not numpy.ndarray or data.ndim != 1 or data.dtype.hasobject \
            or data.dtype.fields is not None:
        return None
    if data.flags.c_contiguous:
        digest = xxhash.xxh3_64_intdigest(data.view("u1"))
    else:
        # A column of a block laid out row by row (``DataFrame(array2d,
        # copy=False)``, pandas < 3's default) is strided. Its items are
        # copied to a 256 KiB buffer a part at a time and streamed to
        # xxh3, which gives the digest of the contiguous copy: a copy of
        # the frame gets the same token. Measured on the 100 MB frame
        # above: 84-107 ms (one pass per column over the whole block),
        # about what pickling it costs (82-102 ms), yet nothing to write.
        step = max(1, _CHUNK // data.itemsize)
        hasher = xxhash.xxh3_64()
        buffer = numpy.empty(min(step, len(data)), data.dtype)
        for start in range(0, len(data), step):
            part = data[start:start + step]
            numpy.copyto(buffer[:len(part)], part)
            hasher.update(buffer[:len(part)].view("u1"))
        digest = hasher.intdigest()
    return (data.dtype.str, len(data), digest)


def _labels_token(labels: List[Any], numpy: Any) -> Optional[Tuple[Any, ...]]:
    """The labels of an object (or Python string) index, by content: its
    pointers would not do (a label freed and another made at its address)."""
    if all(type(label) is str for label in labels):
        # Lengths and text: 96 ms for 1M labels (pickling them: 420 ms).
        lengths = numpy.fromiter(map(len, labels), dtype=numpy.int64,
                                 count=len(labels))
        text = "".join(labels).encode("utf-8", "surrogatepass")
        return ("str", len(labels), xxhash.xxh3_64_intdigest(lengths),
                xxhash.xxh3_64_intdigest(text))
    if all(_is_immutable(label) for label in labels):
        data = pickle.dumps(labels, protocol=5)
        return ("pickle", len(data), xxhash.xxh3_64_intdigest(data))
    return None


#: Lengths of strings hashed at once (512 KiB as int64).
_LENGTHS_AT_ONCE = 65536


def _arrow_strings_token(array: Any, numpy: Any) -> Optional[Tuple[Any, ...]]:
    """The strings of a pyarrow-backed string array, by content: the
    lengths, the text and where the nulls are, streamed chunk by chunk, so
    that the same strings give the same token however they are chunked,
    sliced or buffered (a pickle of a sliced array, or one without nulls,
    has other buffers). pyarrow arrays are immutable anyway: pandas
    replaces them on assignment."""
    chunked = array.__arrow_array__()
    kind = str(chunked.type)
    if kind not in ("string", "large_string"):
        return None  # string_view, dictionary...: other buffers
    width = numpy.int32 if kind == "string" else numpy.int64
    lengths, text, valid = xxhash.xxh3_64(), xxhash.xxh3_64(), xxhash.xxh3_64()
    nulls = chunked.null_count
    for chunk in chunked.chunks:
        buffers = chunk.buffers()
        if len(buffers) != 3:
            return None
        validity, offsets, data = buffers
        size, start = len(chunk), chunk.offset
        if size == 0:
            continue
        ends = numpy.frombuffer(offsets, dtype=width,
                                count=start + size + 1)[start:]
        # A part at a time: the lengths of a million strings as int64 are
        # 8 MB (with the diff's copy, 12 MB more in memory while a frame is
        # written, for its column of strings).
        for first in range(0, size, _LENGTHS_AT_ONCE):
            part = ends[first:first + _LENGTHS_AT_ONCE + 1]
            lengths.update(numpy.diff(part).astype(numpy.int64))
        first, last = int(ends[0]), int(ends[-1])
        if last > first:
            text.update(memoryview(data)[first:last])
        if nulls:
            # Only this chunk's bytes of the bitmap (slices of one array
            # share it: unpacking it whole made many chunks quadratic).
            bits = numpy.ones(size, numpy.uint8) if validity is None else \
                numpy.unpackbits(numpy.frombuffer(validity, numpy.uint8)[
                    start // 8:(start + size + 7) // 8], bitorder="little")[
                    start % 8:start % 8 + size]
            valid.update(bits)
    return (kind, len(chunked), nulls, lengths.intdigest(), text.intdigest(),
            valid.intdigest())


def _array_token(obj: Any, pandas: Any, numpy: Any) -> Optional[Tuple[Any, ...]]:
    """The data of a Series or (flat) Index, with its dtype."""
    dtype = obj.dtype
    if isinstance(dtype, numpy.dtype):
        if dtype.hasobject or dtype.kind not in "biufcmM":
            return None  # pointers to objects, which may change in place
        data = obj.to_numpy()  # a view of the column (a copy would do too)
        if len(data) != len(obj) or data.dtype != dtype:
            return None
        return _hash_1d(data, numpy)
    array = obj.array
    name = (type(dtype).__name__, str(dtype))
    if isinstance(dtype, pandas.CategoricalDtype):
        categories = _index_token(array.categories, pandas, numpy)
        codes = _hash_1d(array.codes, numpy)
        if categories is None or codes is None:
            return None
        return name + (bool(dtype.ordered), categories, codes)
    if isinstance(dtype, (pandas.DatetimeTZDtype, pandas.PeriodDtype)):
        data = array.asi8  # a view of its int64s; dtype has tz, unit, freq
        if len(data) != len(obj):
            return None
        # The tz's repr tells its kind too (pytz, zoneinfo, datetime's UTC).
        return name + (repr(getattr(dtype, "tz", None)), _hash_1d(data, numpy))
    if type(array).__name__ in ("IntegerArray", "FloatingArray", "BooleanArray") \
            and type(array) is getattr(pandas.arrays, type(array).__name__, None):
        data, mask = array._data, array._mask  # not public; checked here
        if len(data) != len(obj) or len(mask) != len(obj) or mask.dtype != bool:
            return None
        data_token, mask_token = _hash_1d(data, numpy), _hash_1d(mask, numpy)
        if data_token is None or mask_token is None:
            return None
        return name + (data_token, mask_token)
    strings = getattr(pandas.arrays, "ArrowStringArray", None)
    if strings is not None and isinstance(array, strings):
        token = _arrow_strings_token(array, numpy)
        if token is None or token[1] != len(obj):
            return None
        return name + (getattr(dtype, "storage", None),
                       repr(getattr(dtype, "na_value", None)), token)
    # Python strings (pointers), sparse, interval, other pyarrow types...
    return None


#: Index classes whose state is their names, values and (datetimes) freq.
_FLAT_INDEXES = ("Index", "DatetimeIndex", "TimedeltaIndex", "PeriodIndex",
                 "CategoricalIndex",
                 # pandas < 2
                 "Int64Index", "UInt64Index", "Float64Index", "NumericIndex")


def _index_token(index: Any, pandas: Any, numpy: Any) -> Optional[Tuple[Any, ...]]:
    kind = type(index)
    names = _plain(tuple(index.names))
    if names is None:
        return None
    if kind is pandas.RangeIndex:
        return ("RangeIndex", names, index.start, index.stop, index.step)
    if kind is pandas.MultiIndex:
        levels = tuple(_index_token(level, pandas, numpy) for level in index.levels)
        codes = tuple(_hash_1d(numpy.asarray(code), numpy) for code in index.codes)
        sortorder = _plain(index.sortorder)
        if None in levels or None in codes or sortorder is None:
            return None
        return ("MultiIndex", names, len(index), sortorder, levels, codes)
    if not any(kind is getattr(pandas, name, None) for name in _FLAT_INDEXES):
        return None  # IntervalIndex, subclasses
    dtype = index.dtype
    python_strings = isinstance(dtype, pandas.StringDtype) and \
        getattr(dtype, "storage", None) == "python"
    if python_strings or (isinstance(dtype, numpy.dtype) and dtype.hasobject):
        # An Index cannot change in place: its labels are read one by one.
        data = _labels_token(index.tolist(), numpy)
        dtype_name: Tuple[Any, ...] = (type(dtype).__name__, str(dtype),
                                       repr(getattr(dtype, "na_value", None)))
        if data is None:
            return None
        data = dtype_name + data
    else:
        data = _array_token(index, pandas, numpy)
    if data is None:
        return None
    freq = getattr(index, "freq", None) if kind in (
        pandas.DatetimeIndex, pandas.TimedeltaIndex) else None
    # ``index.freq = ...`` changes it in place; offsets (holidays and all)
    # pickle exactly.
    freq_token = None if freq is None else pickle.dumps(freq, protocol=5)
    return (kind.__name__, names, len(index), data, freq_token)


def _common_token(value: Any) -> Optional[Tuple[Any, ...]]:
    """``attrs`` (plain immutables only) and ``flags`` of a Series or
    DataFrame."""
    attrs = value.attrs
    attrs_token = b""
    if attrs:
        items = tuple(attrs.items())
        if not all(_is_immutable(key) and _is_immutable(item) for key, item in items):
            return None
        attrs_token = pickle.dumps(items, protocol=5)
    return (attrs_token, bool(value.flags.allows_duplicate_labels))


def _series_token(series: Any, pandas: Any, numpy: Any) -> Optional[Hashable]:
    name = _plain(series.name)
    common = _common_token(series)
    if name is None or common is None:
        return None
    index = _index_token(series.index, pandas, numpy)
    if index is None:
        return None
    data = _array_token(series, pandas, numpy)
    if data is None:
        return None
    return ("pandas.Series", len(series), name, common, index, data)


#: Columns a frame may have before short ones are not worth a token: each
#: costs ~20-30 us through pandas, what writing ~32 KiB costs. (10,000
#: columns of 100 rows: 320 ms for a token, 2.3 ms to pickle the frame.)
_MANY_COLUMNS, _SHORT_COLUMN = 64, 4096


def _frame_token(frame: Any, pandas: Any, numpy: Any) -> Optional[Hashable]:
    n_rows, n_columns = frame.shape
    if n_columns > _MANY_COLUMNS and n_rows < _SHORT_COLUMN:
        return None  # cheaper to write again than to prove unchanged
    common = _common_token(frame)
    if common is None:
        return None
    index = _index_token(frame.index, pandas, numpy)
    columns = _index_token(frame.columns, pandas, numpy)
    if index is None or columns is None:
        return None
    data = []
    for _, column in frame.items():  # public; by position, duplicates too
        token = _array_token(column, pandas, numpy)
        if token is None:
            return None
        data.append(token)
    return ("pandas.DataFrame", frame.shape, common, index, columns, tuple(data))
