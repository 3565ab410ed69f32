"""A list and a set that spill to disk and persist, each over one chest.

Both keep their items as a :class:`~chest.Chest`'s values (or keys), so they
take every keyword of a chest (``available_memory``, ``packed``,
``write_through``, ``durable``, ``readonly``, ``dump``/``load``/``mode``...)
and keep its promises: a budget, spilling, the writer's lock, reopening by
path, crash safety.

:class:`List`
    A ``MutableSequence``. Each item is the value of a key that says where
    it is in the list: a tuple of ints, ordered as tuples are. Inserting
    between two items takes a key between theirs (one level longer when
    there is no room, so nothing else is renamed), and deleting removes one
    key: neither rewrites another item. The keys in order are kept in
    memory (a list of tuples); ``reverse()`` flips one flag, ``sort()``
    gives every item a new key (it must move them all). The flag (the
    List's own key) is written in a format of the List's own when the
    chest's ``dump`` cannot write it, so any ``dump`` of the items will do.
    Every method holds the List's lock while it reads or changes the keys,
    so threads may share a List as they share a list.
:class:`Set`
    A ``MutableSet``: its elements are the chest's keys (each with ``None``
    for value), so they must be hashable and can be millions (``packed``).

Examples
--------
>>> from chest.containers import List, Set
>>> l = List([1, 2, 3])
>>> l.insert(1, "between")
>>> l[0], l[1], l[-1], len(l)
(1, 'between', 3, 4)
>>> del l[2]
>>> list(l)
[1, 'between', 3]
>>> l.close()
>>> s = Set("abc")
>>> sorted(s | {"d"}), "a" in s
(['a', 'b', 'c', 'd'], True)
>>> s.close()
"""
from __future__ import annotations

import contextlib
import inspect
import io
import itertools
import json
import operator
import os
import sys
import threading
from collections.abc import Iterable, MutableSequence, MutableSet
from collections.abc import Set as AbstractSet
from typing import IO, Any, Callable, Dict, Hashable, Iterator, List as ListOf, \
    Optional, SupportsIndex, Tuple, Union, overload

from . import serialize
from .core import Chest
from .store import Keep
from .errors import UnwritableValuesError, ValueFileError
from .lock import held_here, opening, refuse_if_held_here

__all__ = ["List", "Set", "between"]

Position = Tuple[int, ...]
_META = "list"  # the List's own key (positions are tuples): {"reversed": bool}
_PathLike = Union[str, "os.PathLike[str]"]
#: How the List's own value starts when the chest's ``dump`` cannot write it
#: (see :func:`_own_format`): then JSON follows. No pickle, no JSON text and
#: no text a person writes starts with a NUL.
_MARK = "\0chest.List\0"
_END = object()  # (no item at that index)


#: How far apart :func:`between` puts a position from its neighbour when it
#: goes one digit deeper (or steps on at the same depth): the room it leaves
#: takes 64 halvings to fill. Inserting each item between the two newest
#: (``insert(len(l) // 2, x)``, 4,000 times; tests/test_containers.py) made
#: a position of 2,001 ints and a 20.7 MB ``.keys`` with steps of 1, 119 ints
#: and 9.8 MB with 2**32, 62 ints and 5.7 MB with 2**64 (most of the index
#: is file names: one nested folder per digit, see chest.names).
GAP = 2 ** 64


