"""A million small values: write, close, reopen, len(), random reads, memory.

Each store runs in a process of its own: it writes ``--count`` small dicts
under int keys through a small budget, closes, then a second process
reopens it and reports the seconds to reopen, to take ``len()``, the rate
of random reads, and the resident memory the reopened store holds per key
(RSS after reopening minus RSS before, over the keys).

Stores: ``chest`` (one file per value), ``chest:sqlite`` and
``chest:lmdb`` (``packed=``), and ``diskcache`` (everything in SQLite, no
memory tier).

Usage::

    python benchmarks/million.py                       # 1,000,000 values
    python benchmarks/million.py --count 100000 --stores chest:sqlite,diskcache
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import psutil

STORES = ("chest:sqlite", "chest:lmdb", "chest", "diskcache")
BUDGET = 16 * 2**20


def value(i: int) -> Dict[str, Any]:
    return {"a": i, "b": "x" * 20, "c": [i, i + 1]}


def open_store(store: str, path: str, create: bool) -> Any:
    name, _, engine = store.partition(":")
    if name == "chest":
        from chest import Chest

        kwargs: Dict[str, Any] = {"packed": engine} if engine and create else {}
        return Chest(path=path, available_memory=BUDGET, **kwargs)
    if name == "diskcache":
        import diskcache

        return diskcache.Cache(path, eviction_policy="none")
    raise ValueError(f"unknown store {store!r}")


def rss() -> int:
    return psutil.Process().memory_info().rss


def write(store: str, path: str, count: int) -> Dict[str, float]:
    s = open_store(store, path, create=True)
    setitem = s.__setitem__
    start = time.perf_counter()
    for i in range(count):
        setitem(i, value(i))
    written = time.perf_counter() - start
    start = time.perf_counter()
    s.close()
    closed = time.perf_counter() - start
    return {"write_kops": count / written / 1e3, "close_s": closed}


def reopen(store: str, path: str, count: int, reads: int) -> Dict[str, float]:
    # Imported before measuring: modules are not what a key holds.
    import chest  # noqa: F401
    import chest.packed  # noqa: F401
    if store == "diskcache":
        import diskcache  # noqa: F401
    before = rss()
    start = time.perf_counter()
    s = open_store(store, path, create=False)
    opened = time.perf_counter() - start
    held = rss() - before
    start = time.perf_counter()
    n = len(s)
    length = time.perf_counter() - start
    assert n == count, (n, count)
    keys = random.Random(0).sample(range(count), min(reads, count))
    getitem = s.__getitem__
    start = time.perf_counter()
    for k in keys:
        if getitem(k)["a"] != k:
            raise AssertionError(f"key {k} came back changed")
    read = time.perf_counter() - start
    s.close()
    return {"reopen_s": opened, "len_s": length, "read_kops": len(keys) / read / 1e3,
            "bytes_per_key": held / count}


def disk_used(path: str) -> int:
    return sum(os.lstat(os.path.join(d, f)).st_blocks * 512
               for d, _, names in os.walk(path) for f in names)


def child(store: str, phase: str, path: str, count: int, reads: int) -> None:
    if phase == "write":
        result = write(store, path, count)
    else:
        result = reopen(store, path, count, reads)
    print(json.dumps(result))


def run(store: str, root: str, count: int, reads: int) -> Dict[str, Any]:
    path = os.path.join(root, store.replace(":", "-"))
    result: Dict[str, Any] = {}
    try:
        for phase in ("write", "reopen"):
            done = subprocess.run(
                [sys.executable, __file__, "--child", store, phase, path,
                 "--count", str(count), "--reads", str(reads)],
                capture_output=True, text=True, timeout=3600)
            if done.returncode:
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                return {"error": f"{phase}: {tail}"}
            result.update(json.loads(done.stdout.strip().splitlines()[-1]))
            if phase == "write":
                result["disk_mib"] = disk_used(path) / 2**20
    finally:
        shutil.rmtree(path, ignore_errors=True)
    return result


COLUMNS = [("write k/s", "write_kops", "{:.1f}"), ("close s", "close_s", "{:.2f}"),
           ("disk MiB", "disk_mib", "{:.0f}"), ("reopen s", "reopen_s", "{:.2f}"),
           ("len() s", "len_s", "{:.4f}"), ("read k/s", "read_kops", "{:.1f}"),
           ("B/key held", "bytes_per_key", "{:.0f}")]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--reads", type=int, default=100_000)
    parser.add_argument("--stores", default=",".join(STORES))
    parser.add_argument("--dir", default=None)
    parser.add_argument("--child", nargs=3, metavar=("STORE", "PHASE", "PATH"))
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child, args.count, args.reads)
        return 0
    root = tempfile.mkdtemp(prefix="chest-million-", dir=args.dir)
    try:
        print(f"{args.count:,} small dicts under int keys, budget "
              f"{BUDGET / 2**20:g} MiB; {args.reads:,} random reads after reopening")
        rows = [["store"] + [c[0] for c in COLUMNS]]
        for store in args.stores.split(","):
            result = run(store, root, args.count, args.reads)
            if "error" in result:
                print(f"error in {store}: {result['error']}", flush=True)
                continue
            rows.append([store] + [fmt.format(result[field])
                                   for _, field, fmt in COLUMNS])
            print(f"{store}: {json.dumps(result)}", flush=True)
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("  ".join([r[0].ljust(widths[0])] +
                            [c.rjust(w) for c, w in zip(r[1:], widths[1:])]))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
