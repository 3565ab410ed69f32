"""The ``.keys`` index: the chest's own file format, and chest 0.2's.

A header (``chest-index`` magic line, then version, payload length and the
crc32 of the payload), then a pickled dict: every key in the chest's order
with where its value is and its size, the retired files the writer removes
right after writing the index, and (version 2) the packed engine new small
values go to, the next slot number and the retired slots. A place is a file
name relative to the folder ('/'-separated), or, for a packed value,
``(engine, slot)``. Version 1, written by a chest without packed values,
keeps ``"entries": [(key, name, size), ...]``; version 2 three columns,
``"keys"``, ``"places"``, ``"sizes"`` (faster to load). Written to a
temporary name and renamed into place.

Examples
--------
>>> import os, tempfile
>>> folder = tempfile.mkdtemp()
>>> write_index_file(folder, [("x", "x", 10), (("a", "b"), "_a/b", 3)])
>>> with open(os.path.join(folder, INDEX_NAME), "rb") as f:
...     data = f.read()
>>> parse_index("index", data[len(INDEX_MAGIC):]).entries
[('x', 'x', 10), (('a', 'b'), '_a/b', 3)]
>>> is_valid_place(("sqlite", 7)), is_valid_place("../x")
(True, False)
"""
from __future__ import annotations

import builtins
import os
from operator import itemgetter
import pickle
import struct
import zlib
from typing import Any, Hashable, Iterable, List, NamedTuple, Optional, Set, Tuple, Union

import cloudpickle

from .errors import IndexFileError
from .files import FILE_MODE, remove_quietly, sync_dir, temp_name
from .journal import JOURNAL_NAME
from .names import safe_name

__all__ = ["INDEX_NAME", "INDEX_MAGIC", "INDEX_VERSION", "HEADER", "write_index_file",
           "parse_index", "as_key", "holds_a_chest", "Place", "Slot", "IndexContent",
           "is_slot", "is_valid_place", "ENGINE_NAMES"]

INDEX_NAME = ".keys"
INDEX_MAGIC = b"chest-index\n"
INDEX_VERSION = 2  # the newest this chest reads; 1 has file names only
HEADER = struct.Struct("<IQI")  # version, payload length, crc32 of payload
#: The packed engines a place may name (see :mod:`chest.packed`).
ENGINE_NAMES = ("sqlite", "lmdb")

#: Where a packed value is: ``(engine name, slot)``.
Slot = Tuple[str, int]
#: Where a value is: a file name, or a packed slot.
Place = Union[str, Slot]


def is_slot(place: Any) -> bool:
    """Is ``place`` a packed slot ``(engine, slot)`` (not a file name, nor a
    value kept in the journal)?"""
    return type(place) is tuple and len(place) == 2


def _valid_slots(places: List[Any]) -> bool:
    """Are all ``places`` valid slots? Checked by passes in C."""
    if not places:
        return True
    if set(map(type, places)) != {tuple} or set(map(len, places)) != {2}:
        return False
    numbers = list(map(itemgetter(1), places))
    return set(map(itemgetter(0), places)) <= set(ENGINE_NAMES) and \
        set(map(type, numbers)) == {int} and min(numbers) >= 0


def is_valid_place(place: Any) -> bool:
    """A safe file name, or ``(engine, slot)`` of a known engine."""
    if type(place) is tuple:
        return len(place) == 2 and place[0] in ENGINE_NAMES and \
            type(place[1]) is int and place[1] >= 0
    return isinstance(place, str) and safe_name(place) == place


class IndexContent(NamedTuple):
    """What an index holds: its keys in order, their places and sizes."""

    keys: List[Hashable]
    places: List[Place]
    sizes: List[int]
    retired: Set[str]
    packed: Optional[str]
    version: int
    #: Slots are numbered from here on after the index was written.
    next_slot: int = 0
    #: Slots the writer removes right after writing the index.
    retired_slots: Set[Slot] = set()

    @property
    def entries(self) -> List[Tuple[Hashable, Place, int]]:
        """``(key, place, size)`` of every key, in order."""
        return list(zip(self.keys, self.places, self.sizes))


