"""Read a chest's folder from outside, without opening it as a chest.

What ``python -m chest`` and its checks need: the ``.keys`` index and the
``.journal`` as the chest would read them (but without taking the writer's
lock, replaying the journal or cleaning up: nothing changes), the files in
the folder, the slots of its packed engines (read without changing the
folder), whether a writer holds the lock, and whether a value loads.

A key's *place* is a file name (relative, '/'-separated) or, for a packed
value, ``(engine, slot)``: ``sizes.get(place)`` works for both once
:func:`place_sizes` has put the files and the slots in one dict, and
:func:`place_text` writes either for humans (``x``, ``sqlite:12``).

Examples
--------
>>> import os, shutil, tempfile
>>> from chest import Chest
>>> folder = tempfile.mkdtemp()
>>> path = os.path.join(folder, "c")
>>> with Chest(path=path, available_memory=0) as c:
...     c["x"] = [1, 2, 3]
>>> [(e.key, e.name) for e in read_index(path).entries]
[('x', 'x')]
>>> lock_state(path)
(False, 'free')
>>> shutil.rmtree(folder)
"""
from __future__ import annotations

import fcntl
import io
import json
import os
import pickle
import pickletools
import re
import sqlite3
import threading
from dataclasses import dataclass, field
from typing import (IO, Any, Callable, Dict, Hashable, Iterable, Iterator, List,
                    Mapping, NamedTuple, Optional, Sequence, Set, Tuple)

from . import lock as _lock
from .errors import FolderError, IndexFileError, describe
from .journal import IN_JOURNAL, JOURNAL_NAME, RECORD, read_journal_bytes
from .files import OLD_PREFIX, TMP_PREFIX, is_temp_name
from .index import (ENGINE_NAMES, HEADER, INDEX_MAGIC, INDEX_NAME, Slot, holds_a_chest,
                    is_valid_place, parse_index)
from .names import IDENTIFIER, key_to_filename
from .packed import ENGINES, PackedEngine, as_os_error, engine_files, open_engine
from .store import Store

try:  # an extra: chest[lmdb]
    import lmdb
except ImportError:  # pragma: no cover - depends on the installation
    lmdb = None  # type: ignore[assignment]

__all__ = [
    "Entry", "IndexInfo", "JournalInfo", "Loaded", "check_folder", "read_index",
    "read_journal_file", "walk_files", "effective_entries", "journal_changes",
    "lock_state", "check_value_file", "key_from_name", "BACKUP_NAME",
    "full_path", "retired_name", "ENGINE_FILES", "stat_size", "is_chest_file",
    "leftover_kind",
    "place_text", "describe_place", "engine_filename", "PackedInfo", "PackedReader",
    "read_packed", "place_sizes", "check_value_bytes", "open_packed", "damaged_name",
    "is_journal_place", "journal_sizes", "read_journal_value",
]

#: Where ``repair`` keeps a copy of a ``.keys`` it could not read.
BACKUP_NAME = INDEX_NAME + ".damaged"

# A name the store made from a hash: its key cannot be read back from it.
_HASHED = re.compile(r"[0-9a-f]{32}(-[0-9]+)?\Z")


class Entry(NamedTuple):
    """A key, where its value is and its size: a file name relative to the
    folder ('/'-separated), or ``(engine, slot)`` for a packed value."""

    key: Hashable
    name: Any
    size: int
    source: str = "index"  # "index", "journal" or "file name"


@dataclass
class IndexInfo:
    """What ``.keys`` holds, or why it cannot be read."""

    exists: bool = False
    version: Optional[int] = None  # from the header; None for a chest 0.2 index
    legacy: bool = False  # written by chest 0.2.x (a pickled list of pairs)
    nbytes: int = 0
    error: Optional[str] = None
    entries: List[Entry] = field(default_factory=list)
    #: The engine new small values go to (format 2), None if files only.
    packed: Optional[str] = None
    #: The number the writer gives its next packed slot (format 2; 0 if the
    #: index does not say): slots from there on were written after the index.
    next_slot: int = 0
    #: Slots the writer removes right after writing the index.
    retired_slots: Set[Slot] = field(default_factory=set)

    @property
    def readable(self) -> bool:
        """True if there is no index (an empty chest) or it could be read."""
        return self.error is None

    def describe(self) -> str:
        """One line for humans."""
        if not self.exists:
            return "none (no key has been flushed yet)"
        if self.error is not None:
            return f"unreadable: {self.error}"
        fmt = "chest 0.2 (legacy)" if self.legacy else f"format {self.version}"
        return f"{INDEX_NAME}, {fmt}, {self.nbytes} bytes"


@dataclass
class JournalInfo:
    """The records of ``.journal`` and the bytes of a torn record after them."""

    exists: bool = False
    #: (key, place or None if deleted, size)
    records: List[Tuple[Hashable, Any, int]] = field(default_factory=list)
    torn_bytes: int = 0
    #: The bytes the records were read from (a writer may fold the journal
    #: and start another meanwhile: values are read from these, not again).
    data: bytes = field(default=b"", repr=False)


def check_folder(path: str) -> str:
    """The absolute path of a chest's folder; FolderError if it is none.

    A chest's folder holds ``.keys``, ``.journal`` or a packed database
    (``.packed.sqlite3``: its index may be lost), or nothing but the
    chest's own hidden files (an empty chest).

    Parameters
    ----------
    path : str
        The folder given on the command line.

    Returns
    -------
    str
        Its absolute path.

    Raises
    ------
    FolderError
        If it is missing, not a folder, unreadable or not a chest's.
    """
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise FolderError(f"{path}: no such folder")
    if not os.path.isdir(path):
        raise FolderError(f"{path} is not a folder (a chest is a folder)")
    try:
        names = os.listdir(path)
    except OSError as e:
        raise FolderError(f"cannot read the folder {path}: {e.strerror or e}") from e
    if INDEX_NAME in names or JOURNAL_NAME in names or any(
            engine_filename(engine) in names for engine in ENGINE_NAMES):
        return path  # (a packed database without an index: a chest's, index lost)
    if all(n.startswith((TMP_PREFIX, OLD_PREFIX)) or n in ENGINE_FILES for n in names):
        return path
    raise FolderError(f"{path} is not a chest folder: it has no {INDEX_NAME} index "
                      f"and no {JOURNAL_NAME}")


def read_index(path: str) -> IndexInfo:
    """Read the ``.keys`` of the chest at ``path`` as the chest itself would.

    Parameters
    ----------
    path : str
        The chest's folder.

    Returns
    -------
    IndexInfo
        Its entries in the chest's order, or the reason it cannot be read
        (``error``; entries are then empty).

    Raises
    ------
    FolderError
        If the file exists but cannot be opened (permissions, I/O error).
    """
    filename = os.path.join(path, INDEX_NAME)
    try:
        with open(filename, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return IndexInfo()
    except OSError as e:
        raise FolderError(f"cannot read {filename}: {e.strerror or e}") from e
    info = IndexInfo(exists=True, nbytes=len(data))
    info.legacy = not data.startswith(INDEX_MAGIC)
    if not info.legacy and len(data) >= len(INDEX_MAGIC) + HEADER.size:
        info.version = HEADER.unpack_from(data, len(INDEX_MAGIC))[0]
    try:
        if info.legacy:
            info.entries = _read_legacy_index(path, data)
            return info
        # As Store reads it: a key listed twice has its last place and size.
        content = parse_index(filename, data[len(INDEX_MAGIC):])
        places = {key: place for key, place, _ in content.entries}
        sizes = {key: size for key, _, size in content.entries}
    except IndexFileError as e:
        info.error = str(e)
        return info
    except Exception as e:  # a well-formed file with malformed entries
        info.error = f"cannot read the chest index {filename}: {type(e).__name__}: {e}"
        return info
    info.entries = [Entry(key, place, sizes[key]) for key, place in places.items()]
    info.packed = content.packed
    info.next_slot = content.next_slot
    info.retired_slots = set(content.retired_slots)
    return info


def _read_legacy_index(path: str, data: bytes) -> List[Entry]:
    """The entries of a chest 0.2 ``.keys``, as a read-only Store reads them
    (no lock, no journal replay, no clean-up: nothing changes)."""
    # chest 0.2 wrote .keys with the user's dump: pickle, or json for a
    # json chest (a list of [key, file name] pairs).
    dump, load, mode = (json.dump, json.load, "t") if \
        data.lstrip()[:1] == b"[" else (pickle.dump, pickle.load, "b")
    store = Store(path, dump, load, mode=mode, readonly=True)
    return [Entry(key, name, store.files[key]) for key, name in store.indexed.items()]


def read_journal_file(path: str) -> JournalInfo:
    """The whole records of the chest's ``.journal`` (see
    :func:`chest.journal.read_journal`) and how many bytes follow them."""
    filename = os.path.join(path, JOURNAL_NAME)
    try:
        with open(filename, "rb") as f:
            data = f.read()  # (once: see JournalInfo.data)
    except FileNotFoundError:
        return JournalInfo()
    except OSError as e:
        raise FolderError(f"cannot read {filename}: {e.strerror or e}") from e
    records = read_journal_bytes(data)
    offset = 0
    for _ in records:
        length, _crc = RECORD.unpack_from(data, offset)
        offset += RECORD.size + length
    return JournalInfo(True, records, len(data) - offset, data)


def walk_files(path: str) -> Dict[str, int]:
    """Every file below ``path``: relative name ('/'-separated) -> size.

    Folders below that hold a chest of their own (an index or a journal)
    are not entered: their files are not this chest's.
    """
    found: Dict[str, int] = {}

    def fail(error: OSError) -> None:
        raise FolderError(f"cannot read {error.filename}: {error.strerror or error}")

    for folder, dirs, names in os.walk(path, onerror=fail):
        # A folder with an index or a journal of its own is another chest.
        dirs[:] = [d for d in dirs if not holds_a_chest(os.path.join(folder, d))]
        rel = os.path.relpath(folder, path)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        for name in names:
            try:
                found[prefix + name] = os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                continue  # removed meanwhile (a writer is running)
    return found


def full_path(path: str, name: str) -> str:
    """The file ``name`` ('/'-separated, relative to the folder ``path``)."""
    return os.path.join(path, *name.split("/"))


def retired_name(name: str) -> str:
    """The name a retired copy of file ``name`` has."""
    folder, _, base = name.rpartition("/")
    return f"{folder}/{OLD_PREFIX}{base}" if folder else OLD_PREFIX + base


def stat_size(path: str, slots: Optional[Mapping[Slot, int]] = None
              ) -> Callable[[Any], Optional[int]]:
    """``size(place)``: the size of file ``place`` in ``path``, or of a
    packed slot as ``slots`` (:attr:`PackedInfo.sizes`) lists it; None if
    missing (every slot, without ``slots``)."""

    def size(place: Any) -> Optional[int]:
        if not isinstance(place, str):
            return slots.get(place) if slots is not None and is_valid_place(place) \
                else None
        try:
            return os.stat(full_path(path, place)).st_size
        except OSError:
            return None
    return size


def place_sizes(files: Mapping[str, int], slots: Mapping[Slot, int]) -> Dict[Any, int]:
    """One dict of the sizes of every file (:func:`walk_files`) and every
    packed slot (:attr:`PackedInfo.sizes`): ``sizes.get(place)`` for both."""
    sizes: Dict[Any, int] = dict(files)
    sizes.update(slots)
    return sizes


# -- places and packed values -------------------------------------------------------
#: The files of every packed engine (a database and its companions).
ENGINE_FILES = frozenset(f for name in ENGINE_NAMES for f in engine_files(name))


def engine_filename(engine: str) -> str:
    """The file of packed engine ``engine`` in a chest's folder."""
    return ENGINES[engine].filename


def place_text(place: Any) -> str:
    """A place for a column or JSON: ``x``, ``_a/b``, ``sqlite:12``.

    >>> place_text("_a/b"), place_text(("sqlite", 12))
    ('_a/b', 'sqlite:12')
    """
    if isinstance(place, str):
        return place
    if is_valid_place(place):
        return f"{place[0]}:{place[1]}"
    if is_journal_place(place):
        return f"journal:{place[1]}"
    return repr(place)


def describe_place(place: Any) -> str:
    """A place in a sentence: ``file x``, ``slot 12 of .packed.sqlite3``.

    >>> describe_place("x"), describe_place(("lmdb", 3))
    ('file x', 'slot 3 of .packed.lmdb')
    """
    if isinstance(place, str):
        return f"file {place}"
    if is_valid_place(place):
        return f"slot {place[1]} of {engine_filename(place[0])}"
    if is_journal_place(place):
        return f"the journal ({place[2]} bytes at {place[1]}, written through)"
    return f"place {place!r}"


def _is_checkable(place: Any) -> bool:
    """A place whose size may be looked up: any file name (unsafe ones are
    reported by their callers), a valid slot, or a value kept in the journal."""
    return isinstance(place, str) or is_valid_place(place) or is_journal_place(place)


def is_journal_place(place: Any) -> bool:
    """Is ``place`` a value kept in the journal itself (written through):
    ``(IN_JOURNAL, offset, length)``?"""
    return type(place) is tuple and len(place) == 3 and place[0] == IN_JOURNAL


def journal_sizes(records: Iterable[Tuple[Hashable, Any, int]]) -> Dict[Any, int]:
    """The sizes of the values the journal's records keep: to add to
    :func:`place_sizes`."""
    return {place: place[2] for _, place, _ in records if is_journal_place(place)}


def read_journal_value(journal: JournalInfo, place: Any) -> bytes:
    """The bytes of a value kept in the journal (one of ``journal``'s records'
    places), as :func:`read_journal_file` read it."""
    data = journal.data[place[1]:place[1] + place[2]]
    if len(data) != place[2]:
        raise OSError(f"the journal ends before the value ({len(data)} of "
                      f"{place[2]} bytes)")
    return data


@dataclass
class PackedInfo:
    """What the packed engines of a chest's folder hold."""

    #: ``(engine, slot) -> size`` of every slot of every engine file read.
    sizes: Dict[Slot, int] = field(default_factory=dict)
    #: engine -> bytes of its file and companions, for each engine file present.
    files: Dict[str, int] = field(default_factory=dict)
    #: engine -> why its file cannot be read (damaged, unreadable).
    errors: Dict[str, str] = field(default_factory=dict)
    #: engine -> why this Python cannot open it (its package is missing).
    unavailable: Dict[str, str] = field(default_factory=dict)

    def unreadable(self, engine: str) -> Optional[str]:
        """Why the slots of ``engine`` cannot be told, or None."""
        return self.errors.get(engine) or self.unavailable.get(engine)

    def slots_of(self, engine: str) -> Dict[int, int]:
        """slot -> size of the slots of ``engine``."""
        return {slot: size for (name, slot), size in self.sizes.items()
                if name == engine}


class _SettledSQLite(PackedEngine):
    """A SQLite engine file no connection has open (no ``-wal`` beside it),
    read as immutable: a read-only connection would otherwise leave a
    ``-wal`` and a ``-shm`` in the folder."""

    name = "sqlite"
    filename = ENGINES["sqlite"].filename

    def __init__(self, folder: str) -> None:
        self.path = os.path.join(folder, self.filename)
        self._lock = threading.Lock()
        try:
            self._db: Optional[sqlite3.Connection] = sqlite3.connect(
                "file:" + self.path + "?mode=ro&immutable=1", uri=True,
                isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise as_os_error(e, self.path) from e

    def _query(self, sql: str, args: Tuple[Any, ...] = ()) -> List[Any]:
        with self._lock:
            if self._db is None:
                raise ValueError(f"the packed values of {self.path} are closed")
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                if "no such table" in str(e):
                    return []  # made by a writer that had not written yet
                raise as_os_error(e, self.path) from e

    def get(self, slot: int) -> Optional[bytes]:
        rows = self._query("SELECT data FROM packed WHERE slot = ?", (slot,))
        return bytes(rows[0][0]) if rows else None

    def slots(self, start: int = 0) -> Iterator[Tuple[int, int]]:
        return iter([(int(slot), int(size)) for slot, size in self._query(
            "SELECT slot, length(data) FROM packed WHERE slot >= ? ORDER BY slot",
            (start,))])

    def last_slot(self) -> int:
        rows = self._query("SELECT max(slot) FROM packed")
        return int(rows[0][0] or 0) if rows else 0

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


class _UnlockedLMDB(PackedEngine):
    """An LMDB engine file without its ``-lock`` (so no process has it open),
    read without locking: opening it otherwise makes the lock file."""

    name = "lmdb"
    filename = ENGINES["lmdb"].filename

    def __init__(self, folder: str) -> None:
        self.path = os.path.join(folder, self.filename)
        try:
            self._env: Any = lmdb.open(self.path, subdir=False, readonly=True,
                                       lock=False, max_dbs=0,
                                       map_size=getattr(ENGINES["lmdb"], "MAP_SIZE",
                                                        1 << 40))
        except lmdb.Error as e:
            raise as_os_error(e, self.path) from e

    def get(self, slot: int) -> Optional[bytes]:
        try:
            with self._env.begin(buffers=False) as txn:
                data = txn.get(slot.to_bytes(8, "big"))
        except lmdb.Error as e:
            raise as_os_error(e, self.path) from e
        return None if data is None else bytes(data)

    def slots(self, start: int = 0) -> Iterator[Tuple[int, int]]:
        try:
            with self._env.begin(buffers=True) as txn:
                cursor = txn.cursor()
                found = [(int.from_bytes(key, "big"), len(value))
                         for key, value in cursor] \
                    if cursor.set_range(start.to_bytes(8, "big")) else []
        except lmdb.Error as e:
            raise as_os_error(e, self.path) from e
        return iter(found)

    def last_slot(self) -> int:
        try:
            with self._env.begin() as txn:
                cursor = txn.cursor()
                return int.from_bytes(cursor.key(), "big") if cursor.last() else 0
        except lmdb.Error as e:
            raise as_os_error(e, self.path) from e

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


def open_packed(engine: str, path: str) -> PackedEngine:
    """Open packed engine ``engine`` of the chest at ``path`` to read, beside
    a writer if there is one, without changing the folder: no lock is
    taken, no file is made (but a reader's entries in the engine's own
    ``-shm`` or ``-lock``, as every reader of the database makes).

    Raises OSError naming the file if it cannot be read, ImportError if
    this Python lacks the engine's package.
    """
    filename = os.path.join(path, engine_filename(engine))
    if engine == "sqlite" and not os.path.exists(filename + "-wal"):
        return _SettledSQLite(path)
    if engine == "lmdb" and lmdb is not None and not os.path.exists(filename + "-lock"):
        return _UnlockedLMDB(path)
    return open_engine(engine, path, readonly=True)


def _why(error: BaseException) -> str:
    """An engine's error for humans (the file is named by the caller)."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return describe(error)


class PackedReader:
    """The packed engines of a chest's folder, opened to read (see
    :func:`open_packed`), and what they hold (:attr:`info`). A context
    manager: it closes the engines.

    Examples
    --------
    >>> import os, shutil, tempfile
    >>> from chest import Chest
    >>> folder = tempfile.mkdtemp()
    >>> path = os.path.join(folder, "c")
    >>> with Chest(path=path, available_memory=0, packed="sqlite") as c:
    ...     c["x"] = [1, 2, 3]
    >>> [x] = read_index(path).entries
    >>> with PackedReader(path) as packed:
    ...     packed.info.sizes == {x.name: 22}, packed.check(x.name).ok
    (True, True)
    >>> shutil.rmtree(folder)
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.info = PackedInfo()
        self._engines: Dict[str, PackedEngine] = {}
        for name in ENGINE_NAMES:
            filename = os.path.join(path, engine_filename(name))
            if not os.path.exists(filename):
                continue
            self.info.files[name] = sum(
                _lsize(os.path.join(path, f)) for f in engine_files(name))
            try:
                engine = open_packed(name, path)
            except ImportError as e:
                self.info.unavailable[name] = str(e)
                continue
            except Exception as e:
                self.info.errors[name] = _why(e)
                continue
            self._engines[name] = engine
            try:
                self.info.sizes.update(((name, slot), size)
                                       for slot, size in engine.slots())
            except Exception as e:
                self.info.errors[name] = _why(e)

    def read(self, place: Slot) -> Optional[bytes]:
        """The bytes of a slot; None if the slot (or its engine file) is
        missing. OSError if the engine cannot be read."""
        engine_name, slot = place
        why = self.info.unreadable(engine_name)
        if why is not None:
            raise OSError(f"{engine_filename(engine_name)} cannot be read: {why}")
        engine = self._engines.get(engine_name)
        if engine is None:
            return None
        try:
            return engine.get(slot)
        except Exception as e:
            raise OSError(f"{engine_filename(engine_name)} cannot be read: "
                          f"{_why(e)}") from e

    def check(self, place: Slot) -> Loaded:
        """Load a slot's bytes with ``pickle.loads`` (as
        :func:`check_value_file` does a file)."""
        try:
            data = self.read(place)
        except OSError as e:
            return Loaded(False, False, str(e))
        if data is None:
            return Loaded(False, False, "the slot is missing")
        return check_value_bytes(data)

    def close(self) -> None:
        """Close the engines (idempotent)."""
        engines, self._engines = self._engines, {}
        for engine in engines.values():
            engine.close()

    def __enter__(self) -> "PackedReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_packed(path: str) -> PackedInfo:
    """What the packed engines of the chest at ``path`` hold: the size of
    every slot, the bytes of their files, and why an engine file cannot be
    read. Nothing is changed (see :func:`open_packed`)."""
    with PackedReader(path) as reader:
        return reader.info


def _lsize(filename: str) -> int:
    try:
        return os.lstat(filename).st_size
    except OSError:
        return 0


def effective_entries(index: Iterable[Entry],
                      records: Iterable[Tuple[Hashable, Any, int]],
                      size_of: Callable[[Any], Optional[int]]) -> Dict[Hashable, Entry]:
    """The keys a reopened chest has: the index with the journal replayed.

    As :class:`~chest.store.Store` replays it: a deletion removes the key, a
    write whose file (or packed slot) exists adds (or moves) the key with
    its size, a write whose file or slot is gone is ignored, and so is a
    record naming a slot of no known engine.

    Parameters
    ----------
    index : iterable of Entry
        The entries of ``.keys``.
    records : iterable of (key, place or None, size)
        The journal's records, in order.
    size_of : callable
        ``size_of(place)``: the size of a file or a packed slot, or None if
        it is missing (``place_sizes(...).get``, or :func:`stat_size`).

    Returns
    -------
    dict
        key -> :class:`Entry`, in the chest's order.
    """
    indexed = {e.key: e for e in index}
    entries = dict(indexed)
    for key, name, _ in records:
        if name is None:
            entries.pop(key, None)
            continue
        size = name[2] if is_journal_place(name) else \
            size_of(name) if _is_checkable(name) else None
        if size is None:
            continue
        entry = indexed.get(key)
        if entry is not None and (entry.name, entry.size) == (name, size):
            entries[key] = entry  # the index says so already
        else:
            entries[key] = Entry(key, name, size, "journal")
    return entries


def journal_changes(index: Sequence[Entry],
                    records: Iterable[Tuple[Hashable, Any, int]],
                    size_of: Callable[[Any], Optional[int]]) -> List[str]:
    """One line for every key whose last journal record the index lacks.

    Parameters
    ----------
    index : sequence of Entry
        The entries of ``.keys``.
    records : iterable of (key, place or None, size)
        The journal's records, in order.
    size_of : callable
        ``size_of(place)``: the size of a file or a packed slot, or None if
        it is missing.

    Returns
    -------
    list of str
        Empty when the index already holds everything the journal says
        (the journal is then a leftover of a crash right after a flush).
    """
    indexed = {e.key: e for e in index}
    last: Dict[Hashable, Tuple[Any, int]] = {}
    for key, name, recorded in records:
        last[key] = (name, recorded)
    changes = []
    for key, (name, _) in last.items():
        entry = indexed.get(key)
        if name is None:
            if entry is not None:
                changes.append(f"journal: key {key!r} was deleted, but the index still "
                               f"lists it ({describe_place(entry.name)})")
            continue
        if not _is_checkable(name):
            changes.append(f"journal: key {key!r} was written to "
                           f"{describe_place(name)}, which is neither a file name "
                           f"nor a slot of a known engine (an unsafe record, "
                           f"ignored)")
            continue
        size = name[2] if is_journal_place(name) else size_of(name)
        where = describe_place(name)
        if size is None:
            gone = "that file is gone" if isinstance(name, str) else "that slot is gone"
            changes.append(f"journal: key {key!r} was written to {where} after the "
                           f"index, and {gone} (a stale record)")
        elif entry is None:
            sized = "" if is_journal_place(name) else f" ({size} bytes)"  # (said)
            changes.append(f"journal: key {key!r} is in {where}{sized} "
                           f"but not in the index")
        elif entry.name != name or entry.size != size:
            changes.append(f"journal: key {key!r} is in {where} ({size} bytes); "
                           f"the index says {place_text(entry.name)} ({entry.size} "
                           f"bytes)")
    return changes


def is_chest_file(name: str) -> bool:
    """The chest's own files at the top of its folder: index, journal, the
    packed engines' files and their companions, and the copies ``repair``
    keeps of damaged ones."""
    return name in (INDEX_NAME, JOURNAL_NAME) or name in ENGINE_FILES or \
        name.startswith(BACKUP_NAME) or \
        any(name.startswith(damaged_name(engine)) for engine in ENGINE_NAMES)


def damaged_name(engine: str) -> str:
    """Where ``repair`` keeps an engine file it cannot read (and its
    companions, with their suffixes after it)."""
    return engine_filename(engine) + ".damaged"


def leftover_kind(name: str) -> Optional[str]:
    """What a leftover of a crash (``.tmp.*``, ``.old.*``) is; None otherwise."""
    base = name.rpartition("/")[2]
    if is_temp_name(base):  # (a user's .tmp.notes is not chest's)
        return "a temporary file left by an interrupted write"
    if base.startswith(OLD_PREFIX):
        return "a retired value file, kept until a flush that did not happen"
    return None


def lock_state(path: str) -> Tuple[Optional[bool], str]:
    """Whether a writer holds the chest's lock, without disturbing it.

    Looks in ``/proc/locks`` for an ``flock`` on the folder. Where there is
    no such file it tries a shared non-blocking ``flock`` and lets go at
    once: that never takes the lock from a holder, but a writer opening the
    chest in that same instant would find it locked.

    Parameters
    ----------
    path : str
        The chest's folder.

    Returns
    -------
    (bool or None, str)
        ``(True, "process 1234")``, ``(False, "free")`` or
        ``(None, "unknown")``.
    """
    try:
        info = os.stat(path)
    except OSError:
        return None, "unknown"
    with _lock._held_lock:
        if (info.st_dev, info.st_ino) in _lock._held:
            return True, f"this process ({os.getpid()})"
    try:
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return _probe_lock(path)
    device = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}"
    same_inode = False
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF" (waiters have "->")
        if len(fields) >= 6 and fields[1] == "FLOCK":
            dev, _, inode = fields[5].rpartition(":")
            if inode == str(info.st_ino):
                if dev == device:
                    return True, f"process {fields[4]}"
                same_inode = True
    # An inode matched on another device number (overlay file systems): ask.
    return _probe_lock(path) if same_inode else (False, "free")


def _probe_lock(path: str) -> Tuple[Optional[bool], str]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None, "unknown"
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True, _lock.lock_holder(path)
        except OSError:
            return None, "unknown"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False, "free"
    finally:
        os.close(fd)


class Loaded(NamedTuple):
    """The result of loading a value file."""

    ok: bool
    #: The pickle stream is complete (it ends with STOP): the file is whole
    #: even if loading failed (a module missing in this Python, say).
    whole: bool
    reason: str = ""

    def describe(self) -> str:
        """Why the file did not load, for humans."""
        if self.whole:
            return (f"{self.reason}; the pickle stream itself is complete, so the "
                    f"file looks whole: a module this Python lacks?")
        return self.reason


def check_value_file(filename: str) -> Loaded:
    """Load a value file with ``pickle.load`` (the chest's default ``load``).

    Parameters
    ----------
    filename : str
        The file.

    Returns
    -------
    Loaded
        ``ok`` if it loaded; otherwise the error, and whether the pickle
        stream is structurally complete (checked without running it).
    """
    try:
        with open(filename, "rb") as f:
            pickle.load(f)
    except Exception as e:
        return Loaded(False, _pickle_is_whole(filename), f"{type(e).__name__}: {e}")
    return Loaded(True, True)


def check_value_bytes(data: bytes) -> Loaded:
    """Load a packed value's bytes with ``pickle.loads``, as
    :func:`check_value_file` loads a file.

    >>> check_value_bytes(pickle.dumps([1])).ok, check_value_bytes(b"x").ok
    (True, False)
    """
    try:
        pickle.loads(data)
    except Exception as e:
        return Loaded(False, _stream_is_whole(io.BytesIO(data)),
                      f"{type(e).__name__}: {e}")
    return Loaded(True, True)


def _pickle_is_whole(filename: str) -> bool:
    """True if the file is one complete pickle stream (nothing is imported)."""
    try:
        with open(filename, "rb") as f:
            return _stream_is_whole(f)
    except Exception:
        return False


def _stream_is_whole(f: IO[bytes]) -> bool:
    """One complete pickle stream, and nothing after it (a json ``0.5`` is
    the opcodes POP and STOP, then a ``5``: not a pickle a chest wrote)."""
    try:
        last = None
        for opcode, _, _ in pickletools.genops(f):
            last = opcode.name
        return last == "STOP" and not f.read(1)
    except Exception:
        return False


def key_from_name(name: str) -> Optional[Hashable]:
    """The key whose file name ``name`` is, when the name says it, else None.

    An identifier-like file name is its key; ``_a/_b/c`` is ``('a', 'b', 'c')``
    when every part is identifier-like. Names made from a hash say nothing.

    >>> key_from_name("x"), key_from_name("_a/b"), key_from_name("_a/_b/c")
    ('x', ('a', 'b'), ('a', 'b', 'c'))
    >>> key_from_name("1x"), key_from_name("a/b"), key_from_name("x.npy")
    (None, None, None)
    """
    parts = name.split("/")
    words = [p[1:] for p in parts[:-1]] + [parts[-1]]
    if any(not p.startswith("_") for p in parts[:-1]) or \
            any(not IDENTIFIER.match(w) or _HASHED.match(w) for w in words):
        return None
    key: Hashable = words[0] if len(words) == 1 else tuple(words)
    return key if key_to_filename(key) == name else None
