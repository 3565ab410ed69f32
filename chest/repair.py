"""Rebuild a chest's ``.keys`` from what can be trusted (``repair``).

``repair`` takes the writer's lock, keeps the entries of the index and the
journal whose files exist and load, recovers files whose names say their
key, and removes the leftovers of a crash. :func:`plan_repair` decides,
:func:`repair` prints the decisions and carries them out.

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
import pickle
import shutil
import sys
from dataclasses import dataclass, field
from typing import (IO, Callable, Dict, Hashable, Iterable, List, Optional, Sequence,
                    Set, Tuple)

from . import lock as _lock
from .errors import ChestLockedError, FolderError
from .folder import (BACKUP_NAME, Entry, IndexInfo, JournalInfo, Loaded, full_path,
                     retired_name, is_chest_file, check_folder, check_value_file,
                     effective_entries, key_from_name, read_index,
                     read_journal_file, walk_files)
from .journal import JOURNAL_NAME
from .progress import Progress
from .files import OLD_PREFIX, TMP_PREFIX
from .index import INDEX_NAME
from .index import write_index_file as _write_index_file
from .names import safe_name
from .store import Store

__all__ = ["Plan", "plan_repair", "repair", "write_index_file"]


def _take_writer_lock(path: str) -> _lock.WriterLock:
    info = os.stat(path)
    with _lock._held_lock:
        if (info.st_dev, info.st_ino) in _lock._held:
            raise FolderError(f"cannot repair {path}: this process has the chest open "
                              f"for writing; close it first")
    try:
        return _lock.WriterLock(path, timeout=0)
    except ChestLockedError as e:
        raise FolderError(f"cannot repair {path}: it is open for writing by "
                          f"{e.holder}; close the chest there first (repair needs "
                          f"the writer's lock)") from e


@dataclass
class Plan:
    """What :func:`plan_repair` decided."""

    entries: List[Entry] = field(default_factory=list)
    restores: List[Tuple[str, str]] = field(default_factory=list)  # from, to
    removals: List[str] = field(default_factory=list)
    dropped: int = 0  # keys lost: their files are missing, unsafe or do not load
    deleted: int = 0  # keys the journal says were deleted
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
        What :func:`~chest.folder.read_index`,
        :func:`~chest.folder.read_journal_file` and
        :func:`~chest.folder.walk_files` found.
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
        if is_chest_file(name):
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
        plan.deleted += 1

    def load(name: str) -> Loaded:
        loaded = check_value_file(full_path(path, name))
        progress.advance()
        if loaded.ok or loaded.whole:
            plan.loaded += 1
        else:
            plan.failed += 1
        return loaded

    with Progress(len(entries) + len(candidates), quiet) as progress:
        for e in entries.values():
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
           quiet: bool = False, out: Optional[IO[str]] = None) -> Plan:
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
            return plan
        if plan.failed and not plan.loaded and not force:
            raise FolderError(
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
        return plan
    finally:
        writer_lock.release()


def _apply(path: str, plan: Plan, index: IndexInfo, journal: JournalInfo,
           backup: Optional[str]) -> None:
    try:
        if backup is not None:
            shutil.copy2(os.path.join(path, INDEX_NAME), os.path.join(path, backup))
        for source, name in plan.restores:
            os.replace(full_path(path, source), full_path(path, name))
        if index.error is None and not index.legacy:
            _write_with_store(path, plan.entries)
        else:
            write_index_file(path, plan.entries)
        # Only now: a crash before the index is written must find the journal.
        if journal.exists:
            os.remove(os.path.join(path, JOURNAL_NAME))
        for name in plan.removals:
            try:
                os.remove(full_path(path, name))
            except FileNotFoundError:
                pass
    except OSError as e:
        raise FolderError(f"repair of {path} failed: {e}") from e
