"""Rebuild a chest's ``.keys`` from what can be trusted (``repair``).

``repair`` takes the writer's lock, keeps the entries of the index and the
journal whose files (or packed slots) exist and load, recovers files whose
names say their key, and removes the leftovers of a crash: temporary and
retired files, and packed slots no key refers to. :func:`plan_repair`
decides, :func:`repair` prints the decisions and carries them out.

Only what the chest wrote is removed (:class:`Leftovers`, which
:mod:`chest.verify` shares): a ``.tmp.<name>.<12 hex digits>`` as
:func:`chest.files.temp_name` makes them, and a retired ``.old.<name>`` of
a name a key has (or had, or that the index lists as retired), as opening
the chest for writing tells them. A user's ``.tmp.notes`` or
``.old.config`` is left where it is.

A packed database that cannot be read whole (a damaged page fails the scan
of its slots) is read one slot at a time, as the chest reads it
(:class:`DamagedSlots`): the values that can be read and load are copied
into a fresh database that takes its place, the keys whose values cannot
be read are dropped (each named, with why), and the damaged database is
moved aside (``.packed.sqlite3.damaged``), kept for the user only.

Examples
--------
>>> import io, os, shutil, tempfile
>>> from chest import Chest
>>> folder = tempfile.mkdtemp()
>>> path = os.path.join(folder, "c")
>>> with Chest(path=path, available_memory=0) as c:
...     c["x"] = [1, 2, 3]
>>> with open(os.path.join(path, ".keys"), "wb") as f:  # damaged
...     _ = f.write(b"garbage")
>>> plan = repair(path, out=io.StringIO())
>>> [(e.key, e.source) for e in plan.entries]
[('x', 'file name')]
>>> Chest(path=path)["x"]
[1, 2, 3]
>>> shutil.rmtree(folder)
"""
from __future__ import annotations

import os
import shutil
import stat
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import (IO, Any, Callable, Dict, Hashable, Iterable, Iterator, List,
                    NamedTuple, Optional, Set, Tuple)

from .lock import WriterLock, held_here
from .errors import ChestLockedError, FolderError, describe
from .folder import (BACKUP_NAME, ENGINE_FILES, Entry, IndexInfo, JournalInfo,
                     Loaded, PackedReader,
                     damaged_name, describe_place, engine_filename, full_path,
                     place_sizes, place_text, retired_name, is_chest_file, check_folder,
                     check_value_bytes, check_value_file, effective_entries,
                     key_from_name, open_packed, read_index, read_journal_file,
                     walk_files, is_journal_place, read_journal_value)
from .journal import JOURNAL_NAME, Journal
from .progress import Progress
from .files import FILE_MODE, OLD_PREFIX, TMP_PREFIX, is_temp_name, sync_dir, temp_name
from .index import (ENGINE_NAMES, INDEX_MAGIC, INDEX_NAME, Slot, is_slot,
                    is_valid_place, parse_index)
from .index import write_index_file as _write_index_file
from .names import hashed_name, safe_name
from .packed import PackedEngine, engine_files, open_engine

__all__ = ["Plan", "plan_repair", "repair", "write_index_file", "Leftovers",
           "DamagedSlots", "SlotRead", "packed_readers", "REBUILD_BASE",
           "is_rebuild_folder"]


def _take_writer_lock(path: str) -> WriterLock:
    if held_here(path):
        raise FolderError(f"cannot repair {path}: this process has the chest open "
                          f"for writing; close it first")
    try:
        return WriterLock(path, timeout=0)
    except ChestLockedError as e:
        raise FolderError(f"cannot repair {path}: it is open for writing by "
                          f"{e.holder}; close the chest there first (repair needs "
                          f"the writer's lock)") from e


#: What a fresh packed database is built in, beside the damaged one it
#: replaces: a folder ``.tmp.packed.<12 hex digits>`` in the chest's folder
#: (a crash of ``repair`` leaves it; the next ``repair`` removes it).
REBUILD_BASE = "packed"


