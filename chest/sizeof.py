"""How many bytes a value holds in memory.

``nbytes(value)`` looks the value's type up in a registry (walking the
type's MRO), so numpy and pandas are sized without being imported here, and
users can add their own types with ``nbytes.register``.

Map of the module
-----------------
``SizeRegistry``, ``nbytes``
    The registry, and the one every chest uses. A type nothing is
    registered for is sized by dask's ``dask.sizeof.sizeof`` if dask is
    imported and has a function for it, else counts its ``nbytes``
    attribute, else ``sys.getsizeof``. A type registered here (its own or a
    base class) never goes to dask.
Builtin scalars
    ``sys.getsizeof``; ``str`` counts its characters, so that its size does
    not grow once pickling caches its UTF-8 form.
Containers (``_size_items`` and below)
    Lists, tuples, sets, frozensets and dicts, with all they hold.
numpy and pandas (``_size_ndarray`` and below)
    Exact, by name, so neither is imported here.

How containers are sized
------------------------
Without recursion, CHUNK items at a time: the items are split by type, each
type is sized by its rule, and the items of the containers among them are
sized next. Every item is looked at (its type, in C: ~25 ns an item where
this was measured); only runs of ints are estimated:

* float, complex, None, bool: exact, every one has the same size;
* str, bytes: exact, from their lengths;
* int: the one estimate. More than SAMPLE ints of a run count as many times
  the mean of SAMPLE evenly spaced ones. An int takes 28 bytes below 2**30
  and 4 more per 30 bits, so what can be missed is the ints much wider than
  the sampled ones: one int of a million digits among small ones, 0.4 MB;
* containers: their own size, and their items as above;
* anything else (arrays, your objects) is sized one by one, as by
  ``nbytes`` (an object's attributes are not looked into).

An object held more than once in a value is counted once (by id) when it is
a list, dict or set (so a container holding itself ends), a str or bytes
longer than LONG, a tuple or frozenset of more than SAMPLE items, or any
other object that is not a builtin scalar (an array held twice counts
once). Small tuples and short strings count at each reference, unless the
tuples repeat in a sample of their run, or the value holds more than
SHARED_TUPLE_ITEMS items in tuples: an excess of their own small size each
time (what they hold beyond that is counted once); the keys shared by many
dicts are the common case, 50 bytes for each dict that holds one. Deeper than MAX_DEPTH
levels, containers count their own size only. The walk itself takes ~60
bytes for each list, dict or set it records, and lists of at most CHUNK
items (2 MB) on the way.

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

A large item among small ones is never missed, a value held twice counts
once:

>>> import numpy as np
>>> arrays = {i: np.ones(10) for i in range(40)}
>>> arrays["big"] = np.ones(5_000_000)
>>> nbytes(arrays) > 40_000_000
True
>>> a = [1, 2, np.ones(1000)]
>>> a.append(a)
>>> nbytes(a) == sys.getsizeof(a) + 2 * sys.getsizeof(1) + 8000
True
"""
from __future__ import annotations

import collections

import importlib
import sys
import threading
from collections import defaultdict
from itertools import chain, compress, islice, repeat
from operator import countOf, lt
from typing import (Any, Callable, DefaultDict, Dict, Iterator, List, Optional, Sequence, Set,
                    Tuple, Union)

__all__ = ["nbytes"]

#: How many ints of a longer run of them are sized to estimate the rest.
SAMPLE = 20
#: Levels of containers in containers that are looked into; below, only the
#: containers' own size is counted.
MAX_DEPTH = 100
#: Items sized at a time: the temporary lists of a walk hold at most so many
#: (2 MB). Drawing items from an iterator in chunks costs ~70 ns an item,
#: listing them at once ~25 ns: chunks are for big containers only.
CHUNK = 2**18
#: Walks started inside a walk (by an object array's or your sizing function).
MAX_NESTING = 10
#: Characters (or bytes) from which a str (bytes) held twice is counted once.
LONG = 1024
#: Items of a list or tuple in a record that the record's one loop sizes.
_RECORD_ITEMS = 8


