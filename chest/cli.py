"""``python -m chest``: look into, check and repair the folder of a chest.

A chest with a path keeps one file per key in its folder, or, with
``packed=``, small values in one database there (``.packed.sqlite3`` or
``.packed.lmdb``), and lists where each key's value is in the ``.keys``
index (keys written since the last flush are listed in the ``.journal``).
``info``, ``ls`` and ``verify`` only read the folder: they take no lock and
change nothing, so they are safe while a writer has the chest open.
``repair`` takes the writer's lock and rewrites ``.keys`` from what can be
trusted. This module parses and prints; the work is done in
:mod:`chest.folder` (reading the folder), :mod:`chest.verify` and
:mod:`chest.repair`.

Commands::

    python -m chest info PATH [--largest N] [--json]
    python -m chest ls PATH [--long] [--json]
    python -m chest verify PATH [--deep] [--quiet]
    python -m chest repair PATH [--dry-run] [--force] [--quiet]

Exit codes: 0 all is well; 1 problems were found (or the index cannot be
read; for ``repair``: keys were, or would be, dropped, or files left with
no key); 2 the path is not a chest folder or cannot be read, a writer holds
the lock (``repair``), its values are not pickles and ``--force`` is not
given (``repair``), or the command line is wrong.

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
import json
import os
import sys
import textwrap
from typing import IO, Any, List, Optional, Sequence

from . import __version__
from .budget import format_bytes
from .errors import FolderError
from .folder import (Entry, IndexInfo, JournalInfo, PackedInfo, engine_filename,
                     is_journal_place, journal_sizes, leftover_kind, place_sizes,
                     place_text, read_packed, stat_size,
                     check_folder, effective_entries, journal_changes, lock_state,
                     read_index, read_journal_file, walk_files)
from .index import is_slot
from .repair import repair
from .verify import find_problems

__all__ = ["main", "build_parser", "info", "ls", "verify", "OK", "PROBLEMS",
           "UNUSABLE"]

#: Exit codes.
OK, PROBLEMS, UNUSABLE = 0, 1, 2


def _key_order(index: IndexInfo, journal: JournalInfo, path: str) -> List[Entry]:
    packed = None
    if any(name is not None and is_slot(name) for _, name, _ in journal.records):
        # Only then: the sizes of the slots the journal names.
        packed = read_packed(path)
        for engine, why in sorted({**packed.unavailable, **packed.errors}.items()):
            print(f"warning: {engine_filename(engine)} cannot be read ({why}): keys "
                  f"the journal puts there are not listed", file=sys.stderr)
    return list(effective_entries(index.entries, journal.records, stat_size(
        path, None if packed is None else packed.sizes)).values())


def _entry_json(e: Entry) -> dict:
    """An entry for ``--json``: ``{"key": repr, "file": name, "size": bytes}``;
    for a packed value ``file`` is the engine's database (the file holding
    the value), with its ``slot`` and ``place`` (``"sqlite:12"``)."""
    if not is_slot(e.name):
        return {"key": repr(e.key), "file": e.name, "size": e.size}
    return {"key": repr(e.key), "file": engine_filename(e.name[0]), "size": e.size,
            "slot": e.name[1], "place": place_text(e.name)}


def _packed_summary(index: IndexInfo, packed: PackedInfo,
                    entries: List[Entry]) -> List[str]:
    """What ``info`` says of the packed values, one line each."""
    lines = []
    engines = sorted(set(packed.files) | {e.name[0] for e in entries if is_slot(e.name)}
                     | ({index.packed} if index.packed else set()))
    for engine in engines:
        filename = engine_filename(engine)
        mine = [e for e in entries if is_slot(e.name) and e.name[0] == engine]
        why = packed.unreadable(engine)
        if engine not in packed.files:
            state = (f"{filename} is missing: the values of {len(mine)} keys are lost"
                     if mine else f"{filename} not made yet")
        elif why is not None:
            state = (f"{filename} cannot be read ({why}): the values of {len(mine)} "
                     f"keys cannot be read; see: python -m chest verify")
        elif not index.readable:
            state = (f"{len(packed.slots_of(engine))} slots in {filename} "
                     f"({format_bytes(packed.files[engine])} on disk)")
        else:
            size = sum(e.size for e in mine)
            state = (f"{len(mine)} values, {format_bytes(size)}, in {filename} "
                     f"({format_bytes(packed.files[engine])} on disk)")
        if engine == index.packed:
            state += "; new small values go there"
        lines.append(state)
    return lines


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
        0, or 1 if the index or a packed database cannot be read.
    """
    out = sys.stdout if out is None else out
    path = check_folder(path)
    index = read_index(path)
    journal = read_journal_file(path)
    files = walk_files(path)
    packed = read_packed(path)
    sizes = place_sizes(files, packed.sizes)
    sizes.update(journal_sizes(journal.records))
    entries = (effective_entries(index.entries, journal.records, sizes.get)
               if index.readable else {})
    indexed = {e.key for e in index.entries}
    from_journal = sum(key not in indexed for key in entries)
    changes = journal_changes(index.entries, journal.records, sizes.get) \
        if index.readable else []
    held, holder = lock_state(path)
    leftover_files = [n for n in sorted(files) if leftover_kind(n) is not None]
    # Slots no key of the reopened chest has: values retired or never recorded,
    # which the writer removes when it opens the chest.
    live = {e.name for e in entries.values() if is_slot(e.name)}
    stray = sorted(set(packed.sizes) - live) if index.readable else []
    total = sum(e.size for e in entries.values())
    in_slots = [e for e in entries.values() if is_slot(e.name)]
    packed_bytes = sum(e.size for e in in_slots)
    top = sorted(entries.values(), key=lambda e: -e.size)[:largest]
    packed_lines = _packed_summary(index, packed, list(entries.values()))
    status = OK if index.readable and not any(
        packed.unreadable(engine) for engine in packed.files) else PROBLEMS
    if as_json:
        json.dump({
            "path": path,
            "index": {"exists": index.exists, "format_version": index.version,
                      "legacy": index.legacy, "bytes": index.nbytes,
                      "error": index.error},
            "keys": len(entries) if index.readable else None,
            "keys_from_journal": from_journal,
            "value_bytes": total,
            "packed": {
                "engine": index.packed, "values": len(in_slots), "bytes": packed_bytes,
                "files": {engine_filename(engine): {
                    "bytes": packed.files[engine],
                    "slots": len(packed.slots_of(engine)),
                    "error": packed.unreadable(engine)} for engine in packed.files},
            },
            "largest": [_entry_json(e) for e in top],
            "writer_lock": {"held": held, "holder": None if held is False else holder},
            "journal": {"exists": journal.exists, "records": len(journal.records),
                        "unindexed": len(changes), "torn_bytes": journal.torn_bytes},
            "leftovers": leftover_files + [place_text(p) for p in stray],
        }, out, indent=2)
        out.write("\n")
        return status

    def row(label: str, text: str) -> None:
        print(f"{label + ':':<15}{text}", file=out)

    row("chest", path)
    row("index", index.describe())
    if index.readable:
        extra = f" ({from_journal} not in the index yet)" if from_journal else ""
        row("keys", f"{len(entries)}{extra}")
        in_journal = sum(is_journal_place(e.name) for e in entries.values())
        where = f"{len(entries) - len(in_slots) - in_journal} value files"
        if in_slots:
            where += f" and {len(in_slots)} packed values"
        if in_journal:
            where += f" and {in_journal} in the journal (written through)"
        row("bytes on disk", f"{format_bytes(total)} ({total} bytes in {where})")
    else:
        row("keys", f"unknown (run: python -m chest repair {path})")
    for line in packed_lines:
        row("packed", line)
    row("writer lock", holder if not held else f"held by {holder}")
    if not journal.exists:
        row("journal", "none")
    else:
        state = ("the chest is open: normal while it runs" if held else
                 "the chest was not closed cleanly; opening it for writing, or "
                 "repair, writes them into the index")
        row("journal", f"{len(journal.records)} records, {len(changes)} changes not "
                       f"in the index" + (f" ({state})" if changes else ""))
    shown = list(leftover_files)
    for engine in sorted({name for name, _ in stray}):
        mine = [place_text(p) for p in stray if p[0] == engine]
        shown.append(f"{len(mine)} slots of {engine_filename(engine)} no key has "
                     f"({', '.join(mine[:5])}{', ...' if len(mine) > 5 else ''})")
    row("leftovers", ", ".join(shown) if shown else "none")
    if top:
        print(f"largest values ({len(top)} of {len(entries)}):", file=out)
        _print_entries(top, out)
    return status