class Leftovers:
    """Which files of a chest's folder are leftovers the chest itself wrote:
    what opening the chest for writing removes, and nothing else.

    - ``.tmp.<name>.<12 hex digits>``, as :func:`chest.files.temp_name`
      makes them (:func:`chest.files.is_temp_name`);
    - ``.old.<name>``, a retired copy, when ``<name>`` (in the same folder)
      is a file a key has or had (``known``: the index's and the journal's
      file names), or the index lists the copy as retired;
    - the files of a fresh packed database ``repair`` was building when it
      stopped (``.tmp.packed.<12 hex>/.packed.sqlite3``, say).

    Any other name is a user's, however it starts (``.tmp.notes``,
    ``.old.config``). The index's retired copies are read from ``.keys``
    only when an ``.old.`` file needs them.

    Examples
    --------
    >>> import tempfile
    >>> leftovers = Leftovers(tempfile.mkdtemp(), known={"x", "_a/b"})
    >>> leftovers.kind(".tmp.x.0123456789ab") is not None
    True
    >>> leftovers.kind(".old.x") is not None, leftovers.kind("_a/.old.b") is not None
    (True, True)
    >>> leftovers.kind(".tmp.notes"), leftovers.kind(".old.config")
    (None, None)
    """

    def __init__(self, path: str, known: Iterable[str]) -> None:
        self.path = path
        #: File names keys have or had: their ``.old.`` copies are the chest's.
        self.known: Set[str] = set(known)
        self._retired: Optional[Set[str]] = None

    def retired(self) -> Set[str]:
        """The retired copies (``.old.`` names, relative) the index lists:
        its writer removes them right after writing it. Empty if the index
        is missing, unreadable, or chest 0.2's."""
        if self._retired is None:
            self._retired = set()
            filename = os.path.join(self.path, INDEX_NAME)
            try:
                with open(filename, "rb") as f:
                    data = f.read()
                if data.startswith(INDEX_MAGIC):
                    self._retired = set(parse_index(filename,
                                                    data[len(INDEX_MAGIC):]).retired)
            except Exception:  # no index, or one that cannot be read: none
                pass
        return self._retired

    def kind(self, name: str) -> Optional[str]:
        """What the leftover ``name`` (relative, '/'-separated) is, for
        humans; None if the chest did not write it."""
        folder, _, base = name.rpartition("/")
        if is_rebuild_folder(folder) and base in ENGINE_FILES:
            return "a packed database repair was building when it stopped"
        if is_temp_name(base):
            return "a temporary file left by an interrupted write"
        if base.startswith(OLD_PREFIX):
            live = (folder + "/" if folder else "") + base[len(OLD_PREFIX):]
            if live in self.known or name in self.retired():
                return "a retired value file, kept until a flush that did not happen"
        return None


def is_rebuild_folder(name: str) -> bool:
    """Is ``name`` (relative) a folder :func:`repair` builds a fresh packed
    database in (``.tmp.packed.<12 hex digits>``, at the top)?"""
    return "/" not in name and name.startswith(TMP_PREFIX + REBUILD_BASE + ".") and \
        is_temp_name(name)


class SlotRead(NamedTuple):
    """A slot of a damaged database, read by itself."""

    #: Its size; None if it cannot be read.
    size: Optional[int]
    #: Why it cannot be read (naming the file and the slot); "" if it can.
    why: str = ""
    #: Whether its bytes load with ``pickle.loads``; None if not asked.
    loaded: Optional[Loaded] = None


class DamagedSlots:
    """The packed databases of a chest's folder that cannot be read whole
    (:attr:`~chest.folder.PackedInfo.errors`: the scan of their slots
    fails), read one slot at a time, as the chest itself reads them.

    A damaged page loses the values on it (or below it), not the others:
    4 KiB of garbage in the middle of a SQLite database of 300 values made
    the scan fail, and 299 values read by themselves (an LMDB database: 279
    of 300). Nothing is changed (see :func:`~chest.folder.open_packed`). A
    context manager: it closes the databases.

    Parameters
    ----------
    path : str
        The chest's folder.
    engines : iterable of str
        The engines whose database cannot be read whole.
    """

    def __init__(self, path: str, engines: Iterable[str]) -> None:
        self.path = path
        self._engines: Dict[str, PackedEngine] = {}
        #: engine -> why its database cannot be opened at all.
        self.unopened: Dict[str, str] = {}
        self._read: Dict[Tuple[Slot, bool], SlotRead] = {}
        for engine in engines:
            try:
                self._engines[engine] = open_packed(engine, path)
            except Exception as e:
                self.unopened[engine] = _why(e)

    def get(self, place: Slot) -> bytes:
        """The bytes of a slot; OSError saying why (naming the file and the
        slot) if they cannot be read."""
        engine, slot = place
        filename = engine_filename(engine)
        db = self._engines.get(engine)
        if db is None:
            raise OSError(f"{filename} cannot be opened "
                          f"({self.unopened.get(engine, 'not asked for')})")
        try:
            data = db.get(slot)
        except Exception as e:
            raise OSError(f"slot {slot} cannot be read from the damaged {filename} "
                          f"({_why(e)})") from e
        if data is None:
            raise OSError(f"slot {slot} is not found in the damaged {filename}")
        return data

    def read(self, place: Slot, load: bool = True) -> SlotRead:
        """Read a slot (once: the result is kept) and, if ``load``, load its
        bytes with ``pickle.loads`` (as :meth:`PackedReader.check` does)."""
        result = self._read.get((place, load))
        if result is None:
            try:
                data = self.get(place)
            except OSError as e:
                result = SlotRead(None, str(e))
            else:
                result = SlotRead(len(data), "",
                                  check_value_bytes(data) if load else None)
            self._read[place, load] = result
        return result

    def last_slot(self, engine: str) -> int:
        """The highest slot of ``engine``'s database, if that can be read
        (the path to it may be intact); 0 otherwise."""
        db = self._engines.get(engine)
        try:
            return db.last_slot() if db is not None else 0
        except Exception:
            return 0

    def close(self) -> None:
        """Close the databases (idempotent)."""
        engines, self._engines = self._engines, {}
        for engine in engines.values():
            engine.close()

    def __enter__(self) -> "DamagedSlots":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@contextmanager