class SizeRegistry:
    """A function from values to byte counts, dispatched on the value's type.

    Types can be registered as classes, or as ``"module.QualName"`` strings
    so that a library need not be imported until one of its values is seen.
    """

    def __init__(self) -> None:
        self._by_type: Dict[type, Callable[[Any], int]] = {}
        self._by_name: Dict[str, Callable[[Any], int]] = {}
        self._cache: Dict[type, Callable[[Any], int]] = {}
        #: How many registrations there have been: sizes kept from before
        #: (a chest keeps a value's size as read) are stale when it moves.
        self.generation = 0

    def register(self, cls: Union[type, str]) -> Callable:
        """Register the sizing function of ``cls`` (a type or "module.Name")."""

        def decorator(func: Callable[[Any], int]) -> Callable[[Any], int]:
            if isinstance(cls, str):
                self._by_name[cls] = func
            else:
                self._by_type[cls] = func
            self._cache.clear()
            self.generation += 1
            return func

        return decorator

    def dispatch(self, cls: type) -> Callable[[Any], int]:
        """The sizing function for values of type ``cls``."""
        try:
            return self._cache[cls]
        except KeyError:
            pass
        func: Callable[[Any], int] = _default_size
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
        func = self._cache.get(type(value))  # (no method call on a hit: ~0.4 us)
        if func is sys.getsizeof:
            return func(value)
        try:
            if func is None:
                func = self.dispatch(type(value))
            return int(func(value))
        except Exception:
            # A broken __sizeof__ or nbytes must not make the value unstorable.
            return sys.getsizeof(value, 64)


def _default_size(value: Any) -> int:
    """The size of a value of a type nothing is registered for here."""
    func = _dask_function(type(value))
    if func is not None:
        try:
            return int(func(value))
        except Exception:  # a broken dask function: chest's guess
            pass
    return _guess_size(value)


def _guess_size(value: Any) -> int:
    """Its ``nbytes`` attribute, else ``sys.getsizeof``."""
    size = getattr(value, "nbytes", None)
    if isinstance(size, int):
        return size
    return sys.getsizeof(value)


def _dask_function(cls: type) -> Optional[Callable[[Any], Any]]:
    """dask's function for ``cls``, if dask is imported and has one for it.

    Yours (``@dask.sizeof.sizeof.register(cls)``) or one of dask's own (for
    scipy.sparse, pyarrow or xarray, say); not dask's fallback for every
    object, sys.getsizeof, which misses what an object with ``nbytes``
    holds. Asked at every call, not cached with the type: a type first
    sized before dask was imported, or before its dask registration, gets
    dask's function from then on. This costs ~150 ns without dask, ~1 us
    with (dask's dispatch caches by type). dask is never imported here:
    importing it takes ~0.3 s.
    """
    module = sys.modules.get("dask.sizeof")
    if module is None:
        if "dask" not in sys.modules:
            return None
        try:  # imported dask imports dask.sizeof; an older one may not have
            module = importlib.import_module("dask.sizeof")
        except Exception:
            return None
    try:
        func: Callable[[Any], Any] = module.sizeof.dispatch(cls)
    except Exception:  # TypeError: no function, not even dask's default
        return None
    return None if func is getattr(module, "sizeof_default", None) else func


def _size_function_of_unknown(cls: type) -> Callable[[Any], int]:
    """How to size the values of ``cls``, a type nothing is registered for here."""
    func = _dask_function(cls)
    if func is None:
        return _guess_size
    dask_func = func

    def size(value: Any) -> int:
        try:
            return int(dask_func(value))
        except Exception:  # a broken dask function: chest's guess
            return _guess_size(value)

    return size


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


# -- containers -------------------------------------------------------------------
# See "How containers are sized" above. The times quoted are per item, on a
# busy 2-core VM with CPython 3.11: a pass in C over a list, ~20-40 ns; a
# Python loop, ~50 ns; sys.getsizeof, ~200 ns; an array's size, ~0.5 us.

# Every instance of these has the same size.
_FIXED_SIZE = frozenset({float, complex, type(None)} | (
    {bool} if sys.getsizeof(True) == sys.getsizeof(False) else set()))
# An ASCII str, a bytes and a tuple take this plus so much an item (CPython).
_ASCII_BASE = sys.getsizeof("ab") - 2
_BYTES_BASE = sys.getsizeof(b"ab") - 2
_TUPLE_BASE = sys.getsizeof((None,)) - tuple.__itemsize__
# sys.getsizeof adds the garbage collector's header to __sizeof__.
_OWN_SIZE: Dict[type, Callable[[Any], int]] = {
    list: list.__sizeof__, dict: dict.__sizeof__, set: set.__sizeof__,
    frozenset: frozenset.__sizeof__}
