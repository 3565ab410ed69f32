"""Every change persisted: persistedstate's counter, against its peers.

10,000 times ``store["counter"] += 1``, each increment persisted before the
next (as each store persists it: chest with ``write_through=True`` appends
to its journal; ``chest.State`` a line to its YAML file; persistedstate appends to its file; pysos writes a line;
diskcache and sqlitedict (autocommit) commit to SQLite; shelve writes to
its dbm file), then the store is closed and reopened and must say 10,000.
Each store runs in a fresh process, in rounds (``--rounds``), interleaved;
the table shows the best and the worst round, and the ratio of each store's
best to persistedstate's.

A second table: 10,000 sets of small values (a dict of 3 items) under 100
keys, with and without ``write_through``: what writing through costs a set.

Usage::

    python benchmarks/counter.py               # 5 rounds, ~1 minute
    python benchmarks/counter.py --rounds 2 --count 1000
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional

STORES = ("chest", "chest:durable", "chest.State", "persistedstate", "pysos",
          "diskcache", "sqlitedict", "shelve")


def open_store(store: str, path: str) -> Any:
    """A store that persists each change, with get/set by key, and close()."""
    if store == "chest.State":
        from chest import State

        return State(path + ".yaml", counter=0)
    if store.startswith("chest"):
        from chest import Chest

        return Chest(path=path, write_through=True, durable=store == "chest:durable")
    if store == "persistedstate":
        from persistedstate import PersistedState

        return _Attributes(PersistedState(path + ".yaml", counter=0))
    if store == "pysos":
        import pysos

        return pysos.Dict(path)
    if store == "diskcache":
        import diskcache

        return diskcache.Cache(path)
    if store == "sqlitedict":
        from sqlitedict import SqliteDict

        return SqliteDict(path, autocommit=True)
    if store == "shelve":
        import shelve

        return shelve.open(path)
    raise ValueError(f"unknown store {store!r}")


class _Attributes:
    """persistedstate by key (it stores attributes)."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def __getitem__(self, key: str) -> Any:
        return getattr(self.state, key)

    def __setitem__(self, key: str, value: Any) -> None:
        setattr(self.state, key, value)

    def close(self) -> None:
        self.state.close()


def count(store: str, path: str, n: int) -> Dict[str, float]:
    s = open_store(store, path)
    s["counter"] = 0
    start = time.perf_counter()
    for _ in range(n):
        s["counter"] += 1
    elapsed = time.perf_counter() - start
    s.close()
    again = open_store(store, path)
    found = again["counter"]
    again.close()
    if found != n:
        raise AssertionError(f"{store} reopened with counter {found}, not {n}")
    return {"seconds": elapsed}


def sets(store: str, path: str, n: int) -> Dict[str, float]:
    from chest import Chest

    c = Chest(path=path, write_through=store == "chest:write_through")
    values = [{"a": i, "b": "x" * 20, "c": [i, i + 1]} for i in range(n)]
    start = time.perf_counter()
    for i, value in enumerate(values):
        c[i % 100] = value
    elapsed = time.perf_counter() - start
    c.close()
    return {"ns": elapsed / n * 1e9}


def run(kind: str, store: str, root: str, n: int) -> Dict[str, Any]:
    path = tempfile.mkdtemp(prefix=store.replace(":", "-") + "-", dir=root)
    target = os.path.join(path, "store")
    try:
        done = subprocess.run([sys.executable, __file__, "--child", kind, store, target,
                               "--count", str(n)], capture_output=True, text=True,
                              timeout=600)
        if done.returncode:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return {"error": tail}
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(path, ignore_errors=True)


def table(title: str, rows: List[List[str]]) -> None:
    print(f"== {title}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join([r[0].ljust(widths[0])] +
                        [c.rjust(w) for c, w in zip(r[1:], widths[1:])]))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stores", default=",".join(STORES))
    parser.add_argument("--dir", default=None)
    parser.add_argument("--child", nargs=3, metavar=("KIND", "STORE", "PATH"))
    args = parser.parse_args(argv)
    if args.child:
        kind, store, path = args.child
        work: Callable[[str, str, int], Dict[str, float]] = count if kind == "count" \
            else sets
        print(json.dumps(work(store, path, args.count)))
        return 0
    root = tempfile.mkdtemp(prefix="chest-counter-", dir=args.dir)
    try:
        stores = args.stores.split(",")
        runs: Dict[str, List[Dict[str, Any]]] = {s: [] for s in stores}
        for _ in range(args.rounds):
            for store in stores:
                runs[store].append(run("count", store, root, args.count))
        best = {s: min((r["seconds"] for r in rs if "error" not in r), default=None)
                for s, rs in runs.items()}
        base = best.get("persistedstate")
        rows = [["store", "best s", "worst s", "vs persistedstate"]]
        for store, rs in runs.items():
            good = [r["seconds"] for r in rs if "error" not in r]
            if not good:
                rows.append([store, "error: " + rs[-1]["error"][:60], "", ""])
                continue
            ratio = f"{base / min(good):.2f}x" if base else "-"
            rows.append([store, f"{min(good):.3f}", f"{max(good):.3f}", ratio])
        table(f"{args.count:,} increments, each persisted, {args.rounds} rounds", rows)

        set_runs: Dict[str, List[float]] = {"chest": [], "chest:write_through": []}
        for _ in range(args.rounds):
            for store in set_runs:
                result = run("sets", store, root, args.count)
                if "error" not in result:
                    set_runs[store].append(result["ns"])
        plain, through = (min(v) if v else None for v in set_runs.values())
        rows = [["chest", "best ns a set", "worst ns a set"]]
        for store, values in set_runs.items():
            rows.append([store, f"{min(values):,.0f}", f"{max(values):,.0f}"])
        print()
        table(f"{args.count:,} sets of a small dict under 100 keys", rows)
        if plain and through:
            print(f"write_through costs {through / plain:.2f}x a set without it")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