def packed_readers(path: str) -> Iterator[Tuple[PackedReader, DamagedSlots]]:
    """The packed engines of the chest at ``path`` opened to read (a
    :class:`~chest.folder.PackedReader`), and those that cannot be read whole
    opened to read one slot at a time (a :class:`DamagedSlots`), closed on
    exit. Nothing is changed.

    An LMDB database is opened once in a process (the ``lmdb`` package
    refuses a second environment on one file): when an engine cannot be
    read whole, the reader that found it out is closed, the damaged
    databases are opened to read slot by slot, then the others again.
    """
    reader = PackedReader(path)
    if not reader.info.errors:
        with reader, DamagedSlots(path, ()) as none:
            yield reader, none
        return
    errors = dict(reader.info.errors)
    reader.close()
    with DamagedSlots(path, errors) as damaged, PackedReader(path) as reader:
        # As first found (LMDB's second open says "already open" instead).
        reader.info.errors.update(errors)
        yield reader, damaged


def _why(error: BaseException) -> str:
    """An engine's error for humans (the file is named by the caller)."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return describe(error)


@dataclass
class Plan:
    """What :func:`plan_repair` decided."""

    entries: List[Entry] = field(default_factory=list)
    restores: List[Tuple[str, str]] = field(default_factory=list)  # from, to
    removals: List[str] = field(default_factory=list)
    #: Packed slots to remove: no key of the new index refers to them.
    slot_removals: List[Slot] = field(default_factory=list)
    #: Engine files that cannot be read whole, moved aside: (from, to), with
    #: companions (companions first: a ``-wal`` must never outlive its database).
    moves: List[Tuple[str, str]] = field(default_factory=list)
    #: engine -> the slots of its damaged database that kept keys have, all
    #: read and loaded: copied into a fresh database that takes its place.
    salvaged: Dict[str, List[int]] = field(default_factory=dict)
    #: engine -> the keys dropped because their slots cannot be read from its
    #: damaged database (or do not load).
    unreadable: Dict[str, List[Hashable]] = field(default_factory=dict)
    #: The engine new small values go to (kept from the index, or, if it cannot
    #: be read, the one whose database is in the folder).
    packed: Optional[str] = None
    #: The number of the next packed slot: past every slot there is or was
    #: (slots are never reused: a reader on an older index must not find
    #: another key's value in one).
    next_slot: int = 0
    dropped: int = 0  # keys lost: their files are missing, unsafe or do not load
    deleted: int = 0  # keys the journal says were deleted
    unchanged: int = 0  # entries of the index kept as they are
    left: int = 0  # files (and packed slots) no key will refer to, left in place
    loaded: int = 0
    failed: int = 0
    #: Packed slots no key can be told for because ``.keys`` is missing (the
    #: chest refuses to open so; repair removes them only with ``force``).
    unnamed: int = 0
    changed: bool = False


def plan_repair(path: str, index: IndexInfo, journal: JournalInfo,
                files: Dict[str, int], say: Callable[[str], None],
                quiet: bool = False, packed: Optional[PackedReader] = None,
                damaged: Optional[DamagedSlots] = None) -> Plan:
    """Decide what the new index holds, and what to restore and remove.

    Parameters
    ----------
    path : str
        The chest's folder.
    index, journal, files
        What :func:`~chest.folder.read_index`,
        :func:`~chest.folder.read_journal_file` and
        :func:`~chest.folder.walk_files` found.
    say : callable
        Called with one line per decision.
    quiet : bool
        Show no progress on the terminal.
    packed : PackedReader, optional
        The folder's packed engines, opened to read.
    damaged : DamagedSlots, optional
        Those of them that cannot be read whole, to read one slot at a time.
        Both are opened (by :func:`packed_readers`) and closed here if
        ``packed`` is not given.

    Returns
    -------
    Plan
        Nothing on disk is changed.
    """
    if packed is None:
        with packed_readers(path) as (reader, slot_reader):
            return plan_repair(path, index, journal, files, say, quiet, reader,
                               slot_reader)
    if damaged is None:
        with DamagedSlots(path, packed.info.errors) as slot_reader:
            return plan_repair(path, index, journal, files, say, quiet, packed,
                               slot_reader)
    plan = Plan()
    entries = _replayed(index.entries, journal, files, packed, damaged)
    kept: Dict[Hashable, Entry] = {}
    used: Set[Any] = set()  # folded names and slots of kept entries
    restored: Set[str] = set()
    entry_names = {e.name for e in entries.values()}
    referred = {e.name for e in index.entries} | entry_names
    referred.update(name for _, name, _ in journal.records
                    if isinstance(name, str) or is_valid_place(name))
    plan.packed = index.packed
    if index.error is not None or not index.exists:
        present = [name for name in ENGINE_NAMES if name in packed.info.files]
        if len(present) == 1:
            plan.packed = present[0]
            why = "cannot be read" if index.exists else "is missing"
            say(f"keep   packing small values in {engine_filename(present[0])} "
                f"(the index that said so {why})")

    # Orphan files that may be recovered by their name: (file, name to take).
    candidates: List[Tuple[str, str]] = []
    old_files: List[str] = []
    # What opening the chest for writing removes, and nothing else: the
    # names a key has or had tell its retired copies.
    leftovers = Leftovers(path, (n for n in referred if isinstance(n, str)))
    for name in sorted(files):
        base = name.rpartition("/")[2]
        if is_chest_file(name):
            continue
        if base.startswith(OLD_PREFIX):
            old_files.append(name)  # decided once the kept keys are known
        elif leftovers.kind(name) is not None:
            plan.removals.append(name)
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
        plan.deleted += 1

    for engine, why in sorted(packed.info.errors.items()):
        if engine not in damaged.unopened:
            say(f"read   {engine_filename(engine)} one slot at a time: it cannot be "
                f"read whole ({why})")

    def load(name: str) -> Loaded:
        filename = full_path(path, name)
        _refuse_unreadable(path, filename, os.O_RDONLY)
        loaded = check_value_file(filename)
        progress.advance()
        if loaded.ok or loaded.whole:
            plan.loaded += 1
        else:
            plan.failed += 1
        return loaded

    with Progress(len(entries) + len(candidates), quiet) as progress:
        for e in entries.values():
            if is_journal_place(e.name):  # (a dry run: not written out yet)
                progress.advance()
                say(f"keep   {e.key!r} (journal, its value kept there)")
                kept[e.key] = e
                continue
            if is_slot(e.name):
                _plan_slot(e, plan, packed, damaged, kept, used, say, progress)
                continue
            what = f"{e.key!r} ({e.source}, file {e.name})"
            if safe_name(e.name) != e.name or e.name.casefold() in used:
                progress.advance()
                say(f"drop   {what}: its file name is unsafe or already taken")
                plan.dropped += 1
                continue
            source = e.name
            if e.name not in files:
                old = retired_name(e.name)
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
    # (Not the names of files adopted for their names: a user's "mydata"
    # made a key does not make the user's ".old.mydata" the chest's.)
    leftovers.known.update(e.name for e in kept.values()
                           if isinstance(e.name, str) and e.source != "file name")
    for old in old_files:
        if old in restored or old in candidate_files:  # (reported above)
            continue
        if leftovers.kind(old) is not None:
            # A retired copy of a name a key has or had: opening the chest
            # for writing would remove it too.
            plan.removals.append(old)
        else:
            folder, _, base = old.rpartition("/")
            live = (folder + "/" if folder else "") + base[len(OLD_PREFIX):]
            adopted = next((e.key for e in kept.values() if e.name == live), None)
            if adopted is not None:
                say(f"leave  {old}: a hidden file chest did not write, or the "
                    f"retired copy of key {adopted!r} (recovered from its file "
                    f"name): nothing tells which. Opening the chest for writing "
                    f"removes it as that key's: move it away now if it is yours")
            else:
                say(f"leave  {old}: a hidden file chest did not write (no key has, "
                    f"or had, the file {live})")
            plan.left += 1
    _plan_damaged(path, plan, packed, files, say)
    _plan_slot_removals(plan, packed, index, journal, kept, say)
    journaled = [name[1] for _, name, _ in journal.records
                 if is_valid_place(name) and is_slot(name)]
    plan.next_slot = max([index.next_slot, *(n + 1 for _, n in packed.info.sizes),
                          *(n + 1 for n in journaled),
                          # Past the slots of a damaged database too, if its
                          # last one can be told: a reader on an older index
                          # must not find another key's value in one.
                          *(damaged.last_slot(engine) + 1
                            for engine in packed.info.errors)])
    if plan.unchanged:
        say(f"keep   {plan.unchanged} keys of the index as they are (their files "
            f"or slots exist and load)")
    for name in plan.removals:
        say(f"remove {name}")
    if journal.exists:
        say(f"remove {JOURNAL_NAME} ({len(journal.records)} records)")

    plan.entries = list(kept.values())
    old_entries = [(e.key, e.name, e.size) for e in index.entries]
    new_entries = [(e.key, e.name, e.size) for e in plan.entries]
    plan.changed = bool(
        index.error is not None or index.legacy or journal.exists or plan.removals
        or plan.restores or plan.slot_removals or plan.moves
        or old_entries != new_entries or (not index.exists and plan.entries))
    return plan


def _plan_slot(e: Entry, plan: Plan, packed: PackedReader, damaged: DamagedSlots,
               kept: Dict[Hashable, Entry], used: Set[Any],
               say: Callable[[str], None], progress: Progress) -> None:
    """Keep or drop an entry whose value is packed."""
    what = f"{e.key!r} ({e.source}, {describe_place(e.name)})"
    engine = e.name[0]
    size = packed.info.sizes.get(e.name)
    if e.name in used:
        progress.advance()
        say(f"drop   {what}: another key has this slot")
        plan.dropped += 1
        return
    unavailable = packed.info.unavailable.get(engine)
    if unavailable is not None:
        # This Python cannot open the engine: keep the entry as it is.
        progress.advance()
        say(f"keep   {what}: not checked, {engine_filename(engine)} cannot be read by "
            f"this Python ({unavailable})")
        kept[e.key] = e
        used.add(e.name)
        return
    if engine in packed.info.errors:
        # Read by itself: the damaged pages lose the values on them only.
        read = damaged.read(e.name)
        progress.advance()
        if read.size is None or read.loaded is None:
            say(f"drop   {what}: {read.why}")
            plan.dropped += 1
            plan.unreadable.setdefault(engine, []).append(e.key)
            return
        loaded = read.loaded
        size = read.size
    elif size is None:
        progress.advance()
        gone = ("the slot is missing" if engine in packed.info.files else
                f"{engine_filename(engine)} is missing")
        say(f"drop   {what}: {gone}")
        plan.dropped += 1
        return
    else:
        loaded = packed.check(e.name)
        progress.advance()
    if loaded.ok or loaded.whole:
        plan.loaded += 1
    else:
        plan.failed += 1
        removed = ("the database is replaced" if engine in packed.info.errors else
                   "the slot is removed")
        say(f"drop   {what}: it does not load ({loaded.reason}); {removed}")
        plan.dropped += 1
        if engine in packed.info.errors:
            plan.unreadable.setdefault(engine, []).append(e.key)
        return
    if engine in packed.info.errors:
        plan.salvaged.setdefault(engine, []).append(e.name[1])
    note = f", size {e.size} -> {size}" if size != e.size else ""
    if not loaded.ok:
        note += f"; it does not load here ({loaded.describe()})"
    if note or e.source != "index":
        say(f"keep   {what}{note}")
    else:
        plan.unchanged += 1
    kept[e.key] = Entry(e.key, e.name, size, e.source)
    used.add(e.name)


def _plan_damaged(path: str, plan: Plan, packed: PackedReader, files: Dict[str, int],
                  say: Callable[[str], None]) -> None:
    """Replace each database that cannot be read whole: the values of the
    kept keys (read and loaded, one slot at a time) go to a fresh database,
    the damaged one (and its companions) is moved aside for the user.

    A fresh copy rather than the damaged database kept in use: SQLite and
    LMDB both trust their pages when they write (a B-tree page or free list
    of garbage can hand out a page that holds live values, or fail every
    later write that touches it), so the chest must not write into it
    again; and its scan would fail for ``verify`` forever."""
    for engine, why in sorted(packed.info.errors.items()):
        main = engine_filename(engine)
        target = _damaged_engine_name(path, engine)
        names = engine_files(engine)
        for name in (*names[1:], names[0]):  # companions first
            if name in files:
                plan.moves.append((name, target + name[len(main):]))
        saved = plan.salvaged.get(engine, [])
        lost = plan.unreadable.get(engine, [])
        if saved:
            say(f"copy   the {len(saved)} values of kept keys in {main} (all read and "
                f"loaded) to a fresh {main}")
        shown = ", ".join(repr(k) for k in lost[:5]) + \
            (", ..." if len(lost) > 5 else "")
        dropped = (f"; the {len(lost)} keys whose values cannot be read from it (or "
                   f"do not load) are dropped ({shown})" if lost else "")
        say(f"move   {main} -> {target}: it cannot be read ({why}); kept for you, the "
            f"chest no longer uses it{dropped}")


def _plan_slot_removals(plan: Plan, packed: PackedReader, index: IndexInfo,
                        journal: JournalInfo, kept: Dict[Hashable, Entry],
                        say: Callable[[str], None]) -> None:
    """Remove the slots no kept key has: orphans (written, never recorded),
    older values of keys written again, values that do not load. With an
    unreadable index, slots no journal record names are left: the index
    that named them may yet be mended from ``.keys.damaged``."""
    slots = packed.info.sizes
    live = {e.name for e in kept.values() if is_slot(e.name)}
    owner: Dict[Any, Hashable] = {e.name: e.key for e in index.entries
                                  if is_slot(e.name)}
    for key, name, _ in journal.records:
        if is_valid_place(name) and is_slot(name):
            owner[name] = key
    unknown = []
    for place in sorted(set(slots) - live):
        where = f"{describe_place(place)} ({slots[place]} bytes)"
        if place in owner:
            plan.slot_removals.append(place)
            say(f"remove {where}: a value of key {owner[place]!r} the chest no longer "
                f"has")
        elif place in index.retired_slots:
            plan.slot_removals.append(place)
            say(f"remove {where}: a value the last flush retired")
        elif index.error is not None:
            unknown.append(place)
        elif not index.exists:
            plan.unnamed += 1  # (.keys is missing: decided by repair's caller)
            plan.slot_removals.append(place)
            say(f"remove {where}: no key refers to it (the index that may have "
                f"named it is missing)")
        else:
            plan.slot_removals.append(place)
            say(f"remove {where}: no key refers to it (a value whose write was not "
                f"recorded)")
    if unknown:
        shown = ", ".join(place_text(p) for p in unknown[:5])
        say(f"leave  {len(unknown)} slots no key can be told for ({shown}"
            f"{', ...' if len(unknown) > 5 else ''}): the index that may name them "
            f"cannot be read (its copy is kept); the next repair removes them")
        plan.left += len(unknown)


def _damaged_engine_name(path: str, engine: str) -> str:
    """A free name to keep a damaged engine file under."""
    base, main = damaged_name(engine), engine_filename(engine)
    name, i = base, 0
    while any(os.path.lexists(os.path.join(path, name + f[len(main):]))
              for f in engine_files(engine)):
        i += 1
        name = f"{base}.{i}"
    return name


def write_index_file(path: str, entries: Iterable[Entry], durable: bool = True,
                     packed: Optional[str] = None, next_slot: int = 0,
                     retired_slots: Iterable[Slot] = (),
                     file_mode: int = FILE_MODE) -> None:
    """Atomically write ``.keys`` listing ``entries``, as Store.write_index does.

    The bytes are the store's format (:func:`chest.index.write_index_file`):
    magic, header (version, length, crc32), pickled entries, and for packed
    values the engine, the next slot number and the slots removed next. A
    read-only :class:`~chest.store.Store` would write its own next slot
    number, not the chest's.

    Parameters
    ----------
    path : str
        The chest's folder.
    entries : iterable of Entry
        The keys, in the chest's order.
    durable : bool
        ``fsync`` the file and the folder.
    packed : str, optional
        The engine new small values go to (``"sqlite"``, ``"lmdb"``).
    next_slot : int
        The number of the writer's next packed slot.
    retired_slots : iterable of (engine, slot)
        Slots that are removed right after the index is written (if that
        does not happen, the writer removes them when it opens the chest).
    file_mode : int
        The index file's permissions (the chest's ``file_mode``).
    """
    _write_index_file(path, [(e.key, e.name, e.size) for e in entries], durable,
                      file_mode=file_mode, packed=packed, next_slot=next_slot,
                      retired_slots=retired_slots)


def _backup_name(path: str) -> str:
    name, i = BACKUP_NAME, 0
    while os.path.lexists(os.path.join(path, name)):
        i += 1
        name = f"{BACKUP_NAME}.{i}"
    return name


def repair(path: str, dry_run: bool = False, force: bool = False,
           quiet: bool = False, out: Optional[IO[str]] = None) -> Plan:
    """Rebuild the ``.keys`` of the chest at ``path`` from what can be trusted.

    Keeps the entries of the index and of the journal whose files exist and
    load, recovers files whose names say their key, drops the rest (their
    files stay), then removes the journal and the leftovers of a crash the
    chest wrote (:class:`Leftovers`). A ``.keys`` that cannot be read is
    kept as ``.keys.damaged``; a packed database that cannot be read whole
    is replaced by a fresh one holding the values that can be read, and
    kept as ``.packed.sqlite3.damaged`` (or ``.packed.lmdb.damaged``).

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
    Plan
        What was done (or, with ``dry_run``, would be done).

    Raises
    ------
    FolderError
        If the path is not a chest, a writer holds its lock, or the repair
        is refused.
    """
    out = sys.stdout if out is None else out
    path = check_folder(path)

    def say(line: str) -> None:
        print(("would " if dry_run else "") + line, file=out)

    writer_lock = _take_writer_lock(path)
    try:
        for engine in ENGINE_NAMES:
            for name in engine_files(engine):
                _refuse_unreadable(path, full_path(path, name), os.O_RDWR)
        print(f"{'dry run, nothing is changed: ' if dry_run else ''}repairing {path}",
              file=out)
        mode = _chest_file_mode(path)
        journal = read_journal_file(path)
        held = _held_in_journal(path, journal)
        if held:
            # Values written through are in the journal only: into files of
            # their own first, so the index can name them.
            if journal.torn_bytes:
                say(f"cut    the last {journal.torn_bytes} bytes of {JOURNAL_NAME}: "
                    f"a record cut short or damaged, which the chest never reads")
            for key, place in held.items():
                say(f"write  {key!r}: its value kept in the journal "
                    f"({place[2]} bytes) to a file of its own")
            if not dry_run:
                _write_out_of_journal(path, held, journal, mode)
                journal = read_journal_file(path)
        index = read_index(path)
        files = walk_files(path)
        print(f"index: {index.describe()}", file=out)
        backup = _backup_name(path) if index.error is not None else None
        if backup is not None:
            say(f"copy   {INDEX_NAME} -> {backup}")
        # (Closed before anything changes.)
        with packed_readers(path) as (packed, damaged):
            for engine, why in sorted(packed.info.unavailable.items()):
                raise FolderError(
                    f"cannot repair {path}: its packed values in "
                    f"{engine_filename(engine)} cannot be read by this Python ({why}). "
                    f"Nothing was changed")
            plan = plan_repair(path, index, journal, files, say, quiet, packed,
                               damaged)
        if not plan.changed:
            print(f"nothing to repair: {len(plan.entries)} keys", file=out)
            return plan
        if plan.unnamed and not force:
            raise FolderError(
                f"refusing to repair {path}: its {INDEX_NAME} is missing, and "
                f"{plan.unnamed} packed values are in its database whose keys only "
                f"the index knew. Restore {INDEX_NAME} (from a backup or a copy) if "
                f"you can; pass --force to drop them. Nothing was changed")
        if plan.failed and not plan.loaded and not force:
            raise FolderError(
                f"refusing to repair {path}: none of its {plan.failed} value files "
                f"loads with pickle.load; was the chest written with another dump? "
                f"Nothing was changed (pass --force to drop them from the index)")
        if not dry_run:
            _apply(path, plan, index, journal, backup, mode)
        sources = [e.source for e in plan.entries]
        print(f"{'would write' if dry_run else 'wrote'} {INDEX_NAME}: "
              f"{len(plan.entries)} keys ({sources.count('index')} from the index, "
              f"{sources.count('journal')} from the journal, "
              f"{sources.count('file name')} recovered from file names), "
              f"{plan.dropped} dropped", file=out)
        if plan.left:
            print(f"{plan.left} files or slots are left in place with no key (verify "
                  f"lists them as orphans); delete them once you are sure", file=out)
        return plan
    finally:
        writer_lock.release()


def _refuse_unreadable(path: str, filename: str, flags: int) -> None:
    """FolderError if this user may not open ``filename`` (with ``flags``),
    if it exists: a value that cannot be read for want of a permission is
    not damaged, and must not be dropped."""
    try:
        os.close(os.open(filename, flags))
    except PermissionError as e:
        raise FolderError(
            f"cannot repair {path}: {filename} cannot be opened by this user "
            f"({e.strerror}); the index was not changed. Run repair as the "
            f"chest's owner, or give this user access to its files") from e
    except OSError:
        pass  # (missing, or damaged: the plan says so)


def _replayed(index: Iterable[Entry], journal: JournalInfo, files: Dict[str, int],
              packed: PackedReader, damaged: DamagedSlots) -> Dict[Hashable, Entry]:
    """The keys of ``index`` with ``journal`` replayed over them, as a chest
    reopened for writing has them (:func:`~chest.folder.effective_entries`),
    given the ``files`` and packed slots there are."""
    sizes = place_sizes(files, packed.info.sizes)
    # The slots of a damaged database that the journal names, read by
    # themselves: the replay keeps those that can be read, as the chest's
    # own does (the index's are read as their keys are checked, by the plan).
    for _, name, _ in journal.records:
        if is_valid_place(name) and is_slot(name) and name[0] in packed.info.errors:
            size = damaged.read(name).size
            if size is not None:
                sizes[name] = size
    return effective_entries(index, journal.records, sizes.get)


def _held_in_journal(path: str, journal: JournalInfo) -> Dict[Hashable, Any]:
    """key -> the journal place of every key whose value, as the journal is
    replayed, is kept in the journal (written through since the index): its
    last record's, or an earlier one's if the file or slot the later ones
    name is missing (a kill -9 between a large value's record and its file's
    rename: only the last records were written out, and the index then
    named the journal, which repair removes)."""
    if not any(is_journal_place(place) for _, place, _ in journal.records):
        return {}
    with packed_readers(path) as (packed, damaged):
        entries = _replayed([], journal, walk_files(path), packed, damaged)
    return {key: e.name for key, e in entries.items() if is_journal_place(e.name)}


def _chest_file_mode(path: str) -> int:
    """The permissions the chest at ``path`` gives its files (its
    ``file_mode``): those of its journal, else of its index, else the
    default. Files repair writes get them, so that those who may read the
    chest's other files (a group it is shared with) may read these."""
    for name in (JOURNAL_NAME, INDEX_NAME):
        try:
            return stat.S_IMODE(os.stat(os.path.join(path, name)).st_mode)
        except OSError:
            pass
    return FILE_MODE