_GC_HEADER = sys.getsizeof([]) - [].__sizeof__()
#: Items of tuples and frozensets walked before all of these are counted
#: once (by id). Until then a big run of small tuples is only sampled for
#: repeats: recording a tuple costs ~100 ns (as much as walking a pair) and
#: ~60 bytes of memory for the walk. This bounds the work (~5 s here) on
#: tuples shared in ways a sample does not see; a value holding so many
#: tuple items takes more than 1 GB anyway.
SHARED_TUPLE_ITEMS = 10**8


class _Walk:
    """What a walk (and the walks started inside it) counted already."""

    __slots__ = ("seen", "tuple_items", "nesting")

    def __init__(self) -> None:
        self.seen: Set[int] = set()  # ids of the objects counted
        self.tuple_items = 0  # items of tuples and frozensets walked
        self.nesting = 0  # walks under way inside this one


class _ThisThread(threading.local):
    walk: Optional[_Walk] = None


_this_thread = _ThisThread()
# Items to size: a list or tuple, or an iterator over them.
_Source = Union[Sequence[Any], Iterator[Any]]


def _size_items(items: Sequence[Any]) -> int:
    """Bytes of ``items`` and of all they hold (not of ``items`` itself).

    A sizing function (an object array's, yours) may call this while a walk
    is under way: it joins that walk, so each object is still counted once,
    and past MAX_NESTING walks in walks only the items' own size counts.
    """
    walk = _this_thread.walk
    if walk is None:
        walk = _this_thread.walk = _Walk()
        try:
            return _walk(items, walk)
        finally:
            _this_thread.walk = None
    if walk.nesting >= MAX_NESTING:
        return sum(map(sys.getsizeof, items))
    walk.nesting += 1
    try:
        return _walk(items, walk)
    finally:
        walk.nesting -= 1


def _walk(items: Sequence[Any], walk: _Walk) -> int:
    total = 0
    # Last in, first out, at most CHUNK items at a time: what a chunk holds is
    # sized before the next chunk is drawn, so the lists made on the way hold
    # at most CHUNK items each, a few at each depth, where all the items of a
    # level at once would take 8 bytes each (a list of 10**7 pairs: 160 MB).
    tasks: List[Tuple[_Source, int, int]] = [(items, 0, 0)]  # items, depth, start
    while tasks:
        source, depth, start = tasks.pop()
        if type(source) is list or type(source) is tuple:
            run: Sequence[Any] = source
            if len(run) - start > CHUNK:
                tasks.append((source, depth, start + CHUNK))
                run = run[start:start + CHUNK]  # a slice copies ~2 ns an item
            elif start:
                run = run[start:]
        else:  # an iterator (of a big dict or of many containers)
            run = list(islice(source, CHUNK))
            if len(run) == CHUNK:
                tasks.append((source, depth, 0))
        # Past MAX_DEPTH levels, containers count their own size only.
        deeper: Optional[List[_Source]] = [] if depth < MAX_DEPTH else None
        total += _size_run(run, walk, deeper)
        if deeper:
            tasks.extend((inner, depth + 1, 0) for inner in deeper)
    return total


def _size_run(items: Sequence[Any], walk: _Walk, deeper: Optional[List[_Source]]) -> int:
    """Bytes of ``items``; the items of the containers among them go to ``deeper``."""
    n = len(items)
    if n == 0:
        return 0
    if n <= SAMPLE:
        # Few items (a small dict's values, a tuple): one Python loop costs
        # less than splitting them by type.
        by_type = nbytes._by_type
        getsizeof = sys.getsizeof
        total = 0
        rest: Optional[Dict[type, List[Any]]] = None
        for x in items:
            t = type(x)
            func = by_type.get(t)
            if func is getsizeof or (func is _size_str and x.isascii()):
                total += getsizeof(x)
            else:
                if rest is None:
                    rest = {}
                rest.setdefault(t, []).append(x)
        if rest is not None:
            for t, group in rest.items():
                total += _size_group(t, group, walk, deeper)
        return total
    first = type(items[0])
    if countOf(map(type, islice(items, SAMPLE)), first) == SAMPLE and \
            countOf(map(type, items), first) == n:  # in C: ~25 ns an item
        return _size_group(first, items, walk, deeper)
    # Mixed: a Python loop (~50 ns an item) beats a pass in C per type.
    groups: DefaultDict[type, List[Any]] = defaultdict(list)
    for x in items:
        groups[type(x)].append(x)
    return sum(_size_group(t, group, walk, deeper) for t, group in groups.items())


