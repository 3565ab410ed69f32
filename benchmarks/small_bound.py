"""How fast can a spilling dict read small values back?

``peers.py``'s ``small`` workload (100,000 small dicts under int keys
through a 1 MiB budget, then read back in random order) on these stores, in
one process, best of three rounds:

bare
    No cache: ``os.open`` / ``os.read`` / ``os.close`` and ``pickle.loads``
    per get, the least that reading a value from a file of its own costs.
bare:lmdb, bare:sqlite
    The same from one LMDB or SQLite database, set up as chest's
    ``packed=`` engines set theirs up (a read transaction per get).
least, least:lmdb, least:sqlite
    The least a spilling dict with chest's guarantees adds to a bare
    store: a lock taken before and after the read (the read itself without
    it), the value sized with ``chest.sizeof.nbytes`` and kept in memory,
    and the least recently used value evicted, after checking (pickle again
    and hash) that its file still holds it. No statistics, names, journal,
    eviction policy beyond LRU or error handling.
chest, chest:lmdb, chest:sqlite, diskcache
    ``Chest(path=d, available_memory="1MiB", packed=...)`` and
    ``diskcache.Cache(d)``.

One run on the 2-core AMD EPYC VM at 3628ce7 (best of 3, k reads/s, x diskcache):
bare:lmdb 243.1 (5.00x), least:lmdb 57.1 (1.18x), chest:lmdb 33.0 (0.68x),
bare:sqlite 74.9 (1.54x), least:sqlite 32.1 (0.66x), chest:sqlite 18.8
(0.39x), diskcache 48.6. A memory tier that keeps what it reads and checks
what it evicts costs ~13 us a read over LMDB; diskcache keeps nothing in
memory.

Usage: ``python benchmarks/small_bound.py [--dir DIR] [--count N]
[--rounds R] [--stores bare,least,chest,...,diskcache]``.
"""
from __future__ import annotations

import argparse
import os
import pickle
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Dict, Hashable, List

import xxhash

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import small_value  # noqa: E402

from chest.sizeof import nbytes  # noqa: E402

BUDGET = 1 << 20
STORES = ("bare", "least", "chest", "bare:lmdb", "least:lmdb", "chest:lmdb",
          "bare:sqlite", "least:sqlite", "chest:sqlite", "diskcache")
_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
_WRITE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