def _write_out_of_journal(path: str, held: Dict[Hashable, Any],
                          journal_info: JournalInfo, mode: int = FILE_MODE) -> None:
    """Write each value kept in the journal to a file of its own (a hashed
    name no file has, with permissions ``mode``), and record that in the
    journal after it (first cutting off the torn bytes after its last whole
    record: a record appended after them would never be read)."""
    filename = os.path.join(path, JOURNAL_NAME)
    journal = Journal(filename, file_mode=mode)
    try:
        if journal_info.torn_bytes:
            os.truncate(filename, len(journal_info.data) - journal_info.torn_bytes)
        for key, place in held.items():
            data = read_journal_value(journal_info, place)
            base = hashed_name(key)
            name = next(n for n in (f"{base}-{i}" if i else base for i in range(10**6))
                        if not os.path.lexists(full_path(path, n)))
            tmp = full_path(path, f".tmp.{name}.{os.urandom(6).hex()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                if mode != 0o600:
                    os.fchmod(fd, mode)  # (exactly: not narrowed by the umask)
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, full_path(path, name))
            journal.append(key, name, len(data))
    except OSError as e:
        raise FolderError(f"repair of {path} failed writing the values kept in its "
                          f"journal to files: {e}") from e
    finally:
        journal.close()


def _apply(path: str, plan: Plan, index: IndexInfo, journal: JournalInfo,
           backup: Optional[str], mode: int = FILE_MODE) -> None:
    # The fresh databases first: if one cannot be made, nothing else is done.
    fresh: Dict[str, str] = {}
    try:
        for engine, slots in sorted(plan.salvaged.items()):
            if slots:
                fresh[engine] = _copy_salvaged(path, engine, slots)
        if backup is not None:
            shutil.copy2(os.path.join(path, INDEX_NAME), os.path.join(path, backup))
        for source, name in plan.restores:
            os.replace(full_path(path, source), full_path(path, name))
    except BaseException as e:
        for folder in fresh.values():
            shutil.rmtree(folder, ignore_errors=True)
        if isinstance(e, OSError):
            raise FolderError(f"repair of {path} failed: {e}") from e
        raise
    try:
        # A damaged database goes, its fresh copy takes its place before the
        # index is written: the copy holds every value of the old index and
        # journal that can be read, so the chest finds the same values with
        # either index. Companions first: a -wal beside another database
        # would be replayed into it.
        for source, name in plan.moves:
            os.replace(full_path(path, source), full_path(path, name))
        for engine, folder in fresh.items():
            # With whatever the engine keeps beside it once closed (LMDB's
            # -lock), after the database.
            for name in engine_files(engine):
                if os.path.lexists(os.path.join(folder, name)):
                    os.replace(os.path.join(folder, name), os.path.join(path, name))
            shutil.rmtree(folder, ignore_errors=True)
        if fresh:
            sync_dir(path)
        # The slots about to go are listed: if this dies before they are
        # removed, the writer removes them when it opens the chest.
        write_index_file(path, plan.entries, packed=plan.packed,
                         next_slot=plan.next_slot, retired_slots=plan.slot_removals,
                         file_mode=mode)
        # Only now: a crash before the index is written must find the journal.
        if journal.exists:
            os.remove(os.path.join(path, JOURNAL_NAME))
        rebuilds: Set[str] = set()
        for name in plan.removals:
            try:
                os.remove(full_path(path, name))
            except FileNotFoundError:
                pass
            folder = name.rpartition("/")[0]
            if is_rebuild_folder(folder):
                rebuilds.add(folder)
        for folder in rebuilds:  # what a repair that stopped was building
            try:
                os.rmdir(full_path(path, folder))
            except OSError:
                pass
        for engine in sorted({name for name, _ in plan.slot_removals}):
            db = open_engine(engine, path, durable=True)
            try:
                db.delete(slot for name, slot in plan.slot_removals if name == engine)
            finally:
                db.close()
    except OSError as e:
        raise FolderError(f"repair of {path} failed: {e}") from e


