"""Spill numpy arrays larger than the memory budget, then reopen the chest.

Run: ``python examples/spill_arrays.py [PATH]``

Stores 24 arrays of 8 MiB (192 MiB) in a chest with a 64 MiB budget, shows
what stayed in memory and what went to files, closes the chest, reopens it by
its path and checks every array.

The chest is left in ``PATH`` (default: ``demo.chest`` in the current folder,
which ``.gitignore`` ignores) for ``python -m chest info/ls/verify`` to look
at; the demo shows ``info`` itself. The next run replaces it. Remove it with
``rm -r demo.chest``.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys

import numpy as np

from chest import Chest, FolderError
from chest.budget import format_bytes
from chest.folder import check_folder

N, SIZE = 24, 8 * 2**20 // 8  # 24 arrays of 8 MiB
DEFAULT_PATH = "demo.chest"


def replace(path: str) -> None:
    """Remove the chest a previous run left at ``path``; refuse any other
    folder."""
    if not os.path.exists(path):
        return
    try:
        check_folder(path)
    except FolderError as e:
        sys.exit(f"{e}: not replacing it, give another path")
    Chest(path=path).drop()


def main(path: str = DEFAULT_PATH) -> None:
    replace(path)
    with Chest(path=path, available_memory="64MiB") as c:
        for i in range(N):
            c[f"x{i}"] = np.full(SIZE, i, dtype="f8")
        print(c)
        print(f"in memory: {sorted(c.inmem, key=lambda k: int(k[1:]))}")
        print(f"on disk:   {len(c.store.files)} files, "
              f"{format_bytes(sum(c.store.files.values()))}")
        assert c.memory_usage <= c.available_memory
    # Leaving the block flushed everything; reopen by path.
    again = Chest(path=path, available_memory="64MiB")
    assert sorted(again) == sorted(f"x{i}" for i in range(N))
    for i in range(N):
        assert again[f"x{i}"][123] == i
    print(f"reopened {path}: {len(again)} arrays, all checked")
    print(f"stats: {again.stats}")
    again.close()  # flushed and kept, for the command line

    quoted = shlex.quote(path)
    print(f"\nThe chest stays in {os.path.abspath(path)}. What the command line "
          f"says of it:\n\n$ python -m chest info {quoted}", flush=True)
    subprocess.run([sys.executable, "-m", "chest", "info", path], check=True)
    print(f"\nMore: python -m chest ls {quoted} --long\n"
          f"      python -m chest verify {quoted} --deep\n"
          f"Remove it with: rm -r {quoted} (the next run replaces it)")


if __name__ == "__main__":
    main(*sys.argv[1:2])
