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
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Hashable, List, Set

from .folder import (Entry, full_path, leftover_kind, retired_name, is_chest_file,
                     check_value_file, effective_entries, journal_changes,
                     read_index, read_journal_file, walk_files)
from .journal import JOURNAL_NAME
from .progress import Progress
from .names import safe_name

__all__ = ["Report", "find_problems"]


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
        The chest's folder (see :func:`~chest.folder.check_folder`).
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
        if safe_name(e.name) != e.name:
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
    damaged: List[str] = []
    loaded_any = False
    with Progress(len(checked) if deep else 0, quiet) as progress:
        for e in checked:
            size = files.get(e.name)
            if size is None:
                old = retired_name(e.name)
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
                loaded = check_value_file(full_path(path, e.name))
                progress.advance()
                loaded_any = loaded_any or loaded.ok
                if not loaded.ok:
                    damaged.append(f"damaged: key {e.key!r}: file {e.name} does "
                                   f"not load ({loaded.describe()})")
    if damaged and not loaded_any:
        # Not one pickle: a chest written with another dump (json, say).
        problems.append(f"values: none of the {len(damaged)} value files loads "
                        f"with pickle.load; was the chest written with another "
                        f"dump? --deep checks pickles only")
    else:
        problems.extend(damaged)
    problems.extend(journal_changes(index.entries, journal.records, files.get))
    if journal.torn_bytes:
        problems.append(f"journal: the last {journal.torn_bytes} bytes of "
                        f"{JOURNAL_NAME} are a torn or damaged record (ignored)")
    referred = {e.name for e in index.entries}
    referred.update(name for _, name, _ in journal.records if name is not None)
    for name in sorted(files):
        kind = leftover_kind(name)
        if name in named:
            continue
        if kind is not None:
            problems.append(f"leftover: {name} ({kind})")
        elif not is_chest_file(name) and name not in referred:
            problems.append(f"orphan: {name} is a file no key refers to")
    present = [e for e in checked if e.name in files]
    return Report(problems, len(entries), len(present),
                  sum(files[e.name] for e in present))