def _print_entries(entries: Sequence[Entry], out: IO[str]) -> None:
    places = [place_text(e.name) for e in entries]
    width = max(len(p) for p in places)
    for e, place in zip(entries, places):
        print(f"{e.size:>10}  {place:<{width}}  {e.key!r}", file=out)


def ls(path: str, long: bool = False, as_json: bool = False,
       out: Optional[IO[str]] = None) -> int:
    """Print the keys of the chest at ``path``, in the chest's order.

    Parameters
    ----------
    path : str
        The chest's folder.
    long : bool
        Also print each value's size and place: its file name, or
        ``engine:slot`` (``sqlite:12``) for a packed value.
    as_json : bool
        Print a JSON list of ``{"key": repr, "file": name, "size": bytes}``;
        for a packed value ``file`` is the engine's database
        (``.packed.sqlite3``), with ``"slot": 12, "place": "sqlite:12"``.
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
        json.dump([_entry_json(e) for e in entries], out, indent=2)
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
    if report.packed_values:
        counts += (f", {report.packed_values} packed values "
                   f"({format_bytes(report.packed_bytes)})")
    if report.problems:
        print(f"{len(report.problems)} problems in {path} ({counts}); "
              f"see: python -m chest repair --dry-run {path}", file=out)
        return PROBLEMS
    print(f"no problems: {counts}", file=out)
    return OK


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
  1  problems were found, or the index cannot be read; repair: keys were
     (or would be) dropped, or files left with no key
  2  not a chest folder, cannot be read, locked by a writer (repair),
     not pickles and no --force (repair), or a wrong command line
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
             "Show the index format, the number of keys, the bytes of the values "
             "(in files, and packed in a database), the largest values, whether a "
             "writer holds the lock, and "
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
                   help="also show each value's size in bytes and place: its file "
                        "name, or engine:slot (sqlite:12) for a packed value")
    p.add_argument("--json", action="store_true",
                   help='print a JSON list of {"key": repr, "file": name, '
                        '"size": bytes}; a packed value\'s "file" is its database, '
                        'with "slot": 12, "place": "sqlite:12"')

    p = _sub(sub, "verify", "report every problem; exit 1 if there is any",
             "Report every problem, one per line, then a summary: an unreadable "
             "index, missing value files or packed slots, sizes that differ from the "
             "index, values that do not load (--deep), a packed database that "
             "cannot be read, journal records the index lacks, leftovers of a crash "
             "(.tmp.*, .old.*, retired slots) and files or slots no key refers to "
             "(orphans). Changes nothing and takes no lock.")
    p.add_argument("--deep", action="store_true",
                   help="also load every value with pickle.load (slow; runs the "
                        "pickles: only for chests you trust)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="show no progress on the terminal")

    p = _sub(sub, "repair", "rebuild .keys from what can be trusted",
             "Rebuild .keys while holding the writer's lock: keep the entries of the "
             "index and of the journal whose files or packed slots exist and load "
             "(pickle.load: only for chests you trust), recover files whose names "
             "say their key (identifier-like names, _a/b tuple folders), drop the "
             "rest (their files stay in place), then remove the journal, the "
             ".tmp.*/.old.* leftovers and the packed slots no key refers to. A "
             "damaged .keys is kept as .keys.damaged. Prints each decision.")
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
        plan = repair(args.path, dry_run=args.dry_run, force=args.force,
                      quiet=args.quiet)
        return PROBLEMS if plan.dropped or plan.left else OK
    except FolderError as e:
        sys.stdout.flush()
        print(f"error: {e}", file=sys.stderr)
        return UNUSABLE
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``python -m chest ls PATH | head``).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return PROBLEMS