def between(low: Optional[Position], high: Optional[Position]) -> Position:
    """A position after ``low`` and before ``high`` (None: no bound), as
    short as there is room for.

    Where the bounds differ by more than 1 at the first digit they differ,
    the middle; where they differ by 1, one digit deeper, :data:`GAP` away
    from ``low`` (or from ``high`` when ``low`` is a prefix of it). So
    inserting again and again after the same item, or before it, steps on
    at the same depth; inserting each time between the two newest halves
    their room, one digit per ~64 inserts. Any positions work, those made
    with steps of 1 (before :data:`GAP`) too.

    >>> between(None, None), between((3,), None), between(None, (3,))
    ((0,), (4,), (2,))
    >>> between((3,), (5,)), between((3,), (9,)), between((3,), (4,))
    ((4,), (6,), (3, 0))
    >>> between((3,), (3, 0)), between((3, 0), (4,)), between((3, 0), (3, 8))
    ((3, -18446744073709551616), (3, 18446744073709551616), (3, 4))
    >>> (3,) < between((3,), (3, 0)) < (3, 0)
    True
    """
    if low is None:
        return (0,) if high is None else (high[0] - 1,)
    if high is None:
        return (low[0] + 1,)
    n = 0
    while n < len(low) and n < len(high) and low[n] == high[n]:
        n += 1
    if n == len(low):
        # low is a prefix of high: one digit more, GAP below high's next one
        # (longer than low, so after it).
        return low + (high[n] - GAP,)
    if high[n] - low[n] > 1:
        return low[:n] + ((low[n] + high[n]) // 2,)
    # Adjacent at digit n: anything longer than low[:n+1] and after low fits.
    if n + 1 < len(low):
        return low[:n + 1] + (low[n + 1] + GAP,)
    return low + (0,)


class _State(dict):
    """The List's own value (``{"reversed": bool, ...}``), or a Set's value
    of every element (empty), as they hand it to a chest whose ``dump``
    :func:`_own_format` wrapped."""


def _own_format(keywords: Dict[str, Any]) -> Dict[str, Any]:
    """A List's chest keywords: with a ``dump`` or ``load`` of the user's,
    wrapped so that the List's own value (a :class:`_State`) is written as
    ``dump`` writes it if it reads back equal (as before: ``json.dump``),
    else as :data:`_MARK` and JSON; every other value goes to the user's.
    The default pickle writes a dict: unchanged. The state stays a value of
    the chest, so it is written, journaled and flushed in order with the
    items (the crash safety of :meth:`List.sort`), and a folder made before
    reads as it did (its value has no mark: the user's ``load`` reads it).

    >>> def dump(v, f): f.write(v)          # bytes only
    >>> def load(f): return f.read()
    >>> own = _own_format({"dump": dump, "load": load})
    >>> f = io.BytesIO()
    >>> own["dump"](_State(reversed=True), f)
    >>> f.getvalue()
    b'\\x00chest.List\\x00{"reversed": true}'
    >>> _ = f.seek(0)
    >>> own["load"](f), own["load"](io.BytesIO(b"an item"))
    ({'reversed': True}, b'an item')
    """
    dump = keywords.get("dump", serialize.dump)
    load = keywords.get("load", serialize.load)
    if dump is serialize.dump and load is serialize.load:
        return keywords
    text = keywords.get("mode", "b") == "t"
    mark: Union[str, bytes] = _MARK if text else _MARK.encode()

    def buffer(data: Any = None) -> Union[io.StringIO, io.BytesIO]:
        return io.StringIO(data or "") if text else io.BytesIO(data or b"")

    def own_dump(value: Any, file: IO[Any]) -> None:
        if type(value) is not _State:
            return dump(value, file)
        data: Union[str, bytes]
        try:
            written = buffer()
            dump(dict(value), written)
            data = written.getvalue()
            written.seek(0)
            if load(written) != value:
                raise ValueError("read back different")
        except Exception:
            data = _MARK + json.dumps(dict(value), sort_keys=True)
            if not text:
                data = data.encode()
        file.write(data)

    def own_load(file: IO[Any]) -> Any:
        try:
            start: Optional[int] = file.tell()
        except (AttributeError, OSError, ValueError):
            start = None  # (a stream: what was read is given to load again)
        head = file.read(len(mark))
        if head == mark:
            rest = file.read()
            try:
                state = json.loads(rest)
            except ValueError:
                state = None
            if isinstance(state, dict):
                return _State(state)
            head += rest  # (an item that starts as the mark does)
        if start is not None:
            file.seek(start)
            return load(file)
        return load(buffer(head + file.read()))

    return {**keywords, "dump": own_dump, "load": own_load}


#: The keywords a container passes on to its chest.
_CHEST_KEYWORDS = frozenset(inspect.signature(Chest).parameters) - {"data", "path"}


class _Container:
    """What the list and the set share: their chest, its keywords, closing."""

    def __init__(self, path: Optional[_PathLike], chest_keywords: Dict[str, Any]) -> None:
        if path is None:
            self._open(path, chest_keywords)
            return
        with opening(os.fspath(path)):  # (threads opening one path at once: one gets it)
            self._open(path, chest_keywords)

    def _open(self, path: Optional[_PathLike], chest_keywords: Dict[str, Any]) -> None:
        """Make the container's chest; a writer's holds the folder's lock
        alone in this process (see :func:`chest.lock.hold_alone`)."""
        writer = path is not None and not chest_keywords.get("readonly")
        folder = "" if path is None else os.fspath(path)
        if writer and os.path.isdir(folder) and held_here(folder):
            # (Two writers in one process share the folder's lock: this one
            # would not see the other's changes not yet flushed, and the one
            # closed last would undo the other's. A notebook cell run again,
            # l = List(path=p), lost the items of the first.)
            kind = type(self).__name__
            raise ValueError(f"{kind}(path={folder!r}): it is open in this "
                             f"process already (a {kind} or chest not closed): close "
                             f"that one first, or open this one with readonly=True")
        if "packed" not in chest_keywords and "dump" not in chest_keywords:
            # A new one packs its small items in SQLite: items are many and
            # small more often than not, and a file each cost 0.9 ms here to
            # make when the chest is flushed (closing a List of 10,000 small
            # items appended took 9.3 s with files, 0.25 s packed; pysos's
            # close is instant). Text dumps (json) keep a file each, which a
            # person can read, as pysos's files are; an existing container
            # keeps what its index says.
            chest_keywords = {**chest_keywords, "packed": Keep("sqlite")}
        unknown = sorted(set(chest_keywords) - _CHEST_KEYWORDS)
        if unknown:
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword "
                            f"argument {unknown[0]!r} (it takes a chest's keywords: "
                            f"{', '.join(sorted(_CHEST_KEYWORDS))})")
        self._keywords = dict(chest_keywords)
        self.chest = Chest(path=path, **self._chest_keywords(chest_keywords))
        if writer:
            # No other chest of this process may share it while it is open,
            # nor this one share another's when it is used again after close().
            try:
                self.chest.session.hold_alone()
            except BaseException:
                self.chest.close()
                raise

    def _chest_keywords(self, keywords: Dict[str, Any]) -> Dict[str, Any]:
        """The keywords the chest is made with (the user's)."""
        return keywords

    @property
    def path(self) -> str:
        """The folder of the container's chest."""
        return self.chest.path

    def _settings(self, path: Optional[_PathLike]) -> Dict[str, Any]:
        """The keywords of a new container of the same kind at ``path``."""
        keywords = dict(self._keywords)
        keywords.pop("readonly", None)
        # Its engine, as this one's index says (one reopened without packed=
        # is not given the engine a new one would get).
        keywords["packed"] = self.chest.store.packed
        if path is None:
            keywords.pop("write_through", None)  # a temporary chest keeps nothing
        return keywords

    def _empty_like(self, path: Optional[_PathLike], action: str) -> Any:
        """A new, empty container of this kind and keywords at ``path``
        (temporary without one); ValueError if the path holds one already,
        open here or on disk (it would be mixed into the new one)."""
        refuse_if_held_here(path, action)
        new: Any = type(self)(path=path, **self._settings(path))
        if len(new):
            count = len(new)
            new.close()
            raise ValueError(f"{action}: {new.path} already holds a "
                             f"{type(self).__name__} of {count} items; give a new path")
        return new

    @contextlib.contextmanager
    def _closed_on_error(self) -> Iterator[None]:
        """Close the container if the block raises (its constructor: no one
        else will, and its lock would keep the path from being opened
        again in this process)."""
        try:
            yield
        except BaseException:
            self.chest.close()
            raise

    @contextlib.contextmanager
    def _dropped_on_error(self) -> Iterator[None]:
        """Remove the container (made new, empty, by a method) if the block
        that fills it raises: a retry at the same path was refused, the path
        holding a part of it."""
        try:
            yield
        except BaseException:
            try:
                self.chest.drop()
            finally:
                self.chest.close()
            raise

    def flush(self) -> None:
        """Write every item to disk (see :meth:`chest.Chest.flush`)."""
        self.chest.flush()

    def close(self) -> None:
        """Flush (with a path) or remove the folder (temporary)."""
        self.chest.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __reduce_ex__(self, protocol: Any) -> Any:
        # (Without this: "cannot pickle '_thread.RLock' object".)
        kind = type(self).__name__
        raise TypeError(f"a {kind} owns its folder {self.path} and cannot be pickled "
                        f"(nor deep-copied): pickle {kind.lower()}(...) of it, or "
                        f"reopen it with {kind}(path=...); copy() makes a new one")


