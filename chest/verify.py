"""Find every problem of a chest's folder, changing nothing (``verify``).

Examples
--------
>>> import os, shutil, tempfile
>>> from chest import Chest
>>> folder = tempfile.mkdtemp()
>>> path = os.path.join(folder, "c")
>>> with Chest(path=path, available_memory=0) as c:
...     c["x"] = [1, 2, 3]
>>> find_problems(path, deep=True).problems
[]
>>> os.remove(os.path.join(path, "x"))
>>> find_problems(path).problems
["missing: key 'x': its file x is missing"]
>>> shutil.rmtree(folder)

Packed values are checked as files are, in their engine's database:

>>> with Chest(path=path, available_memory=0, packed="sqlite") as c:
...     c["y"] = "small"
>>> report = find_problems(path, deep=True)
>>> report.problems, report.packed_values
([], 1)
>>> shutil.rmtree(folder)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Hashable, List, Set

from .folder import (Entry, Loaded, PackedReader, describe_place, engine_filename,
                     full_path, retired_name, is_chest_file, check_value_bytes,
                     check_value_file, effective_entries, is_journal_place,
                     journal_changes, journal_sizes, place_sizes, read_index,
                     read_journal_file, read_journal_value, walk_files)
from .index import INDEX_NAME, is_slot, is_valid_place
from .journal import JOURNAL_NAME
from .progress import Progress
from .names import safe_name
from .repair import DamagedSlots, Leftovers, packed_readers

__all__ = ["Report", "find_problems"]


@dataclass
class Report:
    """What :func:`find_problems` found."""

    problems: List[str]
    keys: int
    value_files: int
    value_bytes: int  # of the value files
    packed_values: int = 0
    packed_bytes: int = 0


def find_problems(path: str, deep: bool = False, quiet: bool = False) -> Report:
    """Every problem of the chest at ``path``, one line each.

    Parameters
    ----------
    path : str
        The chest's folder (see :func:`~chest.folder.check_folder`).
    deep : bool
        Also load every value file and packed value with ``pickle.load``;
        otherwise only check that it exists and has the size the index says.
    quiet : bool
        Show no progress on the terminal.

    Returns
    -------
    Report
        The problems (an unreadable index, missing files or slots, sizes
        that differ from the index, values that do not load, journal
        records the index lacks, leftovers of a crash, files and packed
        slots no key refers to, a packed database that cannot be read, and
        which of its values cannot) and counts.
    """
    index = read_index(path)
    journal = read_journal_file(path)
    files = walk_files(path)
    with packed_readers(path) as (packed, damaged):
        return _find(path, index, journal, files, packed, damaged, deep, quiet)


def _find(path: str, index: Any, journal: Any, files: Dict[str, int],
          packed: PackedReader, salvage: DamagedSlots, deep: bool,
          quiet: bool) -> Report:
    slots = dict(packed.info.sizes)
    # A database that cannot be read whole is read one slot at a time (as
    # the chest reads it): the slots of the keys and of the journal's records.
    places = [e.name for e in index.entries] + [name for _, name, _ in journal.records]
    for place in places:
        if is_valid_place(place) and is_slot(place) and place[0] in packed.info.errors:
            size = salvage.read(place, load=deep).size
            if size is not None:
                slots[place] = size
    sizes = place_sizes(files, slots)
    sizes.update(journal_sizes(journal.records))
    problems: List[str] = []
    if index.error is not None:
        problems.append(f"index unreadable: {index.error}")
    entries = effective_entries(index.entries, journal.records, sizes.get)
    in_engine = {engine: sum(1 for e in entries.values()
                             if is_slot(e.name) and e.name[0] == engine)
                 for engine in packed.info.files}
    for engine, why in sorted(packed.info.errors.items()):
        unread = [(e.key, salvage.read(e.name, load=deep).why)
                  for e in entries.values()
                  if is_slot(e.name) and e.name[0] == engine and e.name not in slots]
        if len(unread) == in_engine[engine]:  # not one can be read: one problem
            problems.append(f"damaged: {engine_filename(engine)} cannot be read "
                            f"({why}): the packed values of {in_engine[engine]} keys "
                            f"in the index cannot be read")
            continue
        problems.append(f"damaged: {engine_filename(engine)} cannot be read whole "
                        f"({why}): the packed values of {len(unread)} of its "
                        f"{in_engine[engine]} keys cannot be read; repair copies the "
                        f"others to a fresh database")
        problems.extend(f"damaged: key {key!r}: {reason}" for key, reason in unread)
    for engine, why in sorted(packed.info.unavailable.items()):
        problems.append(f"unchecked: {engine_filename(engine)} cannot be read by this "
                        f"Python ({why}): the packed values of {in_engine[engine]} "
                        f"keys are not checked")
    checked: List[Entry] = []
    owners: Dict[Any, Hashable] = {}
    for e in entries.values():
        if is_slot(e.name) or is_journal_place(e.name):
            owner_name: Any = e.name  # (valid: the index and the replay make sure)
        elif safe_name(e.name) != e.name:
            problems.append(f"unsafe name: key {e.key!r} has the file name "
                            f"{e.name!r}, which is not a plain name inside the folder")
            continue
        else:
            owner_name = e.name.casefold()
        if owner_name in owners:
            shared = "file" if isinstance(e.name, str) else "slot"
            problems.append(f"shared {shared}: keys {owners[owner_name]!r} and "
                            f"{e.key!r} both have the {describe_place(e.name)}")
        owners.setdefault(owner_name, e.key)
        checked.append(e)
    named: Set[str] = set()  # retired copies already named by a problem
    lost: Dict[str, List[Hashable]] = {}  # engine file missing -> its keys
    damaged: List[str] = []
    loaded_any = False
    with Progress(len(checked) if deep else 0, quiet) as progress:
        for e in checked:
            size = sizes.get(e.name)
            if is_slot(e.name) and size is None:
                engine = e.name[0]
                if packed.info.unreadable(engine) is not None:
                    progress.advance()
                    continue  # said once above
                if engine not in packed.info.files:
                    lost.setdefault(engine, []).append(e.key)
                    progress.advance()
                    continue
            if size is None:
                old = retired_name(e.name) if isinstance(e.name, str) else None
                hint = ""
                if old is not None and old in files:
                    named.add(old)
                    hint = (f"; its retired copy {old} is left (repair, or opening "
                            f"the chest for writing, puts it back)")
                its = f"its file {e.name}" if isinstance(e.name, str) else \
                    f"its {describe_place(e.name)}"
                problems.append(f"missing: key {e.key!r}: {its} is missing{hint}")
                progress.advance()
                continue
            if e.source == "index" and size != e.size:
                problems.append(f"size: key {e.key!r}: {describe_place(e.name)} has "
                                f"{size} bytes, the index says {e.size}")
            if deep:
                if is_journal_place(e.name):
                    loaded = check_value_bytes(read_journal_value(journal, e.name))
                elif is_slot(e.name) and e.name[0] in packed.info.errors:
                    read = salvage.read(e.name)
                    loaded = read.loaded or Loaded(False, False, read.why)
                elif is_slot(e.name):
                    loaded = packed.check(e.name)
                else:
                    loaded = check_value_file(full_path(path, e.name))
                progress.advance()
                loaded_any = loaded_any or loaded.ok
                if not loaded.ok:
                    damaged.append(f"damaged: key {e.key!r}: {describe_place(e.name)} "
                                   f"does not load ({loaded.describe()})")
    for engine, keys in sorted(lost.items(), key=lambda item: item[0]):
        shown = ", ".join(repr(k) for k in keys[:3]) + \
            (", ..." if len(keys) > 3 else "")
        problems.append(f"missing: {engine_filename(engine)} is missing: the packed "
                        f"values of {len(keys)} keys ({shown}) are lost")
    if damaged and not loaded_any:
        # Not one pickle: a chest written with another dump (json, say).
        what = "values" if any(is_slot(e.name) for e in checked) else "value files"
        problems.append(f"values: none of the {len(damaged)} {what} loads "
                        f"with pickle.load; was the chest written with another "
                        f"dump? --deep checks pickles only")
    else:
        problems.extend(damaged)
    problems.extend(journal_changes(index.entries, journal.records, sizes.get))
    if journal.torn_bytes:
        problems.append(f"journal: the last {journal.torn_bytes} bytes of "
                        f"{JOURNAL_NAME} are a torn or damaged record (ignored)")
    referred: Set[Any] = {e.name for e in index.entries}
    referred.update(name for _, name, _ in journal.records
                    if name is not None and (isinstance(name, str) or
                                             is_valid_place(name)))
    # Only what the chest wrote is a leftover (what opening it for writing,
    # or repair, removes): a user's .tmp.notes is a file no key refers to.
    leftovers = Leftovers(path, (name for name in referred if isinstance(name, str)))
    for name in sorted(files):
        kind = leftovers.kind(name)
        if name in named:
            continue
        if kind is not None:
            problems.append(f"leftover: {name} ({kind})")
        elif not is_chest_file(name) and name not in referred:
            problems.append(f"orphan: {name} is a file no key refers to")
    live = {e.name for e in entries.values() if is_slot(e.name)}
    last_key = {e.name: e.key for e in index.entries if is_slot(e.name)}
    for key, name, _ in journal.records:
        if is_valid_place(name) and is_slot(name):
            last_key[name] = key
    for place in sorted(set(slots) - live):
        where = f"{describe_place(place)} ({slots[place]} bytes)"
        if place in referred:
            problems.append(f"leftover: {where} (an older value of key "
                            f"{last_key.get(place)!r}, kept until a flush that did not "
                            f"happen; repair removes it)")
        elif place in index.retired_slots:
            problems.append(f"leftover: {where} (a value the last flush retired, "
                            f"which its writer did not get to remove; repair, or "
                            f"opening the chest for writing, removes it)")
        else:
            why = ("the unreadable index may name it; repair leaves it" if index.error
                   else f"{INDEX_NAME} is missing, and may have named it: restore "
                   f"it if you can; repair removes it only with --force"
                   if not index.exists else
                   "written but never recorded, or named by a lost index; "
                   "repair removes it")
            problems.append(f"orphan: {where} is a slot no key refers to ({why})")
    present_files = [e for e in checked if isinstance(e.name, str) and e.name in files]
    present_slots = [e for e in checked if is_slot(e.name) and e.name in slots]
    return Report(problems, len(entries), len(present_files),
                  sum(files[e.name] for e in present_files),
                  len(present_slots), sum(slots[e.name] for e in present_slots))