class BareReads:
    """A file per key, read on every get."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.sizes: Dict[Hashable, int] = {}

    def path(self, key: Hashable) -> str:
        return os.path.join(self.directory, str(key))

    def __setitem__(self, key: Hashable, value: Any) -> None:
        data = pickle.dumps(value, protocol=5)
        fd = os.open(self.path(key), _WRITE, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        self.sizes[key] = len(data)

    def read(self, key: Hashable) -> bytes:
        fd = os.open(self.path(key), _READ)
        try:
            return os.read(fd, self.sizes[key] + 1)
        finally:
            os.close(fd)

    def __getitem__(self, key: Hashable) -> Any:
        return pickle.loads(self.read(key))

    def close(self) -> None:
        pass


class BareLMDB(BareReads):
    """One LMDB database (``sync=False``, as chest's ``packed="lmdb"``)."""

    def __init__(self, directory: str) -> None:
        import lmdb

        super().__init__(directory)
        self.env = lmdb.open(os.path.join(directory, "db"), map_size=1 << 32,
                             sync=False, metasync=False, lock=True)

    def __setitem__(self, key: Hashable, value: Any) -> None:
        data = pickle.dumps(value, protocol=5)
        with self.env.begin(write=True) as txn:
            txn.put(str(key).encode(), data)
        self.sizes[key] = len(data)

    def read(self, key: Hashable) -> bytes:
        txn = self.env.begin(buffers=False)
        try:
            return txn.get(str(key).encode())
        finally:
            txn.abort()

    def close(self) -> None:
        self.env.close()


class BareSQLite(BareReads):
    """One SQLite database (WAL, ``synchronous=NORMAL``, as chest's)."""

    def __init__(self, directory: str) -> None:
        import sqlite3

        super().__init__(directory)
        self.db = sqlite3.connect(os.path.join(directory, "db"),
                                  isolation_level=None,
                                  check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE v (k INTEGER PRIMARY KEY, d BLOB)")

    def __setitem__(self, key: Hashable, value: Any) -> None:
        data = pickle.dumps(value, protocol=5)
        self.db.execute("INSERT OR REPLACE INTO v VALUES (?, ?)", (key, data))
        self.sizes[key] = len(data)

    def read(self, key: Hashable) -> bytes:
        return self.db.execute("SELECT d FROM v WHERE k = ?",
                               (key,)).fetchone()[0]

    def close(self) -> None:
        self.db.close()


class LeastCache:
    """A bare store behind an LRU memory tier with a byte budget."""

    def __init__(self, bare: BareReads) -> None:
        self.bare = bare
        self.sizes = bare.sizes
        self.read = bare.read
        self.lock = threading.RLock()
        self.inmem: "OrderedDict[Hashable, Any]" = OrderedDict()
        self.weights: Dict[Hashable, int] = {}
        self.tokens: Dict[Hashable, int] = {}
        self.memory_usage = 0

    def __setitem__(self, key: Hashable, value: Any) -> None:
        with self.lock:
            self.keep(key, value, None)

    def __getitem__(self, key: Hashable) -> Any:
        value = self.inmem.get(key, self)
        if value is not self:
            return value
        with self.lock:
            size = self.sizes[key]
        data = self.read(key)
        assert len(data) == size
        value = pickle.loads(data)
        with self.lock:
            self.keep(key, value, xxhash.xxh3_64_intdigest(data))
        return value

    def keep(self, key: Hashable, value: Any, token: Any) -> None:
        weight = nbytes(value)
        self.inmem[key] = value
        self.weights[key] = weight
        self.tokens[key] = token
        self.memory_usage += weight
        while self.memory_usage > BUDGET:
            old, old_value = self.inmem.popitem(last=False)
            self.memory_usage -= self.weights.pop(old)
            data = pickle.dumps(old_value, protocol=5)
            if xxhash.xxh3_64_intdigest(data) != self.tokens.pop(old):
                self.bare[old] = old_value

    def close(self) -> None:
        self.bare.close()


BARE = {"": BareReads, ":lmdb": BareLMDB, ":sqlite": BareSQLite}


def open_store(name: str, directory: str) -> Any:
    kind, _, engine = name.partition(":")
    engine = ":" + engine if engine else ""
    if kind == "bare":
        return BARE[engine](directory)
    if kind == "least":
        return LeastCache(BARE[engine](directory))
    if kind == "chest":
        from chest import Chest

        return Chest(path=directory, available_memory=BUDGET,
                     packed=engine[1:] or None)
    import diskcache

    return diskcache.Cache(directory)


def run(name: str, root: str, values: List[Any], order: List[int]) -> float:
    """Reads per second of ``name`` (values written first, not timed)."""
    directory = tempfile.mkdtemp(dir=root)
    store = open_store(name, directory)
    try:
        for i, value in enumerate(values):
            store[i] = value
        get: Callable[[int], Any] = store.__getitem__
        start = time.perf_counter()
        for i in order:
            get(i)
        seconds = time.perf_counter() - start
        for i in order[:100]:
            assert store[i] == values[i]
    finally:
        store.close()
        shutil.rmtree(directory)
    return len(order) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="work in this folder")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stores", default=",".join(STORES),
                        help="comma-separated, of: " + ", ".join(STORES))
    args = parser.parse_args()
    names = args.stores.split(",")
    unknown = sorted(set(names) - set(STORES))
    if unknown:
        parser.error(f"unknown stores: {', '.join(unknown)}")
    values = [small_value(i) for i in range(args.count)]
    order = list(range(args.count))
    random.Random(0).shuffle(order)
    best = dict.fromkeys(names, 0.0)
    root = tempfile.mkdtemp(prefix="chest-small-bound-", dir=args.dir)
    try:
        for _ in range(args.rounds):
            for name in names:
                best[name] = max(best[name], run(name, root, values, order))
    finally:
        shutil.rmtree(root)
    print(f"small reads under {root} (best of {args.rounds}):")
    for name in names:
        ratio = (f"  {best[name] / best['diskcache']:.2f}x diskcache"
                 if "diskcache" in best else "")
        print(f"  {name:10s} {best[name] / 1e3:6.1f} k/s{ratio}")


if __name__ == "__main__":
    main()