def _size_group(t: type, items: Sequence[Any], walk: _Walk,
                deeper: Optional[List[_Source]]) -> int:
    """Bytes of ``items``, all of type ``t``."""
    func = nbytes._cache.get(t) or nbytes.dispatch(t)
    getsizeof = sys.getsizeof
    n = len(items)
    if func is getsizeof:
        if t in _FIXED_SIZE:
            return n * getsizeof(items[0])
        if (t is int or t is bool) and n > SAMPLE:
            # The one extrapolation: an int takes 28 bytes below 2**30 and 4
            # more per 30 bits, so only ints wider than the sampled ones are
            # missed. sys.getsizeof costs ~200 ns an int, this ~5 us a run.
            step = n / SAMPLE
            sample = [items[int(i * step)] for i in range(SAMPLE)]
            return sum(map(getsizeof, sample)) * n // SAMPLE
        if t is bytes:
            lengths = list(map(len, items))
            return (n * _BYTES_BASE + sum(lengths)
                    - _repeated_long(items, lengths, walk.seen, getsizeof))
        return sum(map(getsizeof, items))
    if t is str and func is _size_str:
        lengths = list(map(len, items))
        if all(map(str.isascii, items)):
            size = n * _ASCII_BASE + sum(lengths)
        else:
            size = sum(map(_size_str, items))
        return size - _repeated_long(items, lengths, walk.seen, _size_str)
    if func is _size_sequence or func is _size_dict:
        return _size_containers(t, items, walk, deeper, func is _size_dict)
    if func is _default_size:
        func = _size_function_of_unknown(t)  # once for the whole group
    seen = walk.seen
    total = 0
    for x in items:
        key = id(x)
        if key in seen:
            continue
        seen.add(key)
        try:
            total += int(func(x))
        except Exception:
            total += getsizeof(x, 64)
    return total


def _size_containers(t: type, items: Sequence[Any], walk: _Walk,
                     deeper: Optional[List[_Source]], is_dict: bool) -> int:
    """Own size of lists, tuples, sets or dicts; their items go to ``deeper``."""
    if t is tuple or t is frozenset:
        # No cycle runs through tuples alone (a tuple is built before
        # whatever holds it), and recording one costs ~100 ns, as much as
        # walking a pair: only those _may_repeat picks are recorded, until
        # SHARED_TUPLE_ITEMS of their items were walked.
        followed = sum(map(len, items))
        walk.tuple_items += followed
        if walk.tuple_items > SHARED_TUPLE_ITEMS or _may_repeat(items):
            items = _unseen(items, walk.seen)
            followed = sum(map(len, items))
    else:
        items = _unseen(items, walk.seen)
        followed = sum(map(len, items))
    n = len(items)
    if t is tuple:
        total = n * _TUPLE_BASE + tuple.__itemsize__ * followed
    elif t in _OWN_SIZE:
        # sys.getsizeof costs ~250 ns, the method itself ~25 ns.
        total = sum(map(_OWN_SIZE[t], items)) + n * _GC_HEADER
    else:
        total = sum(map(sys.getsizeof, items))
    if deeper is None or not followed:
        return total
    if n == 1 and (t is list or t is tuple):
        deeper.append(items[0])
    elif is_dict:
        keys = chain.from_iterable(map(dict.keys, items))
        values = chain.from_iterable(map(dict.values, items))
        if followed <= CHUNK:
            deeper += [list(keys), list(values)]  # faster than drawn in chunks
        else:
            deeper += [keys, values]
    else:
        inner = chain.from_iterable(items)
        deeper.append(list(inner) if followed <= CHUNK else inner)
    return total


def _may_repeat(tuples: Sequence[Any]) -> bool:
    """Whether to count these tuples once each: few, long, or repeated in a sample."""
    n = len(tuples)
    if n <= SAMPLE or max(map(len, tuples)) > SAMPLE:
        return True
    step = n / SAMPLE
    return len({id(tuples[int(i * step)]) for i in range(SAMPLE)}) < SAMPLE


def _unseen(items: Sequence[Any], seen: Set[int]) -> Sequence[Any]:
    """The items not counted yet in this walk, now marked as counted."""
    if len(items) == 1:
        key = id(items[0])
        if key in seen:
            return ()
        seen.add(key)
        return items
    ids = list(map(id, items))
    if seen.isdisjoint(ids):
        before = len(seen)
        seen.update(ids)
        if len(seen) - before == len(items):
            return items  # the common case: ~100 ns an item, in C
        return list(dict(zip(ids, items)).values())  # some held twice here
    fresh: Dict[int, Any] = {}
    for key, x in zip(ids, items):
        if key not in seen:
            fresh[key] = x
    seen.update(fresh)
    return list(fresh.values())