class List(_Container, MutableSequence):
    """A list whose items spill to disk and persist, as a chest's values.

    Parameters
    ----------
    data : iterable, optional
        Items to append.
    path : str, optional
        The folder (temporary without one); reopened from it later.
    **chest_keywords
        As for :class:`~chest.Chest` (``available_memory``, ``packed``,
        ``write_through``, ``readonly``, ``dump``...). A new List packs
        its small items in SQLite unless given ``packed`` or ``dump`` (then
        a file each).

    All of ``list``'s methods, with negative indices (or any object with
    ``__index__``), slices (read as a list), slice assignment and deletion,
    ``+`` and ``*`` (giving a list), ``+=``, ``*=``, ``==`` and ``<``...
    with lists and Lists. Inserting or deleting anywhere writes one item;
    ``sort()`` moves every item (as it must); ``reverse()`` writes one flag.
    A slice assignment whose new items cannot be written (``write_through``)
    raises and changes nothing, as ``list`` does; so does a ``reverse()``
    whose flag cannot be. Threads may share a List: each method holds its
    lock while it reads or changes the list (a loop over it, one item at a
    time: it sees changes made meanwhile, as a loop over a list does).
    """

    def __init__(self, data: Iterable[Any] = (), path: Optional[_PathLike] = None,
                 **chest_keywords: Any) -> None:
        # Each method reads and changes the positions under this lock (a
        # re-entrant one: methods call each other, and a sort key may read
        # the list). Taking it costs 0.3-0.6 us (this VM): an append in
        # memory took 3.6-4.7 us before, 3.0-4.8 after (noise); 10,000
        # appends written through (benchmarks/containers.py, best of 3)
        # 0.150-0.189 s before, 0.153-0.195 s after; a loop over the items
        # reads one in 0.64 us instead of 0.40.
        self._lock = threading.RLock()
        self._sorting = False  # a sort is under way: changes are refused
        super().__init__(path, chest_keywords)
        positions: ListOf[Any] = [k for k in self.chest if k != _META]
        bad = [k for k in positions if type(k) is not tuple
               or not all(type(d) is int for d in k) or not k]
        if bad:
            self.chest.close()
            raise ValueError(f"the chest at {self.chest.path} is not a List's: "
                             f"it has the key {bad[0]!r}")
        meta = _settings_of(self.chest) if _META in self.chest else None
        if meta is None and positions and self._holds_a_set(positions):
            self.chest.close()
            raise ValueError(f"the chest at {self.chest.path} holds a Set's elements, "
                             f"not a List: open it with chest.Set")
        if _META in self.chest and not isinstance(meta, dict):
            self.chest.close()
            raise ValueError(f"the chest at {self.chest.path} is not a List's: its "
                             f"key {_META!r} holds {type(meta).__name__}, not a "
                             f"List's settings")
        if meta is None and not self.chest.readonly:
            # Every List keeps its settings key from the start: it is what
            # tells it from a Set (whose elements may be positions too).
            with self._closed_on_error():
                self._write_meta({"reversed": False})
        if isinstance(meta, dict) and meta.get("sort") is not None:
            positions = self._settle_sort(meta, positions)
            self._reversed = bool(meta.get("reversed")) and not meta.get("written")
        else:
            self._reversed = bool(meta and meta.get("reversed"))
        self._positions: ListOf[Position] = sorted(positions, reverse=self._reversed)
        with self._closed_on_error():
            self.extend(data)  # (all or none: a retry would add some twice)

    def _holds_a_set(self, positions: ListOf[Position]) -> bool:
        """Is this chest, whose keys are all ``positions`` and which has no
        settings key, a Set's (of tuples of ints)? A List made before every
        List kept that key may have none: then its values tell, unless its
        first eight items are all None (or empty dicts: what a Set keeps)."""
        sample = positions[:8]
        return all(_is_member(self.chest[k]) for k in sample)

    def _chest_keywords(self, keywords: Dict[str, Any]) -> Dict[str, Any]:
        """The user's keywords, with a ``dump`` and ``load`` that write the
        List's own value whatever the user's take (see :func:`_own_format`)."""
        own = _own_format(keywords)
        # What the List's own value is made as: a dict for the default
        # pickle (which writes it as before), else what own_dump knows.
        self._state: Callable[..., Dict[str, Any]] = dict if own is keywords else _State
        return own

    # -- positions ---------------------------------------------------------------
    def _index(self, i: Any) -> int:
        """``i`` (an int, or anything with ``__index__``) as an index in range
        (IndexError past either end)."""
        n = len(self._positions)
        if not isinstance(i, int):
            try:
                i = operator.index(i)
            except TypeError:
                raise TypeError(f"list indices must be integers or slices, not "
                                f"{type(i).__name__}") from None
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise IndexError("list index out of range")
        return j

    def _between(self, before: Optional[Position],
                 after: Optional[Position]) -> Position:
        """A position for an item between the items at ``before`` and
        ``after`` (in the list's order; None: an end)."""
        if self._reversed:  # positions go down: swap the bounds
            return between(after, before)
        return between(before, after)

    def _new_position(self, j: int) -> Position:
        """A position for an item inserted at index ``j``."""
        before = self._positions[j - 1] if j > 0 else None
        after = self._positions[j] if j < len(self._positions) else None
        return self._between(before, after)

    def _write_meta(self, meta: Dict[str, Any]) -> None:
        """Set the List's own key to ``meta``, on disk when this returns (see
        :meth:`Chest.write`), also without ``write_through``: what is
        written after it (items evicted, journaled) must not be found after a
        crash without it (see :meth:`sort`), nor its earlier value lost
        before it is written (a set, then a write, left a moment where
        neither was on disk: a crash there in sort() emptied the list). If
        it cannot be written, this raises and nothing changes."""
        self.chest.write(_META, self._state(meta))

    def _put(self, position: Position, value: Any, j: int) -> None:
        """Set the item at ``position`` (index ``j``), its error saying so."""
        try:
            self.chest[position] = value
        except Exception as e:
            self._say_which(e, position, j)
            raise

    def _say_which(self, error: Exception, position: Position, j: int) -> None:
        """Add to ``error`` (of the chest, which names the key: a position)
        which item of the List it was about."""
        if hasattr(error, "add_note"):  # Python 3.11+
            error.add_note(f"List at {self.chest.path}: the item at index {j} (its "
                           f"key {position!r} in the List's chest) was not set")

    def _changing(self) -> None:
        """ValueError while a key of :meth:`sort` changes the list (the lock
        is held: only the sorting thread gets here)."""
        if self._sorting:
            raise ValueError("list modified during sort")

    # -- MutableSequence -----------------------------------------------------------
    @overload
    def __getitem__(self, i: SupportsIndex) -> Any: ...

    @overload
    def __getitem__(self, i: slice) -> ListOf[Any]: ...

    def __getitem__(self, i: Union[SupportsIndex, slice]) -> Any:
        with self._lock:
            if isinstance(i, slice):
                return [self.chest[p] for p in self._positions[i]]
            return self.chest[self._positions[self._index(i)]]

    def __setitem__(self, i: Union[SupportsIndex, slice], value: Any) -> None:
        """``l[i] = value``, or ``l[a:b] = values``: the new items are written
        first, then the old ones deleted; if one cannot be written, those
        written are deleted again and the list is as it was."""
        with self._lock:
            self._changing()
            self._set(i, value)

    def _set(self, i: Union[SupportsIndex, slice], value: Any) -> None:
        """:meth:`__setitem__`, the lock held."""
        if not isinstance(i, slice):
            j = self._index(i)
            self._put(self._positions[j], value, j)
            return
        values = list(value)
        start, stop, step = i.indices(len(self._positions))
        if step != 1:
            chosen = list(range(start, stop, step))
            if len(chosen) != len(values):
                raise ValueError(f"attempt to assign sequence of size {len(values)} "
                                 f"to extended slice of size {len(chosen)}")
            self._replace([self._positions[j] for j in chosen], values)
            return
        stop = max(stop, start)
        positions = self._positions
        # New positions before the first old item (after the item before
        # the slice): the old ones are still there while they are written.
        low = positions[start - 1] if start > 0 else None
        high = positions[start] if start < len(positions) else None
        written: ListOf[Position] = []
        try:
            for v in values:
                position = self._between(low, high)
                self.chest[position] = v
                written.append(position)
                low = position
        except BaseException:
            for position in reversed(written):
                try:
                    del self.chest[position]
                except Exception:  # stored: it stays in the list, as on disk
                    positions.insert(start, position)
            raise
        positions[start:start] = written
        del self[start + len(written):stop + len(written)]

    def _replace(self, chosen: ListOf[Position], values: ListOf[Any]) -> None:
        """Set the items at ``chosen`` to ``values`` in order (an extended
        slice); if one cannot be written, those set already get their old
        values back (read just before each is replaced)."""
        replaced: ListOf[Tuple[Position, Any]] = []
        try:
            for position, v in zip(chosen, values):
                old = self.chest[position]
                self.chest[position] = v
                replaced.append((position, old))
        except BaseException:
            for position, old in reversed(replaced):
                self.chest[position] = old  # it was stored: it can be again
            raise

    def __delitem__(self, i: Union[SupportsIndex, slice]) -> None:
        with self._lock:
            self._changing()
            if isinstance(i, slice):
                chosen = sorted(range(*i.indices(len(self._positions))), reverse=True)
                for j in chosen:
                    del self.chest[self._positions[j]]
                    del self._positions[j]
                return
            j = self._index(i)
            del self.chest[self._positions[j]]
            del self._positions[j]

    def __len__(self) -> int:
        return len(self._positions)

    def insert(self, index: SupportsIndex, value: Any) -> None:
        """Insert ``value`` before ``index`` (clamped to the list, as list does)."""
        with self._lock:
            self._changing()
            n = len(self._positions)
            i = operator.index(index)
            j = i + n if i < 0 else i
            j = min(max(j, 0), n)
            position = self._new_position(j)
            self._put(position, value, j)
            self._positions.insert(j, position)

    def extend(self, values: Iterable[Any]) -> None:
        """Append each of ``values``: one write each. If one cannot be
        written (or ``values`` raises), this raises and the list is as it
        was: the items it appended are deleted again (as a slice assignment
        changes nothing; ``list.extend`` keeps those an iterator gave before
        it raised). A crash meanwhile keeps those written."""
        with self._lock:
            if values is self:
                values = list(values)
            count = len(self._positions)
            try:
                for value in values:
                    self.append(value)
            except BaseException:
                del self[count:]
                raise

    def append(self, value: Any) -> None:
        """Add ``value`` at the end: one write."""
        with self._lock:
            if self._sorting:
                self._changing()
            positions = self._positions
            if not positions or self._reversed:
                self.insert(len(positions), value)
                return
            position = (positions[-1][0] + 1,)  # between(last, None), without the call
            try:  # (_put, without the call either)
                self.chest[position] = value
            except Exception as e:
                self._say_which(e, position, len(positions))
                raise
            positions.append(position)

    def pop(self, index: SupportsIndex = -1) -> Any:
        """Remove and return the item at ``index`` (the last one by default)."""
        with self._lock:
            if not self._positions:
                raise IndexError("pop from empty list")
            try:
                j = self._index(index)
            except IndexError:
                raise IndexError("pop index out of range") from None
            value = self.chest[self._positions[j]]
            del self[j]
            return value

    def index(self, value: Any, start: SupportsIndex = 0,
              stop: SupportsIndex = sys.maxsize) -> int:
        """The index of the first item equal to ``value`` from ``start`` to
        ``stop`` (as slice bounds: ints, or anything with ``__index__``, as
        ``list.index`` takes); ValueError if there is none."""
        try:
            bounds = slice(operator.index(start), operator.index(stop))
        except TypeError:
            raise TypeError("slice indices must be integers or have an __index__ "
                            "method") from None
        with self._lock:
            first, last, _ = bounds.indices(len(self._positions))
            for j in range(first, last):
                if j >= len(self._positions):
                    break  # (an item's __eq__ shortened the list)
                v = self.chest[self._positions[j]]
                if v is value or v == value:
                    return j
        raise ValueError(f"{value!r} is not in list")

    def remove(self, value: Any) -> None:
        """Remove the first item equal to ``value``; ValueError if there is none."""
        with self._lock:
            try:
                j = self.index(value)
            except ValueError:
                raise ValueError("list.remove(x): x not in list") from None
            del self[j]

    def _item(self, j: int) -> Any:
        """The item at index ``j`` (0 or more), read under the lock; ``_END``
        if the list has no item ``j`` (any more)."""
        with self._lock:
            if 0 <= j < len(self._positions):
                return self.chest[self._positions[j]]
            return _END

    def __iter__(self) -> Iterator[Any]:
        """The items, by index, as list's iterator goes: each step reads the
        item at the next index if the list has one then (an item appended
        during the loop is visited; the loop ends early if items are
        deleted ahead of it)."""
        lock, chest = self._lock, self.chest
        j = 0
        while True:
            with lock:  # (as _item does, without a call for each item)
                positions = self._positions
                if j >= len(positions):
                    return
                value = chest[positions[j]]
            yield value
            j += 1

    def __reversed__(self) -> Iterator[Any]:
        """The items from the last, by index, as ``reversed(list)`` goes."""
        j = len(self._positions) - 1
        while j >= 0:
            value = self._item(j)
            if value is _END:
                return
            yield value
            j -= 1

    def reverse(self) -> None:
        """Reverse the list in place: one write (a flag), no item moves. If
        the flag cannot be written, this raises and nothing changes."""
        with self._lock:
            self._changing()
            flag = not self._reversed
            self._write_meta({"reversed": flag})
            self._reversed = flag
            self._positions.reverse()

    def sort(self, *, key: Optional[Callable[[Any], Any]] = None,
             reverse: bool = False) -> None:
        """Sort in place, stably; every item gets a new position (each is
        read once and written once). The sort keys are held in memory (the
        items themselves without ``key``).

        A crash (``kill -9``) leaves the old list or the sorted one: the
        List's own key says first that the items are being written under a
        new first digit ``top``, then that they all are, and only then are
        the old ones deleted; reopening finishes or undoes a sort it finds
        under way (see :meth:`_settle_sort`). Without ``write_through``, a
        List with a path flushes before it deletes the old items (the new
        must all be on disk first), and writes its own key to disk at each
        of those steps.

        A ``key`` (or an item's ``<``) that changes the list gets
        ValueError("list modified during sort"), as ``list.sort`` raises,
        and the list is left as it was (``list`` drops the change; a List
        refuses it: it cannot bring back an item deleted from disk).
        """
        with self._lock:
            self._changing()
            self._sorting = True
            try:
                self._sort(key, reverse)
            finally:
                self._sorting = False

    def _sort(self, key: Optional[Callable[[Any], Any]], reverse: bool) -> None:
        """:meth:`sort`, the lock held and changes refused."""
        old = self._positions
        keys = [key(v) if key is not None else v for v in self]
        order = sorted(range(len(keys)), key=keys.__getitem__, reverse=reverse)
        del keys
        if not old:
            if self._reversed:
                self._write_meta({"reversed": False})
                self._reversed = False
            return
        top = max(p[0] for p in old) + 1
        new: ListOf[Position] = [(top, j) for j in range(len(old))]
        self._write_meta({"reversed": self._reversed, "sort": top, "written": False})
        try:
            for j, i in enumerate(order):
                self.chest[new[j]] = self.chest[old[i]]
            if not self.chest.write_through and not self.chest.session.temporary:
                try:
                    self.chest.flush()
                except UnwritableValuesError:
                    pass  # in memory only, before as after: nothing more to lose
            self._write_meta({"reversed": False, "sort": top, "written": True})
        except BaseException:
            self._undo_sort(new)
            raise
        self._positions = new
        self._reversed = False
        for position in old:
            del self.chest[position]
        self._write_meta({"reversed": False})

    def _undo_sort(self, new: ListOf[Position]) -> None:
        """Delete the items a failed :meth:`sort` wrote under ``new`` and say
        the list is as it was. If that fails too, its marker stays: the next
        opening undoes it."""
        try:
            for position in new:
                if position in self.chest:
                    del self.chest[position]
            self._write_meta({"reversed": self._reversed})
        except Exception:
            pass  # (the error of the sort is raised)

    def _settle_sort(self, meta: Dict[str, Any], positions: ListOf[Position]
                     ) -> ListOf[Position]:
        """The positions of the list after a :meth:`sort` that a crash
        interrupted (its marker ``meta`` is in the List's own key): the new
        ones (first digit ``top`` or more) if they were all written, else
        the old ones. The others are deleted and the marker cleared, unless
        the List is read-only (then the next writer does it)."""
        top = meta["sort"]
        written = bool(meta.get("written"))
        keep = [p for p in positions if (p[0] >= top) == written]
        if not self.chest.readonly:
            for position in positions:
                if (position[0] >= top) != written:
                    del self.chest[position]
            self._write_meta({"reversed": bool(meta.get("reversed")) and not written})
        return keep

    def clear(self) -> None:
        """Remove every item."""
        with self._lock:
            self._changing()
            self.chest.clear()
            self._positions = []
            self._reversed = False
            self._write_meta({"reversed": False})  # (what tells it from a Set)

    def copy(self, path: Optional[_PathLike] = None) -> "List":
        """A new List with the same items and keywords: temporary unless
        given a ``path`` (which must not hold items already)."""
        new: List = self._empty_like(path, "List.copy")
        with self._lock, new._dropped_on_error():
            new.extend(self)  # (the new List is no other thread's: no deadlock)
        return new

    __copy__ = copy

    # (+ gives a list, as list + list does; += keeps the List)
    def __iadd__(self, values: Iterable[Any]) -> "List":  # type: ignore[misc]
        self.extend(values)
        return self

    def __add__(self, other: Any) -> ListOf[Any]:
        """``l + other`` (a list or a List): a list, as ``list + list``."""
        if not isinstance(other, (list, List)):
            return NotImplemented
        return list(self) + list(other)

    def __radd__(self, other: Any) -> ListOf[Any]:
        """``other + l`` (a list): a list."""
        if not isinstance(other, list):
            return NotImplemented
        return other + list(self)

    def __mul__(self, n: Any) -> ListOf[Any]:
        """``l * n``: a list of the items ``n`` times over."""
        try:
            count = operator.index(n)
        except TypeError:
            return NotImplemented
        return list(self) * count

    __rmul__ = __mul__

    def __imul__(self, n: Any) -> "List":
        try:
            count = operator.index(n)
        except TypeError:
            raise TypeError(f"can't multiply sequence by non-int of type "
                            f"{type(n).__name__!r}") from None
        with self._lock:
            if count <= 0:
                self.clear()
                return self
            items = len(self._positions)
            for _ in range(count - 1):
                for i in range(items):
                    self.append(self[i])
        return self

    def __eq__(self, other: object) -> bool:
        """As lists compare: the same length, and each item the other's
        (``is``: a list holds itself, and a ``nan``, equal) or ``==`` it."""
        if other is self:
            return True  # (its items read twice from disk would be copies)
        if isinstance(other, (list, List)):
            return len(self) == len(other) and \
                all(a is b or a == b for a, b in zip(self, other))
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def _compare(self, other: object, op: Callable[[Any, Any], Any]) -> Any:
        """``op`` (``operator.lt``...) of this list and ``other``, as lists
        compare: the first items that differ decide, else the lengths."""
        if not isinstance(other, (list, List)):
            return NotImplemented
        if other is self:
            return op(0, 0)  # (every item is itself)
        for a, b in zip(self, other):
            if not (a is b or a == b):
                return op(a, b)
        return op(len(self), len(other))

    def __lt__(self, other: object) -> bool:
        return self._compare(other, operator.lt)

    def __le__(self, other: object) -> bool:
        return self._compare(other, operator.le)

    def __gt__(self, other: object) -> bool:
        return self._compare(other, operator.gt)

    def __ge__(self, other: object) -> bool:
        return self._compare(other, operator.ge)

    __hash__ = None  # type: ignore[assignment]  # (mutable, as list)

    def __repr__(self) -> str:
        with self._lock:
            n = len(self._positions)
            shown = ", ".join(self._shown(j) for j in range(n if n <= 20 else 5))
            if n <= 20:
                return f"List([{shown}])"
            return f"List([{shown}, ...] {n} items at {self.chest.path})"

    def _shown(self, j: int) -> str:
        """The repr of item ``j``, or what keeps it from being read (a repr
        never raises: a damaged item file is one item, not the whole list)."""
        try:
            return repr(self.chest[self._positions[j]])
        except ValueFileError as e:
            return f"<item {j} unreadable: {e}>"