#: Values copied into a fresh database per commit, and bytes at most (the
#: values of one commit are held in memory). Commits are synced: 100,000
#: pickled 66-byte dicts took 6.5 s in commits of 100, 1.5 s of 1,000 and
#: 1.1 s of 10,000 with SQLite here (LMDB: 7.0, 0.56, 0.28 s).
_COPY_BATCH = 10_000
_COPY_BYTES = 16 << 20


def _copy_salvaged(path: str, engine: str, slots: List[int]) -> str:
    """A fresh database of ``engine`` holding ``slots`` (same numbers, same
    bytes) read from the damaged one in ``path``, synced, in a folder of its
    own in ``path`` (see :func:`is_rebuild_folder`). Returns that folder."""
    main = engine_filename(engine)
    folder = temp_name(path, REBUILD_BASE)
    sizes: Dict[int, int] = {}
    try:
        mode = stat.S_IMODE(os.stat(os.path.join(path, main)).st_mode)
        os.mkdir(folder, 0o700)
        with DamagedSlots(path, [engine]) as damaged:
            db = open_engine(engine, folder, durable=True, file_mode=mode)
            try:
                batch: List[Tuple[int, bytes]] = []
                nbytes = 0
                for slot in slots:
                    data = damaged.get((engine, slot))
                    batch.append((slot, data))
                    nbytes += len(data)
                    sizes[slot] = len(data)
                    if len(batch) >= _COPY_BATCH or nbytes >= _COPY_BYTES:
                        db.put_many(batch)
                        batch, nbytes = [], 0
                if batch:
                    db.put_many(batch)
            finally:
                db.close()
        # Read back as the chest will find it, closed: every slot, whole.
        check = open_packed(engine, folder)
        try:
            copied = dict(check.slots())
        finally:
            check.close()
        if copied != sizes:
            raise OSError(f"the fresh {main} holds {len(copied)} slots "
                          f"({sum(copied.values())} bytes), not the {len(sizes)} "
                          f"copied to it ({sum(sizes.values())} bytes)")
    except (OSError, ValueError) as e:
        shutil.rmtree(folder, ignore_errors=True)
        raise FolderError(f"repair of {path} failed copying the values that can be "
                          f"read from the damaged {main} to a fresh database: {e}. "
                          f"The index and the packed values were left as they "
                          f"were") from e
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder
