"""Read a chest's folder from outside, without opening it as a chest.

What ``python -m chest`` and its checks need: the ``.keys`` index and the
``.journal`` as the chest would read them (but without taking the writer's
lock, replaying the journal or cleaning up: nothing changes), the files in
the folder, whether a writer holds the lock, and whether a value file loads.

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
import json
import os
import pickle
import pickletools
import re
from dataclasses import dataclass, field
from typing import (Any, Callable, Dict, Hashable, Iterable, List, NamedTuple, Optional,
                    Sequence, Tuple)

from . import lock as _lock
from .errors import FolderError, IndexFileError
from .journal import JOURNAL_NAME, RECORD, read_journal
from .files import OLD_PREFIX, TMP_PREFIX
from .index import HEADER, INDEX_MAGIC, INDEX_NAME, holds_a_chest
from .names import IDENTIFIER, key_to_filename
from .store import Store

__all__ = [
    "Entry", "IndexInfo", "JournalInfo", "Loaded", "check_folder", "read_index",
    "read_journal_file", "walk_files", "effective_entries", "journal_changes",
    "lock_state", "check_value_file", "key_from_name", "BACKUP_NAME",
    "full_path", "retired_name", "stat_size", "is_chest_file", "leftover_kind",
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
    records: List[Tuple[Hashable, Optional[str], int]] = field(default_factory=list)
    torn_bytes: int = 0


def check_folder(path: str) -> str:
    """The absolute path of a chest's folder; FolderError if it is none.

    A chest's folder holds ``.keys`` or ``.journal``, or nothing but the
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
    if INDEX_NAME in names or JOURNAL_NAME in names:
        return path
    if all(n.startswith((TMP_PREFIX, OLD_PREFIX)) for n in names):
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
    # chest 0.2 wrote .keys with the user's dump: pickle, or json for a
    # json chest (a list of [key, file name] pairs).
    dump, load, mode = (json.dump, json.load, "t") if info.legacy and \
        data.lstrip()[:1] == b"[" else (pickle.dump, pickle.load, "b")
    try:
        # Read-only: no lock, no journal replay, no clean-up; nothing changes.
        store = Store(path, dump, load, mode=mode, readonly=True)
    except IndexFileError as e:
        info.error = str(e)
        return info
    except Exception as e:  # a well-formed file with malformed entries
        info.error = f"cannot read the chest index {filename}: {type(e).__name__}: {e}"
        return info
    info.entries = [Entry(key, name, store.files[key])
                    for key, name in store.indexed.items()]
    return info


def read_journal_file(path: str) -> JournalInfo:
    """The whole records of the chest's ``.journal`` (see
    :func:`chest.journal.read_journal`) and how many bytes follow them."""
    filename = os.path.join(path, JOURNAL_NAME)
    try:
        total = os.path.getsize(filename)
    except FileNotFoundError:
        return JournalInfo()
    try:
        records = read_journal(filename)
        with open(filename, "rb") as f:
            data = f.read()
    except OSError as e:
        raise FolderError(f"cannot read {filename}: {e.strerror or e}") from e
    offset = 0
    for _ in records:
        length, _crc = RECORD.unpack_from(data, offset)
        offset += RECORD.size + length
    return JournalInfo(True, records, max(0, max(total, len(data)) - offset))


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


def stat_size(path: str) -> Callable[[str], Optional[int]]:
    """``size(name)``: the size of file ``name`` in ``path``, None if missing."""

    def size(name: str) -> Optional[int]:
        try:
            return os.stat(full_path(path, name)).st_size
        except OSError:
            return None
    return size


def effective_entries(index: Iterable[Entry],
                      records: Iterable[Tuple[Hashable, Optional[str], int]],
                      size_of: Callable[[str], Optional[int]]) -> Dict[Hashable, Entry]:
    """The keys a reopened chest has: the index with the journal replayed.

    As :class:`~chest.store.Store` replays it: a deletion removes the key, a
    write whose file exists adds (or moves) the key with the file's size, a
    write whose file is gone is ignored.

    Parameters
    ----------
    index : iterable of Entry
        The entries of ``.keys``.
    records : iterable of (key, name or None, size)
        The journal's records, in order.
    size_of : callable
        ``size_of(name)``: the size of a file, or None if it is missing.

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
        size = size_of(name)
        if size is None:
            continue
        entry = indexed.get(key)
        if entry is not None and (entry.name, entry.size) == (name, size):
            entries[key] = entry  # the index says so already
        else:
            entries[key] = Entry(key, name, size, "journal")
    return entries


def journal_changes(index: Sequence[Entry],
                    records: Iterable[Tuple[Hashable, Optional[str], int]],
                    size_of: Callable[[str], Optional[int]]) -> List[str]:
    """One line for every key whose last journal record the index lacks.

    Parameters
    ----------
    index : sequence of Entry
        The entries of ``.keys``.
    records : iterable of (key, name or None, size)
        The journal's records, in order.
    size_of : callable
        ``size_of(name)``: the size of a file, or None if it is missing.

    Returns
    -------
    list of str
        Empty when the index already holds everything the journal says
        (the journal is then a leftover of a crash right after a flush).
    """
    indexed = {e.key: e for e in index}
    last: Dict[Hashable, Tuple[Optional[str], int]] = {}
    for key, name, recorded in records:
        last[key] = (name, recorded)
    changes = []
    for key, (name, _) in last.items():
        entry = indexed.get(key)
        if name is None:
            if entry is not None:
                changes.append(f"journal: key {key!r} was deleted, but the index still "
                               f"lists it (file {entry.name})")
            continue
        size = size_of(name)
        if size is None:
            changes.append(f"journal: key {key!r} was written to {name} after the "
                           f"index, and that file is gone (a stale record)")
        elif entry is None:
            changes.append(f"journal: key {key!r} is in file {name} ({size} bytes) "
                           f"but not in the index")
        elif entry.name != name or entry.size != size:
            changes.append(f"journal: key {key!r} is in file {name} ({size} bytes); "
                           f"the index says {entry.name} ({entry.size} bytes)")
    return changes


def is_chest_file(name: str) -> bool:
    """The chest's own files at the top of its folder (index, journal, backups)."""
    return name in (INDEX_NAME, JOURNAL_NAME) or name.startswith(BACKUP_NAME)


def leftover_kind(name: str) -> Optional[str]:
    """What a leftover of a crash (``.tmp.*``, ``.old.*``) is; None otherwise."""
    base = name.rpartition("/")[2]
    if base.startswith(TMP_PREFIX):
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


def _pickle_is_whole(filename: str) -> bool:
    """True if the file is one complete pickle stream (nothing is imported)."""
    try:
        with open(filename, "rb") as f:
            last = None
            for opcode, _, _ in pickletools.genops(f):
                last = opcode.name
            return last == "STOP"
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
