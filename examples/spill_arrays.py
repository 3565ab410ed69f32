"""Spill numpy arrays larger than the memory budget, then reopen the chest.

Run: ``python examples/spill_arrays.py [FOLDER]``

Stores 24 arrays of 8 MiB (192 MiB) in a chest with a 64 MiB budget, shows
what stayed in memory and what went to files, closes the chest, reopens it by
its path and checks every array.
"""
from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

from chest import Chest
from chest.budget import format_bytes

N, SIZE = 24, 8 * 2**20 // 8  # 24 arrays of 8 MiB


def main(folder: str) -> None:
    path = os.path.join(folder, "arrays.chest")
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
    again.drop()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tmp)