def write_index_file(folder: str, entries: Iterable[Tuple[Hashable, Place, int]] = (),
                     durable: bool = False, retired: Iterable[str] = (),
                     file_mode: int = FILE_MODE, packed: Optional[str] = None,
                     next_slot: int = 0, retired_slots: Iterable[Slot] = (),
                     columns: Optional[Tuple[List[Hashable], List[Place], List[int]]] = None
                     ) -> None:
    """Atomically write the ``.keys`` of ``folder`` listing ``entries``
    (key, place, size), in the chest's order, or the same as three
    ``columns`` (keys, places, sizes), the ``retired`` files (relative
    names) and slots that the writer removes next, the engine of new packed
    values and the number of the next slot.

    Version 2 (packed values, or a packed engine named) keeps the three
    columns: a million keys load in ~0.3 s, their dicts are made in C.
    """
    if columns is None:
        entries = list(entries)
        columns = ([e[0] for e in entries], [e[1] for e in entries],
                   [e[2] for e in entries])
    keys, places, sizes = columns
    content: dict
    if packed is not None or next_slot > 1 or \
            any(type(place) is tuple for place in places):
        content = {"keys": keys, "places": places, "sizes": sizes,
                   "retired": list(retired), "packed": packed,
                   "next_slot": next_slot, "retired_slots": list(retired_slots)}
        version = 2
    else:
        content = {"entries": list(zip(keys, places, sizes)), "retired": list(retired)}
        version = 1
    payload = _dumps_index(content)
    header = INDEX_MAGIC + HEADER.pack(version, len(payload), zlib.crc32(payload))
    tmp = temp_name(folder, "keys")
    try:
        with builtins.open(tmp, "wb", opener=lambda path, flags: os.open(
                path, flags, file_mode)) as f:
            if file_mode != FILE_MODE:
                os.fchmod(f.fileno(), file_mode)
            f.write(header)
            f.write(payload)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, os.path.join(folder, INDEX_NAME))
    except BaseException:
        remove_quietly(tmp)
        raise
    if durable:
        sync_dir(folder)


def as_key(key: Any) -> Hashable:
    """Keys from json come back as lists where they were tuples."""
    if isinstance(key, list):
        return tuple(as_key(k) for k in key)
    return key


def _dumps_index(obj: Any) -> bytes:
    try:
        return pickle.dumps(obj, protocol=5)
    except Exception:
        return cloudpickle.dumps(obj, protocol=5)


def parse_index(filename: str, data: bytes) -> IndexContent:
    """What an index holds (``data``: the file after its magic)."""
    if len(data) < HEADER.size:
        raise IndexFileError(filename, "the header is truncated")
    version, length, crc = HEADER.unpack_from(data)
    if version > INDEX_VERSION:
        raise IndexFileError(
            filename, f"format version {version} is newer than this chest "
            f"(reads up to {INDEX_VERSION}); upgrade chest")
    payload = data[HEADER.size:]
    if len(payload) < length:
        raise IndexFileError(
            filename, f"truncated: {len(payload)} of {length} bytes" if length <=
            2 * len(payload) + 4096 else "its header is corrupted (it gives a length "
            f"of {length} bytes, for {len(payload)})")
    if len(payload) != length:
        raise IndexFileError(filename, f"corrupted: {len(payload)} bytes where its "
                                       f"header gives {length}")
    if zlib.crc32(payload) != crc:
        raise IndexFileError(filename, "checksum mismatch: the file is corrupted")
    try:
        content = pickle.loads(payload)
        if "keys" in content:
            keys, places, sizes = content["keys"], content["places"], content["sizes"]
            if not len(keys) == len(places) == len(sizes) or \
                    not set(map(type, sizes)) <= {int}:
                raise ValueError("columns of different lengths, or sizes not ints")
        else:
            entries = content["entries"]
            keys = [key for key, _, _ in entries]
            places = [place for _, place, _ in entries]
            sizes = [int(size) for _, _, size in entries]
        retired = {name for name in content.get("retired", ()) if isinstance(name, str)}
        packed = content.get("packed")
        next_slot = int(content.get("next_slot", 0))
        retired_slots = {tuple(p) for p in content.get("retired_slots", ())}
    except Exception as e:
        raise IndexFileError(filename, f"{type(e).__name__}: {e}") from e
    if not _valid_slots(places):  # (checked in C first: a million in ~0.1 s)
        for key, place in zip(keys, places):
            if not is_valid_place(place):
                raise IndexFileError(filename,
                                     f"unsafe file name {place!r} of key {key!r}")
    if not all(is_valid_place(p) for p in retired_slots):
        raise IndexFileError(filename, "malformed retired slots")
    if packed is not None and packed not in ENGINE_NAMES:
        raise IndexFileError(filename, f"unknown packed engine {packed!r}")
    return IndexContent(keys, places, sizes, retired, packed, version, next_slot,
                        retired_slots)


def holds_a_chest(folder: str) -> bool:
    """Does ``folder`` hold a chest of its own (an index or a journal)?"""
    return any(os.path.lexists(os.path.join(folder, name))
               for name in (INDEX_NAME, JOURNAL_NAME))