def _repeated_long(items: Sequence[Any], lengths: List[int], seen: Set[int],
                   size: Callable[[Any], int]) -> int:
    """Bytes of the long str or bytes of ``items`` that were counted already.

    ``["x" * 10**6] * 100`` holds one string of 1 MB, not 100: strings
    longer than LONG are counted once (by id), shorter ones at each
    reference (finding repeats costs ~100 ns a string).
    """
    if max(lengths) <= LONG:
        return 0
    repeated = 0
    for x in compress(items, map(lt, repeat(LONG), lengths)):
        key = id(x)
        if key in seen:
            repeated += size(x)
        else:
            seen.add(key)
    return repeated


def _scalars_size(items: Any, depth: int = 0) -> Optional[int]:
    """Bytes of ``items`` if all are builtin scalars, or small lists, tuples
    and dicts of them (a few levels deep); else None. The common small value
    (a record: ``{"a": 1, "b": "text", "c": [1, 2]}``) is sized here in a
    few us, without the walk's bookkeeping (no object in it can be held
    twice in a way that matters: small containers count at each reference)."""
    by_type = nbytes._by_type
    getsizeof = sys.getsizeof
    total = 0
    for x in items:
        t = type(x)
        func = by_type.get(t)
        if func is getsizeof or (func is _size_str and x.isascii()):
            total += getsizeof(x)
        elif depth < 2 and (func is _size_sequence and t is not set
                            and t is not frozenset or func is _size_dict) \
                and len(x) <= SAMPLE:
            inner = _scalars_size(x.values() if t is dict else x, depth + 1)
            if inner is None:
                return None
            if t is dict:
                keys = _scalars_size(x, depth + 1)
                if keys is None:
                    return None
                inner += keys
            total += getsizeof(x) + inner
        else:
            return None
    return total


@nbytes.register(list)
@nbytes.register(tuple)
@nbytes.register(set)
@nbytes.register(frozenset)
@nbytes.register(collections.deque)
def _size_sequence(value: Any) -> int:
    if len(value) <= SAMPLE:
        size = _scalars_size(value)
        if size is not None:
            return sys.getsizeof(value) + size
    return _size_items((value,))


def _keys_size(mapping: dict) -> Optional[int]:
    """Bytes of a small dict's keys: as :func:`_scalars_size` counts them,
    but for keys that are all ASCII str (a record's field names) with one
    ``join`` in C: ~0.6 us for three keys instead of ~1.5."""
    if type(next(iter(mapping))) is str and nbytes._by_type.get(str) is _size_str:
        try:
            joined = "".join(mapping)
        except TypeError:  # not all str after all
            return _scalars_size(mapping)
        if joined.isascii():
            return len(mapping) * _ASCII_BASE + len(joined)
    return _scalars_size(mapping)


@nbytes.register(dict)
def _size_dict(value: dict) -> int:
    if 0 < len(value) <= SAMPLE:
        # A flat record ({"i": 5}: ASCII names, numbers and ASCII text), the
        # commonest small value, in one loop: 1.1 us against 2.9 through
        # the functions below (a fifth of an append written through). The
        # same sum as theirs; anything else goes to them.
        by_type, getsizeof = nbytes._by_type, sys.getsizeof
        if by_type.get(str) is _size_str:
            total = getsizeof(value)
            for k, x in value.items():
                if type(k) is not str or not k.isascii():
                    break
                t = type(x)
                func = by_type.get(t)
                if func is getsizeof or (func is _size_str and x.isascii()):
                    total += _ASCII_BASE + len(k) + getsizeof(x)
                elif (t is list or t is tuple) and func is _size_sequence \
                        and len(x) <= _RECORD_ITEMS:
                    # A short list or tuple of scalars in a record ("c": [1,
                    # 2]): 2.2 us for the record instead of 4.8 through the
                    # functions below.
                    total += _ASCII_BASE + len(k) + getsizeof(x)
                    for y in x:
                        func = by_type.get(type(y))
                        if func is getsizeof or (func is _size_str
                                                 and y.isascii()):
                            total += getsizeof(y)
                        else:
                            break
                    else:
                        continue
                    break
                else:
                    break
            else:
                return total
        keys = _keys_size(value)
        values = _scalars_size(value.values()) if keys is not None else None
        if keys is not None and values is not None:
            return sys.getsizeof(value) + keys + values
    return _size_items((value,))


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
    if array.dtype.kind == "T":
        # numpy's StringDType: 16 bytes a string in the array, and the
        # strings of more than 15 bytes in a buffer beside it (counted by
        # characters here; ~40 ms a million). As Python strings (tolist)
        # they counted 4x what they hold, and took 0.36 s and 64 MB.
        import numpy as np

        lengths = np.strings.str_len(array.ravel())
        return size + int(lengths[lengths > 15].sum())
    if array.dtype.hasobject:
        size += _size_items(array.ravel().tolist())
    return size


