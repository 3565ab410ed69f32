"""``python -m chest``: look into, check and repair the folder of a chest.

A chest with a path keeps one file per key in its folder and lists them in
the ``.keys`` index (keys written since the last flush are listed in the
``.journal``). ``info``, ``ls`` and ``verify`` only read the folder: they
take no lock and change nothing, so they are safe while a writer has the
chest open. ``repair`` takes the writer's lock and rewrites ``.keys`` from
what can be trusted.

Commands::

    python -m chest info PATH [--largest N] [--json]
    python -m chest ls PATH [--long] [--json]
    python -m chest verify PATH [--deep] [--quiet]
    python -m chest repair PATH [--dry-run] [--force] [--quiet]

Exit codes: 0 all is well; 1 problems were found (or the index cannot be
read); 2 the path is not a chest folder or cannot be read, a writer holds
the lock (``repair``), or the command line is wrong.

``verify --deep`` and ``repair`` load value files with ``pickle.load`` (the
chest's default ``load``): only run them on chests you trust, and not on
chests written with another ``dump``.

Examples
--------
>>> import os, shutil, tempfile
>>> from chest import Chest
>>> folder = tempfile.mkdtemp()
>>> path = os.path.join(folder, "c")
>>> with Chest(path=path, available_memory=0) as c:
...     c["x"] = [1, 2, 3]
...     c["a", "b"] = "ab"
>>> main(["ls", "--long", path])
        22  x     'x'
        17  _a/b  ('a', 'b')
0
>>> main(["verify", "--deep", path])
no problems: 2 keys, 2 value files (39 B)
0
>>> shutil.rmtree(folder)
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import pickle
import pickletools
import re
import shutil
import sys
import textwrap
import time
from dataclasses import dataclass, field
from typing import (IO, Any, Callable, Dict, Hashable, Iterable, List, NamedTuple,
                    Optional, Sequence, Set, Tuple)

from . import __version__
from . import lock as _lock
from .budget import format_bytes
from .errors import ChestLockedError, IndexFileError
from .journal import _RECORD, JOURNAL_NAME, read_journal
from .store import (_HEADER, _IDENTIFIER, INDEX_MAGIC, INDEX_NAME, OLD_PREFIX,
                    TMP_PREFIX, Store, _safe_name, key_to_filename)
from .store import write_index_file as _write_index_file

__all__ = [
    "main", "build_parser", "read_index", "read_journal_file", "walk_files",
    "effective_entries", "journal_changes", "find_problems", "lock_state",
    "check_value_file", "key_from_name", "write_index_file", "Progress",
]

#: Exit codes.
OK, PROBLEMS, UNUSABLE = 0, 1, 2
#: Where ``repair`` keeps a copy of a ``.keys`` it could not read.
BACKUP_NAME = INDEX_NAME + ".damaged"
#: Progress is shown on a terminal when more files than this are checked.
PROGRESS_THRESHOLD = 200

# A name the store made from a hash: its key cannot be read back from it.
_HASHED = re.compile(r"[0-9a-f]{32}(-[0-9]+)?\Z")


class CliError(Exception):
    """A message for the user and the exit code that goes with it."""

    def __init__(self, message: str, code: int = UNUSABLE) -> None:
        super().__init__(message)
        self.code = code


# -- reading a chest's folder ------------------------------------------------------
class Entry(NamedTuple):
    """A key, its file name relative to the folder ('/'-separated) and size."""

    key: Hashable
    name: str
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
    """The absolute path of a chest's folder; :class:`CliError` if it is none.

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
    CliError
        If it is missing, not a folder, unreadable or not a chest's.
    """
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise CliError(f"{path}: no such folder")
    if not os.path.isdir(path):
        raise CliError(f"{path} is not a folder (a chest is a folder)")
    try:
        names = os.listdir(path)
    except OSError as e:
        raise CliError(f"cannot read the folder {path}: {e.strerror or e}") from e
    if INDEX_NAME in names or JOURNAL_NAME in names:
        return path
    if all(n.startswith((TMP_PREFIX, OLD_PREFIX)) for n in names):
        return path
    raise CliError(f"{path} is not a chest folder: it has no {INDEX_NAME} index "
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
    CliError
        If the file exists but cannot be opened (permissions, I/O error).
    """
    filename = os.path.join(path, INDEX_NAME)
    try:
        with open(filename, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return IndexInfo()
    except OSError as e:
        raise CliError(f"cannot read {filename}: {e.strerror or e}") from e
    info = IndexInfo(exists=True, nbytes=len(data))
    info.legacy = not data.startswith(INDEX_MAGIC)
    if not info.legacy and len(data) >= len(INDEX_MAGIC) + _HEADER.size:
        info.version = _HEADER.unpack_from(data, len(INDEX_MAGIC))[0]
    try:
        # Read-only: no lock, no journal replay, no clean-up; nothing changes.
        store = Store(path, pickle.dump, pickle.load, readonly=True)
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
        raise CliError(f"cannot read {filename}: {e.strerror or e}") from e
    offset = 0
    for _ in records:
        length, _crc = _RECORD.unpack_from(data, offset)
        offset += _RECORD.size + length
    return JournalInfo(True, records, max(0, max(total, len(data)) - offset))


def walk_files(path: str) -> Dict[str, int]:
    """Every file below ``path``: relative name ('/'-separated) -> size."""
    found: Dict[str, int] = {}

    def fail(error: OSError) -> None:
        raise CliError(f"cannot read {error.filename}: {error.strerror or error}")

    for folder, _, names in os.walk(path, onerror=fail):
        rel = os.path.relpath(folder, path)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        for name in names:
            try:
                found[prefix + name] = os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                continue  # removed meanwhile (a writer is running)
    return found


def _full(path: str, name: str) -> str:
    return os.path.join(path, *name.split("/"))


def _old_name(name: str) -> str:
    """The name a retired copy of file ``name`` has."""
    folder, _, base = name.rpartition("/")
    return f"{folder}/{OLD_PREFIX}{base}" if folder else OLD_PREFIX + base


def _stat_size(path: str) -> Callable[[str], Optional[int]]:
    def size(name: str) -> Optional[int]:
        try:
            return os.stat(_full(path, name)).st_size
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
    for key, name, size in records:
        last[key] = (name, size)
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


def _special(name: str) -> bool:
    """The chest's own files at the top of its folder (index, journal, backups)."""
    return name in (INDEX_NAME, JOURNAL_NAME) or name.startswith(BACKUP_NAME)


def _leftover_kind(name: str) -> Optional[str]:
    base = name.rpartition("/")[2]
    if base.startswith(TMP_PREFIX):
        return "a temporary file left by an interrupted write"
    if base.startswith(OLD_PREFIX):
        return "a retired value file, kept until a flush that did not happen"
    return None


# -- the writer's lock -----------------------------------------------------------
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


def _take_writer_lock(path: str) -> _lock.WriterLock:
    info = os.stat(path)
    with _lock._held_lock:
        if (info.st_dev, info.st_ino) in _lock._held:
            raise CliError(f"cannot repair {path}: this process has the chest open "
                           f"for writing; close it first")
    try:
        return _lock.WriterLock(path, timeout=0)
    except ChestLockedError as e:
        raise CliError(f"cannot repair {path}: it is open for writing by {e.holder}; "
                       f"close the chest there first (repair needs the writer's "
                       f"lock)") from e


# -- value files ----------------------------------------------------------------
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
            any(not _IDENTIFIER.match(w) or _HASHED.match(w) for w in words):
        return None
    key: Hashable = words[0] if len(words) == 1 else tuple(words)
    return key if key_to_filename(key) == name else None


# -- progress -------------------------------------------------------------------
class Progress:
    """One updating line on a terminal: ``checked 1234/5678 files``.

    Shown only when ``stream`` is a terminal, ``quiet`` is false and there
    are more than :data:`PROGRESS_THRESHOLD` files; at most ten times a
    second. Used as a context manager, it erases its line at the end.

    Parameters
    ----------
    total : int
        How many files will be checked.
    quiet : bool
        Show nothing.
    stream : file, optional
        Where to write (default: ``sys.stderr``).
    """

    def __init__(self, total: int, quiet: bool = False,
                 stream: Optional[IO[str]] = None) -> None:
        self.total = total
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = (not quiet and total > PROGRESS_THRESHOLD
                        and callable(isatty) and bool(isatty()))
        self.done = 0
        self._width = 0
        self._last = 0.0

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more files checked."""
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and self.done < self.total:
            return
        self._last = now
        text = f"checked {self.done}/{self.total} files"
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    def close(self) -> None:
        """Erase the line."""
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


# -- verify ---------------------------------------------------------------------
@dataclass
class Report:
    """What :func:`find_problems` found."""

    problems: List[str]
    keys: int
    value_files: int
    value_bytes: int


def find_problems(path: str, deep: bool = False, quiet: bool = False) -> Report:
    """Every problem of the chest at ``path``, one line each.

    Parameters
    ----------
    path : str
        The chest's folder (see :func:`check_folder`).
    deep : bool
        Also load every value file with ``pickle.load``; otherwise only
        check that it exists and has the size the index says.
    quiet : bool
        Show no progress on the terminal.

    Returns
    -------
    Report
        The problems (an unreadable index, missing files, sizes that differ
        from the index, files that do not load, journal records the index
        lacks, leftovers of a crash, files no key refers to) and counts.
    """
    index = read_index(path)
    journal = read_journal_file(path)
    files = walk_files(path)
    problems: List[str] = []
    if index.error is not None:
        problems.append(f"index unreadable: {index.error}")
    entries = effective_entries(index.entries, journal.records, files.get)
    checked: List[Entry] = []
    owners: Dict[str, Hashable] = {}
    for e in entries.values():
        if _safe_name(e.name) != e.name:
            problems.append(f"unsafe name: key {e.key!r} has the file name "
                            f"{e.name!r}, which is not a plain name inside the folder")
            continue
        folded = e.name.casefold()
        if folded in owners:
            problems.append(f"shared file: keys {owners[folded]!r} and {e.key!r} "
                            f"both have the file {e.name}")
        owners.setdefault(folded, e.key)
        checked.append(e)
    named: Set[str] = set()  # retired copies already named by a problem
    with Progress(len(checked) if deep else 0, quiet) as progress:
        for e in checked:
            size = files.get(e.name)
            if size is None:
                old = _old_name(e.name)
                hint = ""
                if old in files:
                    named.add(old)
                    hint = (f"; its retired copy {old} is left (repair, or opening "
                            f"the chest for writing, puts it back)")
                problems.append(f"missing: key {e.key!r}: its file {e.name} is "
                                f"missing{hint}")
                continue
            if e.source == "index" and size != e.size:
                problems.append(f"size: key {e.key!r}: file {e.name} has {size} "
                                f"bytes, the index says {e.size}")
            if deep:
                loaded = check_value_file(_full(path, e.name))
                progress.advance()
                if not loaded.ok:
                    problems.append(f"damaged: key {e.key!r}: file {e.name} does "
                                    f"not load ({loaded.describe()})")
    problems.extend(journal_changes(index.entries, journal.records, files.get))
    if journal.torn_bytes:
        problems.append(f"journal: the last {journal.torn_bytes} bytes of "
                        f"{JOURNAL_NAME} are a torn or damaged record (ignored)")
    referred = {e.name for e in index.entries}
    referred.update(name for _, name, _ in journal.records if name is not None)
    for name in sorted(files):
        kind = _leftover_kind(name)
        if name in named:
            continue
        if kind is not None:
            problems.append(f"leftover: {name} ({kind})")
        elif not _special(name) and name not in referred:
            problems.append(f"orphan: {name} is a file no key refers to")
    present = [e for e in checked if e.name in files]
    return Report(problems, len(entries), len(present),
                  sum(files[e.name] for e in present))


# -- repair ---------------------------------------------------------------------
@dataclass
class Plan:
    """What :func:`plan_repair` decided."""

    entries: List[Entry] = field(default_factory=list)
    restores: List[Tuple[str, str]] = field(default_factory=list)  # from, to
    removals: List[str] = field(default_factory=list)
    dropped: int = 0
    unchanged: int = 0  # entries of the index kept as they are
    left: int = 0  # files no key will refer to, left in place
    loaded: int = 0
    failed: int = 0
    changed: bool = False


def plan_repair(path: str, index: IndexInfo, journal: JournalInfo,
                files: Dict[str, int], say: Callable[[str], None],
                quiet: bool = False) -> Plan:
    """Decide what the new index holds, and what to restore and remove.

    Parameters
    ----------
    path : str
        The chest's folder.
    index, journal, files
        What :func:`read_index`, :func:`read_journal_file` and
        :func:`walk_files` found.
    say : callable
        Called with one line per decision.
    quiet : bool
        Show no progress on the terminal.

    Returns
    -------
    Plan
        Nothing on disk is changed.
    """
    plan = Plan()
    entries = effective_entries(index.entries, journal.records, files.get)
    kept: Dict[Hashable, Entry] = {}
    used: Set[str] = set()  # folded names of kept entries
    restored: Set[str] = set()
    entry_names = {e.name for e in entries.values()}
    referred = {e.name for e in index.entries} | entry_names
    referred.update(name for _, name, _ in journal.records if name is not None)

    # Orphan files that may be recovered by their name: (file, name to take).
    candidates: List[Tuple[str, str]] = []
    old_files: List[str] = []
    for name in sorted(files):
        base = name.rpartition("/")[2]
        if _special(name):
            continue
        if base.startswith(TMP_PREFIX):
            plan.removals.append(name)
        elif base.startswith(OLD_PREFIX):
            old_files.append(name)
        elif name not in referred:
            if base.startswith("."):
                say(f"leave  {name}: a hidden file chest did not write")
                plan.left += 1
            else:
                candidates.append((name, name))
    if index.error is not None:
        # The index is lost: a retired file may be the only copy of its key.
        for old in old_files:
            folder, _, base = old.rpartition("/")
            live = (folder + "/" if folder else "") + base[len(OLD_PREFIX):]
            if live not in files and live not in referred:
                candidates.append((old, live))

    for key in (e.key for e in index.entries if e.key not in entries):
        say(f"drop   {key!r}: deleted after the index was written (journal)")
        plan.dropped += 1

    def load(name: str) -> Loaded:
        loaded = check_value_file(_full(path, name))
        progress.advance()
        if loaded.ok or loaded.whole:
            plan.loaded += 1
        else:
            plan.failed += 1
        return loaded

    with Progress(len(entries) + len(candidates), quiet) as progress:
        for e in entries.values():
            what = f"{e.key!r} ({e.source}, file {e.name})"
            if _safe_name(e.name) != e.name or e.name.casefold() in used:
                progress.advance()
                say(f"drop   {what}: its file name is unsafe or already taken")
                plan.dropped += 1
                continue
            source = e.name
            if e.name not in files:
                old = _old_name(e.name)
                if old not in files:
                    progress.advance()
                    say(f"drop   {what}: the file is missing")
                    plan.dropped += 1
                    continue
                source = old
            loaded = load(source)
            if not (loaded.ok or loaded.whole):
                say(f"drop   {what}: it does not load ({loaded.reason}); the file "
                    f"is left in place")
                plan.left += 1
                plan.dropped += 1
                continue
            if source != e.name:
                say(f"restore {source} -> {e.name}: the retired copy of key "
                    f"{e.key!r} ({e.source})")
                plan.restores.append((source, e.name))
                restored.add(source)
            size = files[source]
            note = f", size {e.size} -> {size}" if size != e.size else ""
            if not loaded.ok:
                note += f"; it does not load here ({loaded.describe()})"
            if note or e.source != "index" or source != e.name:
                say(f"keep   {what}{note}")
            else:
                plan.unchanged += 1
            kept[e.key] = Entry(e.key, e.name, size, e.source)
            used.add(e.name.casefold())

        for source, name in candidates:
            key = key_from_name(name)
            if key is None:
                progress.advance()
                say(f"leave  {source}: no key can be read from its name (only "
                    f"identifier-like names and _a/b tuple folders say their key)")
                plan.left += 1
                continue
            if key in kept or name.casefold() in used:
                progress.advance()
                say(f"leave  {source}: key {key!r} is already in the chest")
                plan.left += 1
                continue
            loaded = load(source)
            if not (loaded.ok or loaded.whole):
                say(f"leave  {source}: it does not load ({loaded.reason})")
                plan.left += 1
                continue
            if source != name:
                say(f"restore {source} -> {name}")
                plan.restores.append((source, name))
                restored.add(source)
            note = "" if loaded.ok else f"; it does not load here ({loaded.describe()})"
            say(f"add    {key!r} (file name, file {name}){note}")
            kept[key] = Entry(key, name, files[source], "file name")
            used.add(name.casefold())

    candidate_files = {source for source, _ in candidates}
    for old in old_files:
        if old in restored:
            continue
        if old not in candidate_files:  # (a candidate was reported above)
            # Its key's file exists, or it was replaced or deleted since the
            # index: opening the chest for writing would remove it too.
            plan.removals.append(old)
    if plan.unchanged:
        say(f"keep   {plan.unchanged} keys of the index as they are (their files "
            f"exist and load)")
    for name in plan.removals:
        say(f"remove {name}")
    if journal.exists:
        say(f"remove {JOURNAL_NAME} ({len(journal.records)} records)")

    plan.entries = list(kept.values())
    old_entries = [(e.key, e.name, e.size) for e in index.entries]
    new_entries = [(e.key, e.name, e.size) for e in plan.entries]
    plan.changed = bool(
        index.error is not None or index.legacy or journal.exists or plan.removals
        or plan.restores or old_entries != new_entries
        or (not index.exists and plan.entries))
    return plan


def write_index_file(path: str, entries: Iterable[Entry], durable: bool = True) -> None:
    """Atomically write ``.keys`` listing ``entries``, as Store.write_index does.

    For a folder whose ``.keys`` cannot be read (so no
    :class:`~chest.store.Store` can be opened on it): the bytes are the
    store's format, magic, header (version, length, crc32), pickled entries.

    Parameters
    ----------
    path : str
        The chest's folder.
    entries : iterable of Entry
        The keys, in the chest's order.
    durable : bool
        ``fsync`` the file and the folder.
    """
    _write_index_file(path, [(e.key, e.name, e.size) for e in entries], durable)


def _write_with_store(path: str, entries: Sequence[Entry]) -> None:
    """Write ``.keys`` through Store.write_index (the index must be readable)."""
    store = Store(path, pickle.dump, pickle.load, readonly=True, durable=True)
    for e in entries:
        store.names[e.key] = e.name
        store.files[e.key] = e.size
    store.write_index([e.key for e in entries])


def _backup_name(path: str) -> str:
    name, i = BACKUP_NAME, 0
    while os.path.lexists(os.path.join(path, name)):
        i += 1
        name = f"{BACKUP_NAME}.{i}"
    return name


def repair(path: str, dry_run: bool = False, force: bool = False,
           quiet: bool = False, out: Optional[IO[str]] = None) -> int:
    """Rebuild the ``.keys`` of the chest at ``path`` from what can be trusted.

    Keeps the entries of the index and of the journal whose files exist and
    load, recovers files whose names say their key, drops the rest (their
    files stay), then removes the journal and the leftovers of a crash. A
    ``.keys`` that cannot be read is kept as ``.keys.damaged``.

    Parameters
    ----------
    path : str
        The chest's folder.
    dry_run : bool
        Only print what would be done.
    force : bool
        Write the index even if no value file loads (by default that is
        taken for a chest written with another ``dump`` and refused).
    quiet : bool
        Show no progress on the terminal.
    out : file, optional
        Where to print the decisions (default: ``sys.stdout``).

    Returns
    -------
    int
        The exit code: 0 when repaired (or nothing to repair).

    Raises
    ------
    CliError
        If the path is not a chest, a writer holds its lock, or the repair
        is refused.
    """
    out = sys.stdout if out is None else out
    path = check_folder(path)

    def say(line: str) -> None:
        print(("would " if dry_run else "") + line, file=out)

    writer_lock = _take_writer_lock(path)
    try:
        index = read_index(path)
        journal = read_journal_file(path)
        files = walk_files(path)
        print(f"{'dry run, nothing is changed: ' if dry_run else ''}repairing {path}",
              file=out)
        print(f"index: {index.describe()}", file=out)
        backup = _backup_name(path) if index.error is not None else None
        if backup is not None:
            say(f"copy   {INDEX_NAME} -> {backup}")
        plan = plan_repair(path, index, journal, files, say, quiet)
        if not plan.changed:
            print(f"nothing to repair: {len(plan.entries)} keys", file=out)
            return OK
        if plan.failed and not plan.loaded and not force:
            raise CliError(
                f"refusing to repair {path}: none of its {plan.failed} value files "
                f"loads with pickle.load; was the chest written with another dump? "
                f"Nothing was changed (pass --force to drop them from the index)")
        if not dry_run:
            _apply(path, plan, index, journal, backup)
        sources = [e.source for e in plan.entries]
        print(f"{'would write' if dry_run else 'wrote'} {INDEX_NAME}: "
              f"{len(plan.entries)} keys ({sources.count('index')} from the index, "
              f"{sources.count('journal')} from the journal, "
              f"{sources.count('file name')} recovered from file names), "
              f"{plan.dropped} dropped", file=out)
        if plan.left:
            print(f"{plan.left} files are left in place with no key (verify lists "
                  f"them as orphans); delete them once you are sure", file=out)
        return OK
    finally:
        writer_lock.release()


def _apply(path: str, plan: Plan, index: IndexInfo, journal: JournalInfo,
           backup: Optional[str]) -> None:
    try:
        if backup is not None:
            shutil.copy2(os.path.join(path, INDEX_NAME), os.path.join(path, backup))
        for source, name in plan.restores:
            os.replace(_full(path, source), _full(path, name))
        if index.error is None:
            _write_with_store(path, plan.entries)
        else:
            write_index_file(path, plan.entries)
        # Only now: a crash before the index is written must find the journal.
        if journal.exists:
            os.remove(os.path.join(path, JOURNAL_NAME))
        for name in plan.removals:
            try:
                os.remove(_full(path, name))
            except FileNotFoundError:
                pass
    except OSError as e:
        raise CliError(f"repair of {path} failed: {e}") from e


# -- info and ls ----------------------------------------------------------------
def _key_order(index: IndexInfo, journal: JournalInfo, path: str) -> List[Entry]:
    return list(effective_entries(index.entries, journal.records,
                                  _stat_size(path)).values())


def info(path: str, largest: int = 10, as_json: bool = False,
         out: Optional[IO[str]] = None) -> int:
    """Print a summary of the chest at ``path``.

    Parameters
    ----------
    path : str
        The chest's folder.
    largest : int
        How many of the largest values to list.
    as_json : bool
        Print one JSON object (keys as their repr).
    out : file, optional
        Where to print (default: ``sys.stdout``).

    Returns
    -------
    int
        0, or 1 if the index cannot be read.
    """
    out = sys.stdout if out is None else out
    path = check_folder(path)
    index = read_index(path)
    journal = read_journal_file(path)
    files = walk_files(path)
    entries = (effective_entries(index.entries, journal.records, files.get)
               if index.readable else {})
    indexed = {e.key for e in index.entries}
    from_journal = sum(key not in indexed for key in entries)
    changes = journal_changes(index.entries, journal.records, files.get) \
        if index.readable else []
    held, holder = lock_state(path)
    leftovers = [n for n in sorted(files) if _leftover_kind(n) is not None]
    total = sum(e.size for e in entries.values())
    top = sorted(entries.values(), key=lambda e: -e.size)[:largest]
    if as_json:
        json.dump({
            "path": path,
            "index": {"exists": index.exists, "format_version": index.version,
                      "legacy": index.legacy, "bytes": index.nbytes,
                      "error": index.error},
            "keys": len(entries) if index.readable else None,
            "keys_from_journal": from_journal,
            "value_bytes": total,
            "largest": [{"key": repr(e.key), "file": e.name, "size": e.size}
                        for e in top],
            "writer_lock": {"held": held, "holder": None if held is False else holder},
            "journal": {"exists": journal.exists, "records": len(journal.records),
                        "unindexed": len(changes), "torn_bytes": journal.torn_bytes},
            "leftovers": leftovers,
        }, out, indent=2)
        out.write("\n")
        return OK if index.readable else PROBLEMS

    def row(label: str, text: str) -> None:
        print(f"{label + ':':<15}{text}", file=out)

    row("chest", path)
    row("index", index.describe())
    if index.readable:
        extra = f" ({from_journal} not in the index yet)" if from_journal else ""
        row("keys", f"{len(entries)}{extra}")
        row("bytes on disk", f"{format_bytes(total)} ({total} bytes in "
                             f"{len(entries)} value files)")
    else:
        row("keys", f"unknown (run: python -m chest repair {path})")
    row("writer lock", holder if not held else f"held by {holder}")
    if not journal.exists:
        row("journal", "none")
    else:
        state = ("the chest is open: normal while it runs" if held else
                 "the chest was not closed cleanly; opening it for writing, or "
                 "repair, writes them into the index")
        row("journal", f"{len(journal.records)} records, {len(changes)} keys not in "
                       f"the index" + (f" ({state})" if changes else ""))
    row("leftovers", ", ".join(leftovers) if leftovers else "none")
    if top:
        print(f"largest values ({len(top)} of {len(entries)}):", file=out)
        _print_entries(top, out)
    return OK if index.readable else PROBLEMS


def _print_entries(entries: Sequence[Entry], out: IO[str]) -> None:
    width = max(len(e.name) for e in entries)
    for e in entries:
        print(f"{e.size:>10}  {e.name:<{width}}  {e.key!r}", file=out)


def ls(path: str, long: bool = False, as_json: bool = False,
       out: Optional[IO[str]] = None) -> int:
    """Print the keys of the chest at ``path``, in the chest's order.

    Parameters
    ----------
    path : str
        The chest's folder.
    long : bool
        Also print each value's size and file name.
    as_json : bool
        Print a JSON list of ``{"key": repr, "file": name, "size": bytes}``.
    out : file, optional
        Where to print (default: ``sys.stdout``).

    Returns
    -------
    int
        0, or 1 if the index cannot be read.
    """
    out = sys.stdout if out is None else out
    path = check_folder(path)
    index = read_index(path)
    if not index.readable:
        print(f"error: {index.error}", file=sys.stderr)
        return PROBLEMS
    entries = _key_order(index, read_journal_file(path), path)
    if as_json:
        json.dump([{"key": repr(e.key), "file": e.name, "size": e.size}
                   for e in entries], out, indent=2)
        out.write("\n")
    elif long and entries:
        _print_entries(entries, out)
    else:
        for e in entries:
            print(repr(e.key), file=out)
    return OK


def verify(path: str, deep: bool = False, quiet: bool = False,
           out: Optional[IO[str]] = None) -> int:
    """Print every problem of the chest at ``path``, then a summary.

    Parameters
    ----------
    path : str
        The chest's folder.
    deep : bool
        Load every value with ``pickle.load`` too.
    quiet : bool
        Show no progress on the terminal.
    out : file, optional
        Where to print (default: ``sys.stdout``).

    Returns
    -------
    int
        0 if there is no problem, 1 otherwise.
    """
    out = sys.stdout if out is None else out
    path = check_folder(path)
    held, holder = lock_state(path)
    if held:
        print(f"note: the chest is open for writing by {holder}: a journal and "
              f"leftovers are normal while it runs, and files may change while "
              f"they are checked", file=out)
    report = find_problems(path, deep=deep, quiet=quiet)
    for problem in report.problems:
        print(problem, file=out)
    counts = (f"{report.keys} keys, {report.value_files} value files "
              f"({format_bytes(report.value_bytes)})")
    if report.problems:
        print(f"{len(report.problems)} problems in {path} ({counts}); "
              f"see: python -m chest repair --dry-run {path}", file=out)
        return PROBLEMS
    print(f"no problems: {counts}", file=out)
    return OK


# -- the command line -----------------------------------------------------------
def _non_negative(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {n}")
    return n


_EPILOG = """\
exit codes:
  0  all is well
  1  problems were found, or the index cannot be read
  2  not a chest folder, cannot be read, locked by a writer (repair),
     or a wrong command line
"""


def _sub(sub: Any, name: str, summary: str,
         description: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=summary, description=textwrap.fill(description, 79),
                       epilog=_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="PATH", help="the chest's folder")
    return p


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m chest``.

    Returns
    -------
    argparse.ArgumentParser
        With the subcommands ``info``, ``ls``, ``verify`` and ``repair``.
    """
    parser = argparse.ArgumentParser(
        prog="python -m chest",
        description=textwrap.fill(
            "Look into, check and repair the folder of a chest (a dict that spills "
            "values to files). info, ls and verify only read the folder; repair "
            "takes the writer's lock. Run 'python -m chest COMMAND --help' for "
            "a command's options.", 79),
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"chest {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = _sub(sub, "info", "index format, keys, bytes, largest values, lock, journal",
             "Show the index format, the number of keys, the bytes of the value "
             "files, the largest values, whether a writer holds the lock, and "
             "whether a journal holds keys the index lacks (a chest that was not "
             "closed cleanly). Reads only; takes no lock.")
    p.add_argument("--largest", metavar="N", type=_non_negative, default=10,
                   help="list the N largest values (default: 10)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (keys as their repr)")

    p = _sub(sub, "ls", "list the keys, one per line (their repr)",
             "List the keys in the chest's order, one repr per line, as a reopened "
             "chest would have them: the index, then what the journal adds. Reads "
             "only; takes no lock.")
    p.add_argument("-l", "--long", action="store_true",
                   help="also show each value's size in bytes and file name")
    p.add_argument("--json", action="store_true",
                   help='print a JSON list of {"key": repr, "file": name, '
                        '"size": bytes}')

    p = _sub(sub, "verify", "report every problem; exit 1 if there is any",
             "Report every problem, one per line, then a summary: an unreadable "
             "index, missing value files, sizes that differ from the index, values "
             "that do not load (--deep), journal records the index lacks, leftovers "
             "of a crash (.tmp.*, .old.*) and files no key refers to (orphans). "
             "Changes nothing and takes no lock.")
    p.add_argument("--deep", action="store_true",
                   help="also load every value with pickle.load (slow; runs the "
                        "pickles: only for chests you trust)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="show no progress on the terminal")

    p = _sub(sub, "repair", "rebuild .keys from what can be trusted",
             "Rebuild .keys while holding the writer's lock: keep the entries of the "
             "index and of the journal whose files exist and load (pickle.load: "
             "only for chests you trust), recover files whose names say their key "
             "(identifier-like names, _a/b tuple folders), drop the rest (their "
             "files stay in place), then remove the journal and the .tmp.*/.old.* "
             "leftovers. A damaged .keys is kept as .keys.damaged. Prints each "
             "decision.")
    p.add_argument("-n", "--dry-run", action="store_true",
                   help="print what would be done and change nothing")
    p.add_argument("--force", action="store_true",
                   help="repair even if no value file loads (by default taken "
                        "for a chest written with another dump, and refused)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="show no progress on the terminal")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``python -m chest`` with ``argv`` (default: ``sys.argv[1:]``).

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program's name.

    Returns
    -------
    int
        The exit code (see the module's docstring).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a wrong command line
        return e.code if isinstance(e.code, int) else UNUSABLE
    try:
        if args.command == "info":
            return info(args.path, largest=args.largest, as_json=args.json)
        if args.command == "ls":
            return ls(args.path, long=args.long, as_json=args.json)
        if args.command == "verify":
            return verify(args.path, deep=args.deep, quiet=args.quiet)
        return repair(args.path, dry_run=args.dry_run, force=args.force,
                      quiet=args.quiet)
    except CliError as e:
        sys.stdout.flush()
        print(f"error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``python -m chest ls PATH | head``).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return PROBLEMS
