"""List and Set against their peers.

``appends``: 10,000 appends of a small value to a persistent list, each on
disk when the call returns (chest: ``List(write_through=True)``, its small
items packed in SQLite as a new List's are; pysos: ``pysos.List``, which
writes a line per change), then closed, reopened and checked (the close and
the reopening timed apart).

``set``: a ``Set`` of ``--elements`` small elements (packed in SQLite):
build, close, reopen, then 100,000 random membership tests (half present),
beside a Python ``set`` and a diskcache ``Index`` used as a set.

Each store runs in a fresh process, in rounds (best and worst shown).

Usage::

    python benchmarks/containers.py                    # ~2 minutes
    python benchmarks/containers.py --elements 100000 --rounds 1
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


def appends(store: str, path: str, n: int) -> Dict[str, float]:
    if store == "chest":
        from chest import List as ChestList

        make: Any = lambda: ChestList(path=path, write_through=True)  # noqa: E731
    else:
        import pysos

        make = lambda: pysos.List(path)  # noqa: E731
    items = make()
    start = time.perf_counter()
    for i in range(n):
        items.append({"i": i})
    elapsed = time.perf_counter() - start
    start = time.perf_counter()
    items.close()
    closed = time.perf_counter() - start
    start = time.perf_counter()
    again = make()
    reopened = time.perf_counter() - start
    if len(again) != n or again[n - 1] != {"i": n - 1}:
        raise AssertionError(f"{store} reopened with {len(again)} items")
    again.close()
    return {"seconds": elapsed, "close_s": closed, "reopen_s": reopened}


def members(store: str, path: str, n: int) -> Dict[str, float]:
    rng = random.Random(0)
    probes = [rng.randrange(2 * n) for _ in range(100_000)]
    start = time.perf_counter()
    if store == "chest":
        from chest import Set as ChestSet

        s: Any = ChestSet(range(n), path=path, packed="sqlite", available_memory="64MB")
        s.close()
    elif store == "diskcache":
        import diskcache

        s = diskcache.Index(path)
        for i in range(n):
            s[i] = None
    else:
        s = set(range(n))
    built = time.perf_counter() - start
    start = time.perf_counter()
    if store == "chest":
        s = ChestSet(path=path)
    elif store == "diskcache":
        s = diskcache.Index(path)
    reopened = time.perf_counter() - start
    start = time.perf_counter()
    found = sum(1 for x in probes if x in s)
    probed = time.perf_counter() - start
    if found != sum(1 for x in probes if x < n):
        raise AssertionError(f"{store}: {found} members found")
    if store == "chest":
        s.close()
    return {"build_s": built, "reopen_s": reopened, "probe_kops": len(probes) / probed / 1e3}


def run(kind: str, store: str, root: str, n: int) -> Dict[str, Any]:
    folder = tempfile.mkdtemp(prefix=f"{kind}-{store}-", dir=root)
    try:
        done = subprocess.run([sys.executable, __file__, "--child", kind, store,
                               os.path.join(folder, "store"), "--count", str(n)],
                              capture_output=True, text=True, timeout=1800)
        if done.returncode:
            return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=10_000)
    parser.add_argument("--elements", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--child", nargs=3, metavar=("KIND", "STORE", "PATH"))
    args = parser.parse_args(argv)
    if args.child:
        kind, store, path = args.child
        work = appends if kind == "appends" else members
        print(json.dumps(work(store, path, args.count)))
        return 0
    root = tempfile.mkdtemp(prefix="chest-containers-", dir=args.dir)
    try:
        runs: Dict[str, List[Dict[str, Any]]] = {"chest": [], "pysos": []}
        for _ in range(args.rounds):
            for store in runs:
                runs[store].append(run("appends", store, root, args.appends))
        print(f"== {args.appends:,} appends, each on disk on return, "
              f"{args.rounds} rounds: seconds, best / worst; then close and "
              f"reopen, seconds, best")
        best = {}
        for store, rs in runs.items():
            good = [r["seconds"] for r in rs if "error" not in r]
            if not good:
                print(f"{store:8} error: {rs[-1]['error']}")
                continue
            best[store] = min(good)
            print(f"{store:8} {min(good):.3f} / {max(good):.3f}   close "
                  f"{min(r['close_s'] for r in rs if 'error' not in r):.3f}   reopen "
                  f"{min(r['reopen_s'] for r in rs if 'error' not in r):.3f}")
        if len(best) == 2:
            print(f"chest is {best['pysos'] / best['chest']:.2f}x as fast as pysos")
        print(f"\n== a set of {args.elements:,} elements: build s, reopen s, "
              f"100,000 membership tests k/s (best of {args.rounds})")
        for store in ("chest", "set", "diskcache"):
            rs = [run("set", store, root, args.elements) for _ in range(args.rounds)]
            good = [r for r in rs if "error" not in r]
            if not good:
                print(f"{store:9} error: {rs[-1]['error']}")
                continue
            print(f"{store:9} build {min(r['build_s'] for r in good):7.2f}  reopen "
                  f"{min(r['reopen_s'] for r in good):6.2f}  probes "
                  f"{max(r['probe_kops'] for r in good):8.1f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