# A numpy scalar is a Python object (np.int64: 32 bytes, not its nbytes' 8;
# a list of them counted 2.5x less than it held).
nbytes.register("numpy.generic")(sys.getsizeof)


@nbytes.register("pandas.Series")
@nbytes.register("pandas.core.series.Series")
def _size_series(series: Any) -> int:
    return _pandas_array_size(series.array) + _size_index(series.index) + 256


@nbytes.register("pandas.Index")
@nbytes.register("pandas.core.indexes.base.Index")
def _size_pandas_index(index: Any) -> int:
    return _size_index(index) + 256


def _size_index(index: Any) -> int:
    """Bytes of a pandas index, without making what it does not hold: a
    ``RangeIndex`` is a ``range`` until its values are asked for, and then
    pandas keeps the array it made (8 bytes a row, for as long as the frame
    lives: a chest sizing a frame of four int64 columns made it 25%
    larger). A ``MultiIndex`` has no one array: its levels and codes."""
    if not len(index):
        return 64
    kind = type(index).__name__
    if kind == "RangeIndex":
        return int(index.memory_usage())  # (its range: pandas counts ~132 bytes)
    if kind == "MultiIndex":
        return sum(_size_index(level) for level in index.levels) + \
            sum(int(codes.nbytes) for codes in index.codes) + 256
    return _pandas_array_size(index.array)


@nbytes.register("pandas.DataFrame")
@nbytes.register("pandas.core.frame.DataFrame")
def _size_dataframe(frame: Any) -> int:
    columns = _blocks_size(frame) if frame.shape[1] > BY_BLOCKS else None
    if columns is None:
        # (items(): 0.1 ms for 4 columns, against 0.3 with iloc)
        columns = sum(_pandas_array_size(column.array) for _, column in frame.items())
    return columns + _size_index(frame.index) + _size_index(frame.columns) + 512


#: Frames of more columns are sized by the blocks that hold them: one
#: column at a time took ~12 us a column (a frame of 50 rows by 10,000
#: float columns, 4 MB in one block: 110-130 ms on every set and read).
BY_BLOCKS = 64


def _blocks_size(frame: Any) -> Optional[int]:
    """Bytes of a frame's columns, from the blocks pandas keeps them in (a
    2-d array holds the columns of one dtype); None where pandas keeps
    them otherwise (its internals, ``frame._mgr.blocks``, changed)."""
    try:
        blocks = frame._mgr.blocks
        total = 0
        for block in blocks:
            values = block.values
            if type(values).__name__ == "ndarray":
                total += _size_ndarray(values)
            else:
                total += _pandas_array_size(values)
        return total
    except (AttributeError, TypeError):
        return None


#: pandas dtypes of kind "O" whose arrays hold no Python objects: their
#: ``nbytes`` is what they hold (periods are int64s, intervals two arrays).
_NBYTES_DTYPES = frozenset({"PeriodDtype", "IntervalDtype"})


def _pandas_array_size(array: Any) -> int:
    """Size of a pandas array; Python objects (strings) in it are sampled.
    A categorical is its codes and its categories (sized as objects, a
    column of a million rows and three short categories counted 70 MB for
    the 1 MB it holds, and took 0.35 s)."""
    dtype = array.dtype
    if getattr(dtype, "kind", "O") != "O" or "pyarrow" in str(
        getattr(dtype, "storage", "")
    ) or type(dtype).__name__ in _NBYTES_DTYPES:
        return int(array.nbytes)
    if type(dtype).__name__ == "CategoricalDtype":
        return int(array.codes.nbytes) + _size_index(dtype.categories)
    import numpy as np

    return _size_ndarray(np.asarray(array, dtype=object))