def _settings_of(chest: Chest) -> Any:
    """The value of a List's settings key in ``chest``. If it cannot be read
    (made with another dump and load: json's, read with pickle's), the
    chest is closed and ValueError says so (the error named only the key
    and the loader's complaint, ``invalid load key, '{'``)."""
    try:
        return chest.get(_META)
    except ValueFileError as e:
        chest.close()
        raise ValueError(f"the chest at {chest.path} cannot read its key {_META!r} (a "
                         f"List's settings) with this load ({e}): was it made with "
                         f"another dump and load (dump=json.dump, load=json.load, "
                         f"mode='t')? Open it with those") from e


def _is_member(value: Any) -> bool:
    """Is ``value`` what a Set keeps for an element (None, or an empty dict
    with a dump of yours)?"""
    return value is None or (isinstance(value, dict) and not value)


class Set(_Container, MutableSet):
    """A set whose elements persist as a chest's keys (any hashable value).

    Parameters
    ----------
    data : iterable, optional
        Elements to add.
    path : str, optional
        The folder (temporary without one); reopened from it later.
    **chest_keywords
        As for :class:`~chest.Chest`. A new Set packs its elements in
        SQLite (millions of them) unless given ``packed`` or ``dump``.

    All of ``set``'s methods and operators. ``union``, ``intersection``,
    ``difference`` and ``symmetric_difference`` take ``path=`` for the new
    set (temporary without it), which has this set's keywords.
    """

    def __init__(self, data: Iterable[Hashable] = (), path: Optional[_PathLike] = None,
                 **chest_keywords: Any) -> None:
        super().__init__(path, chest_keywords)
        if len(self.chest) and self._holds_a_list():
            self.chest.close()
            raise ValueError(f"the chest at {self.chest.path} already holds a List, "
                             f"not a Set's elements: open it with chest.List")
        with self._closed_on_error():
            self.update(data)  # (all or none: a retry would not know which were new)

    def _holds_a_list(self) -> bool:
        """Is this chest a List's? (A Set took a List's positions for its
        elements, and its first add made the List unopenable.) Its own key
        holds a dict of settings (a Set's elements hold None, or an empty
        dict with a dump of yours), as every List's does; one made before
        that has positions for keys, whose values are not a Set's (unless
        its first eight items are all None)."""
        chest = self.chest
        if _META in chest and not _is_member(_settings_of(chest)):
            return True
        sample = list(itertools.islice(iter(chest), 8))
        return all(type(k) is tuple and k and all(type(d) is int for d in k)
                   for k in sample) and not all(_is_member(chest[k]) for k in sample)

    def _chest_keywords(self, keywords: Dict[str, Any]) -> Dict[str, Any]:
        """The user's keywords, with a ``dump`` and ``load`` that write each
        element's value whatever the user's take (see :func:`_own_format`):
        None for the default pickle (as before), else an empty
        :class:`_State` (a dump of bytes only could not write None). What
        an element's value is read as does not matter."""
        own = _own_format(keywords)
        self._member: Any = None if own is keywords else _State()
        return own

    def __contains__(self, x: object) -> bool:
        if isinstance(x, set):  # (as set does: {1} in a set of frozensets)
            x = frozenset(x)
        return x in self.chest

    def __iter__(self) -> Iterator[Any]:
        return iter(self.chest)

    def __len__(self) -> int:
        return len(self.chest)

    # (Each looks, then changes, under the chest's lock: two threads
    # discarding one element, one of them between the other's look and its
    # deletion, raised KeyError.)
    def add(self, x: Hashable) -> None:
        """Add ``x`` (one write if it is new)."""
        with self.chest.lock:
            if x not in self.chest:
                self.chest[x] = self._member

    def discard(self, x: Hashable) -> None:
        """Remove ``x`` if it is there."""
        if isinstance(x, set):  # (as set does)
            x = frozenset(x)
        with self.chest.lock:
            if x in self.chest:
                del self.chest[x]

    def remove(self, x: Hashable) -> None:
        """Remove ``x``; KeyError if it is not there."""
        if isinstance(x, set):  # (as set does)
            x = frozenset(x)
        with self.chest.lock:
            if x not in self.chest:
                raise KeyError(x)
            del self.chest[x]

    def pop(self) -> Any:
        """Remove and return an element; KeyError if the set is empty."""
        with self.chest.lock:
            if not len(self.chest):
                raise KeyError("pop from an empty set")
            return self.chest.popitem()[0]

    def clear(self) -> None:
        """Remove every element."""
        self.chest.clear()

    def _from_iterable(self, it: Iterable[Hashable]) -> "Set":  # type: ignore[override]
        return Set(it, **self._settings(None))

    def _new(self, path: Optional[_PathLike]) -> "Set":
        """An empty Set with this one's keywords at ``path`` (see
        :meth:`_empty_like`)."""
        new: Set = self._empty_like(path, "Set")
        return new

    def copy(self, path: Optional[_PathLike] = None) -> "Set":
        """A new Set with the same elements and keywords: temporary unless
        given a ``path`` (which must not hold elements already)."""
        new = self._new(path)
        with new._dropped_on_error():
            new.update(self)
        return new

    __copy__ = copy

    @staticmethod
    def _lookup(other: Iterable[Hashable]) -> AbstractSet:
        """``other`` as something ``in`` is fast on."""
        return other if isinstance(other, (AbstractSet, set, frozenset)) \
            else set(other)

    def union(self, *others: Iterable[Hashable], path: Optional[_PathLike] = None) -> "Set":
        """A new set of the elements of this set and of ``others``."""
        new = self._new(path)
        with new._dropped_on_error():
            new.update(self, *others)
        return new

    def intersection(self, *others: Iterable[Hashable],
                     path: Optional[_PathLike] = None) -> "Set":
        """A new set of the elements in this set and in every one of ``others``."""
        lookups = [self._lookup(o) for o in others]
        new = self._new(path)
        with new._dropped_on_error():
            for x in self:
                if all(x in o for o in lookups):
                    new.add(x)
        return new

    def difference(self, *others: Iterable[Hashable],
                   path: Optional[_PathLike] = None) -> "Set":
        """A new set of the elements in this set and in none of ``others``."""
        lookups = [self._lookup(o) for o in others]
        new = self._new(path)
        with new._dropped_on_error():
            for x in self:
                if not any(x in o for o in lookups):
                    new.add(x)
        return new

    def symmetric_difference(self, other: Iterable[Hashable],
                             path: Optional[_PathLike] = None) -> "Set":
        """A new set of the elements in exactly one of this set and ``other``."""
        lookup = self._lookup(other)
        new = self._new(path)
        with new._dropped_on_error():
            for x in self:
                if x not in lookup:
                    new.add(x)
            for x in lookup:
                if x not in self:
                    new.add(x)
        return new

    def update(self, *others: Iterable[Hashable]) -> None:
        """Add the elements of ``others``. If one cannot be written (or
        ``others`` raise), this raises and the set is as it was: the
        elements it added are removed again."""
        added: ListOf[Hashable] = []
        try:
            for other in others:
                for x in other:
                    with self.chest.lock:
                        if x not in self.chest:
                            self.chest[x] = self._member
                            added.append(x)
        except BaseException:
            for x in added:
                self.discard(x)
            raise

    def __ior__(self, other: AbstractSet[Any]) -> "Set":  # type: ignore[misc]
        self.update(other)
        return self

    def intersection_update(self, *others: Iterable[Hashable]) -> None:
        """Keep only the elements also in every one of ``others``."""
        lookups = [self._lookup(o) for o in others]
        for x in [x for x in self if not all(x in o for o in lookups)]:
            self.discard(x)

    def difference_update(self, *others: Iterable[Hashable]) -> None:
        """Remove the elements of ``others``."""
        for other in others:
            for x in other:
                self.discard(x)

    def symmetric_difference_update(self, other: Iterable[Hashable]) -> None:
        """Keep the elements in exactly one of this set and ``other``."""
        for x in set(self._lookup(other)):
            if x in self:
                self.discard(x)
            else:
                self.add(x)

    def issubset(self, other: Iterable[Hashable]) -> bool:
        """Is every element also in ``other``?"""
        lookup = self._lookup(other)
        return all(x in lookup for x in self)

    def issuperset(self, other: Iterable[Hashable]) -> bool:
        """Is every element of ``other`` in this set?"""
        return all(x in self for x in other)

    __hash__ = None  # type: ignore[assignment]  # (mutable, as set)

    def __repr__(self) -> str:
        n = len(self)
        if n <= 20:
            return f"Set({set(self)!r})"
        return f"Set({n} elements at {self.chest.path})"
