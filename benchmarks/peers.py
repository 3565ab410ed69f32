"""Benchmark chest against the stores it is an alternative to.

Each (backend, workload) pair runs in a process of its own, so the peak
resident memory reported is that backend's alone; the parent collects each
child's JSON and prints one table per workload.

Usage
-----
Run from the repository, with the ``bench`` extra installed::

    python benchmarks/peers.py                      # everything, ~10 min on 2 cores
    python benchmarks/peers.py --quick              # 32x smaller, CI smoke run
    python benchmarks/peers.py --only arrays --backends zict,floor
    python benchmarks/peers.py --dir /mnt/fast      # work under another disk
    python benchmarks/peers.py --record-trace       # remake the policy trace
    python benchmarks/peers.py --child zict hot     # one pair, in this process

Backends
--------
chest
    ``Chest(path=d, available_memory=budget)``; in ``policy`` once per
    eviction policy, shown as ``chest:largest`` and ``chest:lru``; in
    ``small`` and ``hot`` also with its small values packed,
    ``chest:sqlite`` (``packed="sqlite"``) and ``chest:lmdb``.
zict
    ``zict.Buffer`` of a dict over ``zict.Func(pickle 5, zict.File(d))``,
    weighed by ``dask.sizeof``; LRU.
spillbuffer
    ``distributed.spill.SpillBuffer(d, target=budget)``, dask workers' store;
    LRU.
diskcache
    ``diskcache.Cache(d, eviction_policy="none")``: every set writes, every
    get reads; it has no memory budget. Its default policy culls entries past
    1 GB, which a spilling dict must never do, hence ``"none"``.
floor
    The raw floor: each value in a file of its own, ``ndarray.tofile`` /
    ``np.fromfile`` for arrays and pickle protocol 5 for the rest (with bare
    system calls), written on every set and read on every get.
dict
    A plain dict, no disk: the in-memory reference.
pyfloor
    ``hot`` only: the least a mapping written in Python costs, a dict behind
    a Python ``__getitem__``/``__setitem__`` that also ticks an LRU counter
    (no disk, no budget, no lock). What chest adds on top of it in ``hot``
    is the price of its bookkeeping: sizing, the lock, versions, the policy,
    stats.

Workloads
---------
arrays
    48 float64 arrays of 32 MiB through a 256 MiB budget: make and write
    all, then read all in a random order, touching every 4096th element.
    ``write`` is the whole loop that makes each array (``rng.random``, the
    same work for every store) and sets it, as a program producing arrays
    sees it: a store that writes behind the caller (chest) overlaps its
    writes with the making of the next array. ``set`` is the time spent in
    the set calls alone.
small
    100,000 small dicts under int keys through a 1 MiB budget: write all,
    read all in a random order.
hot
    50,000 small values, all resident (1 GiB budget): 500,000 random gets,
    then 50,000 sets of existing keys, in tight loops over bound methods.
policy
    Replays ``trace_dask_array.json``, the cache operations of a dask array
    computation run by the synchronous scheduler (sets of task outputs, gets
    of task inputs, deletes on release), with arrays of the recorded sizes
    and a budget of a quarter of the trace's peak live bytes.

``--quick`` divides array sizes, budgets and counts by 32. Every read value is
checked against what was written, so no backend can skip work.

Reading the output
------------------
The header names the machine and the file system the stores work on. Each
table has a row per backend; a backend that failed (not importable, raised,
or gave back a wrong value) has an ``error in`` line instead.

- Throughputs are in decimal units (GB/s, thousands of ops/s); memory and
  disk traffic in MiB.
- ``RSS peak`` is the child's ``ru_maxrss``; ``RSS base`` its resident size
  after imports and opening the store, before any data is made.
- ``to disk`` / ``from disk`` are the bytes the backend itself wrote and
  read back: chest's ``stats``, counters on zict's File, SpillBuffer's
  metrics, the floor's own count; ``-`` for diskcache, which keeps none.
- ``io write`` and the ``chars`` columns are the process's I/O counters over
  the timed part: bytes sent to the block layer (0 on tmpfs) and bytes passed
  through read/write system calls.
- ``disk`` is what the folder takes on disk after ``close()`` (blocks, as
  ``du`` counts them: a file of 66 bytes takes 4 KiB), ``disk/pickled`` that
  over the bytes of the values pickled.
- ``close s`` is the time ``close()`` took after the workload (chest with a
  path flushes there); ``wall s`` the child's whole run: start-up, making the
  data, the workload and removing its folder.

Nothing is dropped from the page cache: the speeds are page-cache speeds.
The arrays workload calls ``os.sync()`` before its write and its read phase,
so that no backend pays for the dirty pages of the one before (on a slow
disk, the kernel throttles writers once writeback falls behind: a 32 MiB
write then takes ~85 ms here instead of ~10 ms, for every backend alike).
Each pair runs ``--repeat`` times (2), in rounds over all the backends so
that its tries follow different neighbours, and the best figures are shown.

The ratios are "times better": above 1 the first of the pair is faster, or
uses less memory or disk traffic, than the second.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import json
import os
import pickle
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Hashable, Iterator, MutableMapping
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import psutil

MiB = 2**20
GB = 1e9
TRACE = Path(__file__).resolve().parent / "trace_dask_array.json"
BACKENDS = ("chest", "zict", "spillbuffer", "diskcache", "floor", "dict", "pyfloor")
WORKLOADS = ("arrays", "small", "hot", "policy")
#: Bytes of memory written (and freed) before each run of ``arrays``.
WARM_UP = 4 << 30
CHEST_POLICIES = ("largest", "lru", "clean-first")
QUICK = 32  # --quick divides sizes, budgets and counts by this

Result = Dict[str, Any]


# -- backends -------------------------------------------------------------------
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


class Floor(MutableMapping):
    """One file per key, written on every set and read on every get.

    Arrays go through ``ndarray.tofile`` / ``np.fromfile`` (their dtype and
    shape kept in memory), anything else through pickle protocol 5 and bare
    ``os.open`` / ``os.write`` / ``os.read`` calls (a file object costs about
    as much as the system calls for a small value).
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.files: Dict[Hashable, str] = {}
        self.arrays: Dict[Hashable, Tuple[np.dtype, Tuple[int, ...]]] = {}
        self.sizes: Dict[Hashable, int] = {}  # of the pickles
        self.names = itertools.count()
        self.bytes_written = 0
        self.bytes_read = 0

    def __setitem__(self, key: Hashable, value: Any) -> None:
        path = self.files.get(key)
        if path is None:
            path = os.path.join(self.directory, str(next(self.names)))
        if isinstance(value, np.ndarray):
            value.tofile(path)
            self.arrays[key] = (value.dtype, value.shape)
            self.bytes_written += value.nbytes
        else:
            data = pickle.dumps(value, protocol=5)
            fd = os.open(path, _CREATE, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            self.bytes_written += len(data)
            self.arrays.pop(key, None)
            self.sizes[key] = len(data)
        self.files[key] = path

    def __getitem__(self, key: Hashable) -> Any:
        path = self.files[key]
        if key in self.arrays:
            dtype, shape = self.arrays[key]
            value = np.fromfile(path, dtype=dtype).reshape(shape)
            self.bytes_read += value.nbytes
            return value
        fd = os.open(path, os.O_RDONLY)
        try:
            data = os.read(fd, self.sizes[key])
        finally:
            os.close(fd)
        self.bytes_read += len(data)
        return pickle.loads(data)

    def __delitem__(self, key: Hashable) -> None:
        os.remove(self.files.pop(key))
        self.arrays.pop(key, None)
        self.sizes.pop(key, None)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)


class PyFloor(MutableMapping):
    """A dict behind Python methods that tick an LRU counter: the least a
    spilling mapping written in Python pays for a get and a set in memory."""

    def __init__(self) -> None:
        self.data: Dict[Hashable, Any] = {}
        self.ticks: Dict[Hashable, int] = {}
        self.tick = 0

    def __getitem__(self, key: Hashable) -> Any:
        value = self.data[key]
        self.tick += 1
        self.ticks[key] = self.tick
        return value

    def __setitem__(self, key: Hashable, value: Any) -> None:
        self.data[key] = value
        self.tick += 1
        self.ticks[key] = self.tick

    def __delitem__(self, key: Hashable) -> None:
        del self.data[key]
        del self.ticks[key]

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


PACKED = ("sqlite", "lmdb")


def open_chest(directory: str, budget: int, variant: Optional[str]) -> MutableMapping:
    """A chest; ``variant``: an eviction policy, or a packed engine."""
    from chest import Chest

    kwargs: Dict[str, Any] = {}
    if variant in PACKED:
        kwargs["packed"] = variant
    elif variant is not None:
        kwargs["policy"] = variant
    return Chest(path=directory, available_memory=budget, **kwargs)


def open_zict(directory: str, budget: int) -> MutableMapping:
    import zict
    from dask.sizeof import sizeof

    class CountingFile(zict.File):
        """zict.File for any key (as ``str(key)``), counting the bytes it moves."""

        bytes_written = 0
        bytes_read = 0

        def _safe_key(self, key: Any) -> str:
            return super()._safe_key(str(key))

        def __setitem__(self, key: Any, value: Any) -> None:
            super().__setitem__(key, value)
            self.bytes_written += len(value)

        def __getitem__(self, key: Any) -> Any:
            data = super().__getitem__(key)
            self.bytes_read += len(data)
            return data

    def dumps(value: Any) -> bytes:
        return pickle.dumps(value, protocol=5)

    slow = zict.Func(dumps, pickle.loads, CountingFile(directory))
    return zict.Buffer({}, slow, n=budget, weight=lambda k, v: sizeof(v))


def open_store(backend: str, directory: str, budget: int) -> MutableMapping:
    """A fresh store of ``backend`` in the empty folder ``directory``."""
    name, _, policy = backend.partition(":")
    if name == "chest":
        return open_chest(directory, budget, policy or None)
    if name == "zict":
        return open_zict(directory, budget)
    if name == "spillbuffer":
        from distributed.spill import SpillBuffer

        return SpillBuffer(directory, target=budget)
    if name == "diskcache":
        import diskcache

        return diskcache.Cache(directory, eviction_policy="none")
    if name == "floor":
        return Floor(directory)
    if name == "dict":
        return {}
    if name == "pyfloor":
        return PyFloor()
    raise ValueError(f"unknown backend {backend!r}")


def disk_traffic(store: MutableMapping, directory: str) -> Tuple[Any, Any]:
    """Bytes ``store`` wrote to and read from its files, as it counts them.

    ``None`` where the backend keeps no count (diskcache; chest without
    ``stats``, for which the bytes still in ``directory`` stand for the
    bytes written).
    """
    kind = type(store).__name__
    if kind == "Chest":
        stats = getattr(store, "stats", None)
        if stats is None:
            return folder_size(directory), None
        return stats.bytes_written, stats.bytes_read
    if kind == "SpillBuffer":
        metrics = store.cumulative_metrics
        return metrics[("disk-write", "bytes")], metrics[("disk-read", "bytes")]
    if kind == "Buffer":  # zict
        files = store.slow.d
        return files.bytes_written, files.bytes_read
    if kind == "Floor":
        return store.bytes_written, store.bytes_read
    if kind in ("dict", "PyFloor"):
        return 0, 0
    return None, None


def folder_size(directory: str) -> int:
    return sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, names in os.walk(directory)
        for name in names
    )


def disk_used(directory: str) -> int:
    """Bytes the file system gives the folder's files (blocks, as ``du``)."""
    return sum(
        os.lstat(os.path.join(folder, name)).st_blocks * 512
        for folder, _, names in os.walk(directory)
        for name in names
    )


def close(store: MutableMapping) -> float:
    """Close ``store`` if it can be closed; the seconds that took."""
    start = time.perf_counter()
    if hasattr(store, "close"):
        store.close()
    return time.perf_counter() - start


# -- measuring ------------------------------------------------------------------
def rss_mib() -> float:
    return psutil.Process().memory_info().rss / MiB


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class IO:
    """Deltas of the process's I/O counters, in MiB, from construction on."""

    FIELDS = ("write_bytes", "read_bytes", "write_chars", "read_chars")

    def __init__(self) -> None:
        self.start = psutil.Process().io_counters()

    def delta(self) -> Result:
        end = psutil.Process().io_counters()
        return {
            f"io_{field}": (getattr(end, field) - getattr(self.start, field)) / MiB
            for field in self.FIELDS
        }


class VerificationError(AssertionError):
    """A store gave back something other than what was put in."""


def check(ok: bool, what: str) -> None:
    if not ok:
        raise VerificationError(what)


# -- workloads ------------------------------------------------------------------
def arrays_config(quick: bool) -> Result:
    scale = QUICK if quick else 1
    count, size, budget = 48, 32 * MiB // scale, 256 * MiB // scale
    return {
        "count": count, "size": size, "budget": budget,
        "title": f"{count} float64 arrays of {size / MiB:g} MiB, "
                 f"budget {budget / MiB:g} MiB",
    }


def small_config(quick: bool) -> Result:
    scale = QUICK if quick else 1
    count, budget = 100_000 // scale, MiB // scale
    return {
        "count": count, "budget": budget,
        "title": f"{count:,} small dicts under int keys, "
                 f"budget {budget / 2**10:g} KiB",
    }


def hot_config(quick: bool) -> Result:
    scale = QUICK if quick else 1
    keys, gets, sets = 50_000 // scale, 500_000 // scale, 50_000 // scale
    return {
        "keys": keys, "gets": gets, "sets": sets, "budget": 2**30,
        "title": f"{keys:,} resident small values (budget 1 GiB): "
                 f"{gets:,} random gets, {sets:,} sets of existing keys",
    }


def policy_config(quick: bool) -> Result:
    scale = QUICK if quick else 1
    trace = json.loads(TRACE.read_text())
    keys = trace["keys"]
    ops = [(op, k, max(8, size // scale)) for op, k, size in trace["ops"]]
    live: Dict[int, int] = {}
    total = peak = written = read = 0
    for op, k, size in ops:
        if op == "set":
            total += size - live.get(k, 0)
            live[k] = size
            written += size
        elif op == "get":
            read += live[k]
        else:
            total -= live.pop(k)
        peak = max(peak, total)
    budget = peak // 4
    return {
        "keys": keys, "ops": ops, "budget": budget,
        "title": f"replay of {TRACE.name} ({trace['computation']}): "
                 f"{len(ops):,} ops, sets {written / MiB:,.0f} MiB, "
                 f"gets {read / MiB:,.0f} MiB, peak live {peak / MiB:,.0f} MiB, "
                 f"budget {budget / MiB:,.0f} MiB",
    }


def run_arrays(store: MutableMapping, cfg: Result) -> Result:
    rng = np.random.default_rng(0)
    n = cfg["size"] // 8
    expected: Dict[str, float] = {}
    io = IO()
    in_set = 0.0
    os.sync()  # no backend inherits the dirty pages of the one before
    phase = time.perf_counter()
    for i in range(cfg["count"]):
        key = f"array-{i}"
        x = rng.random(n)
        expected[key] = float(x[::4096].sum())
        start = time.perf_counter()
        store[key] = x
        in_set += time.perf_counter() - start
        del x
    if hasattr(store, "shrink"):
        store.shrink()  # (chest: until the last write behind is done)
    write = time.perf_counter() - phase
    order = list(expected)
    random.Random(0).shuffle(order)
    read = 0.0
    os.sync()
    for key in order:
        start = time.perf_counter()
        touched = float(store[key][::4096].sum())
        read += time.perf_counter() - start
        check(touched == expected[key], f"{key} came back changed")
    total = cfg["count"] * cfg["size"] / GB
    return {"write_gbs": total / write, "set_gbs": total / in_set,
            "read_gbs": total / read, **io.delta()}


def small_value(i: int) -> Dict[str, Any]:
    return {"a": i, "b": "x" * 20, "c": [i, i + 1]}


def run_small(store: MutableMapping, cfg: Result) -> Result:
    count = cfg["count"]
    values = [small_value(i) for i in range(count)]
    order = list(range(count))
    random.Random(0).shuffle(order)
    pickled = sum(len(pickle.dumps(v, protocol=5)) for v in values)
    setitem, getitem = store.__setitem__, store.__getitem__
    io = IO()
    start = time.perf_counter()
    for i, value in enumerate(values):
        setitem(i, value)
    write = time.perf_counter() - start
    del values
    wrong = 0
    start = time.perf_counter()
    for i in order:
        wrong += getitem(i)["c"][0] != i
    read = time.perf_counter() - start
    check(not wrong, f"{wrong} values came back changed")
    return {"write_kops": count / write / 1e3, "read_kops": count / read / 1e3,
            "pickled": pickled / MiB, **io.delta()}


def run_hot(store: MutableMapping, cfg: Result) -> Result:
    count = cfg["keys"]
    for i in range(count):
        store[i] = small_value(i)
    rng = random.Random(0)
    get_keys = [rng.randrange(count) for _ in range(cfg["gets"])]
    set_keys = [rng.randrange(count) for _ in range(cfg["sets"])]
    new_values = [{"a": k, "b": "y" * 20, "c": [k, k + 1]} for k in set_keys]
    get, setitem = store.__getitem__, store.__setitem__
    start = time.perf_counter()
    for k in get_keys:
        get(k)
    get_ns = (time.perf_counter() - start) / len(get_keys) * 1e9
    start = time.perf_counter()
    for k, value in zip(set_keys, new_values):
        setitem(k, value)
    set_ns = (time.perf_counter() - start) / len(set_keys) * 1e9
    for k in get_keys[:1000]:
        check(store[k]["a"] == k, f"key {k} came back changed")
    for k in set_keys[:1000]:
        check(store[k]["b"] == "y" * 20, f"set of key {k} was lost")
    return {"get_ns": get_ns, "set_ns": set_ns}


def run_policy(store: MutableMapping, cfg: Result) -> Result:
    keys, ops = cfg["keys"], cfg["ops"]
    pool = np.random.default_rng(0).integers(
        0, 256, max(size for _, _, size in ops), dtype=np.uint8)
    io = IO()
    elapsed = 0.0
    for op, k, size in ops:
        key = keys[k]
        if op == "set":
            # Random bytes, so that no compression can shrink them, stamped
            # with the key's number.
            value = np.empty(size, dtype="u1")
            value[:] = pool[:size]
            value[:8].view(np.int64)[0] = k
            start = time.perf_counter()
            store[key] = value
            elapsed += time.perf_counter() - start
            del value
        elif op == "get":
            start = time.perf_counter()
            value = store[key]
            elapsed += time.perf_counter() - start
            check(int(value[:8].view(np.int64)[0]) == k, f"{key} came back changed")
            del value
        else:
            start = time.perf_counter()
            del store[key]
            elapsed += time.perf_counter() - start
    return {"seconds": elapsed, **io.delta()}


CONFIGS: Dict[str, Callable[[bool], Result]] = {
    "arrays": arrays_config, "small": small_config,
    "hot": hot_config, "policy": policy_config,
}
RUNS: Dict[str, Callable[[MutableMapping, Result], Result]] = {
    "arrays": run_arrays, "small": run_small, "hot": run_hot, "policy": run_policy,
}


def run_child(backend: str, workload: str, quick: bool, root: str) -> Result:
    """Run one pair in this process, in a fresh folder under ``root``."""
    cfg = CONFIGS[workload](quick)
    directory = tempfile.mkdtemp(prefix=f"{backend.replace(':', '-')}-", dir=root)
    try:
        store = open_store(backend, directory, cfg["budget"])
        result = {"rss_base": rss_mib()}
        result.update(RUNS[workload](store, cfg))
        result["to_disk"], result["from_disk"] = (
            None if n is None else n / MiB for n in disk_traffic(store, directory))
        result["close_s"] = close(store)
        result["disk"] = disk_used(directory) / MiB
        if "pickled" in result:
            result["disk_per_pickled"] = result["disk"] / result["pickled"]
        result["rss_peak"] = peak_rss_mib()
        return result
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# -- the policy trace -------------------------------------------------------------
COMPUTATION = "x=random((8000,8000),chunks=1000); y=x+x.T; (y@x[:,:1000], " \
              "(y-y.mean(0)).std(1))"


class RecordingDict(dict):
    """The scheduler's cache, noting each set (with its size), get and delete."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: List[Tuple[str, Hashable, int]] = []

    def __setitem__(self, key: Hashable, value: Any) -> None:
        from dask.sizeof import sizeof

        self.ops.append(("set", key, int(sizeof(value))))
        super().__setitem__(key, value)

    def __getitem__(self, key: Hashable) -> Any:
        self.ops.append(("get", key, 0))
        return super().__getitem__(key)

    def __delitem__(self, key: Hashable) -> None:
        self.ops.append(("del", key, 0))
        super().__delitem__(key)


def record_trace() -> None:
    """Run the dask computation and write its cache operations to TRACE."""
    import dask
    import dask.array as da

    x = da.random.random((8000, 8000), chunks=(1000, 1000))
    y = x + x.T
    cache = RecordingDict()
    dask.compute(y @ x[:, :1000], (y - y.mean(axis=0)).std(axis=1),
                 scheduler="sync", cache=cache)
    numbers: Dict[str, int] = {}
    ops = [[op, numbers.setdefault(str(key), len(numbers)), size]
           for op, key, size in cache.ops]
    lines = ",\n".join(json.dumps(op) for op in ops)
    TRACE.write_text(
        f'{{"computation": {json.dumps(COMPUTATION)},\n'
        f'"dask": {json.dumps(dask.__version__)},\n'
        f'"keys": {json.dumps(list(numbers))},\n'
        f'"ops": [\n{lines}\n]}}\n')
    print(f"wrote {len(ops):,} operations on {len(numbers):,} keys to {TRACE} "
          f"({TRACE.stat().st_size / 2**10:,.0f} KiB)")


# -- the parent -------------------------------------------------------------------
def machine(root: str) -> List[str]:
    """Lines describing the machine and the file system under ``root``."""
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    df = subprocess.run(["df", "-T", root], capture_output=True, text=True)
    device, fs, *_, mount = df.stdout.splitlines()[-1].split()
    with open("/proc/mounts") as f:
        options = [fields[3] for fields in map(str.split, f) if fields[1] == mount]
    versions = []
    for package in ("chest", "zict", "distributed", "dask", "diskcache"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} missing")
    return [
        f"machine: {cpu}, {psutil.cpu_count(logical=False)} cores / "
        f"{os.cpu_count()} threads, {psutil.virtual_memory().total / 2**30:.1f} GiB",
        f"python {platform.python_version()}, numpy {np.__version__}, "
        + ", ".join(versions),
        f"--dir {root}: {fs} ({device} on {mount}, {options[-1]})",
    ]


def back_memory(nbytes: int) -> None:
    """Write to ``nbytes`` of fresh memory, then free it.

    On a virtual machine the host may hand memory to the guest only when it
    is first written, and take freed memory back: there, the first 32 MiB
    written to a file can take 12 ms and the next 95 ms, for every store
    alike. Done in a process of its own: a child inherits its parent's peak
    RSS.
    """
    nbytes = min(nbytes, psutil.virtual_memory().available // 2)
    subprocess.run([sys.executable, "-c",
                    f"import numpy; numpy.ones({nbytes // 8})"], check=True)


def spawn(backend: str, workload: str, quick: bool, root: str) -> Result:
    """Run one pair in a child process; its result or ``{"error": ...}``."""
    if workload == "arrays" and not quick:
        back_memory(WARM_UP)
    command = [sys.executable, __file__, "--child", backend, workload, "--json",
               "--dir", root] + (["--quick"] if quick else [])
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=120 if quick else 900)
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        result = {"error": f"exit {done.returncode}: {tail[0]}"}
    result["wall_s"] = time.perf_counter() - start
    return result


def run_rounds(repeat: int, backends: List[str], workload: str, quick: bool,
               root: str) -> Dict[str, Result]:
    """Run every backend once per round, ``repeat`` rounds; the best of each.

    On a slow disk whatever runs after a large clean-up writes at a fraction
    of the usual speed. Rounds give each backend tries after different
    neighbours, and the best of them (figure by figure, as timeit) takes
    that out.
    """
    runs: Dict[str, List[Result]] = {b: [] for b in backends}
    for _ in range(repeat):
        for backend in backends:
            runs[backend].append(spawn(backend, workload, quick, root))
    return {b: best_of(runs[b], workload) for b in backends}


def best_of(runs: List[Result], workload: str) -> Result:
    """The best figures of several runs of one pair."""
    good = [run for run in runs if "error" not in run]
    if not good:
        return runs[-1]
    best = dict(good[0])
    for column, field, _, higher in COLUMNS[workload]:
        values = [run[field] for run in good if run.get(field) is not None]
        if values and higher is not None:
            best[field] = max(values) if higher else min(values)
    return best


# (header, result field, format, higher is better or None when not compared)
Column = Tuple[str, str, str, Optional[bool]]
RSS = [("RSS peak MiB", "rss_peak", "{:.0f}", False),
       ("RSS base MiB", "rss_base", "{:.0f}", None)]
TRAFFIC = [("to disk MiB", "to_disk", "{:,.0f}", None),
           ("from disk MiB", "from_disk", "{:,.0f}", None)]
WALL = ("wall s", "wall_s", "{:.1f}", None)
COLUMNS: Dict[str, List[Column]] = {
    "arrays": [("write GB/s", "write_gbs", "{:.2f}", True),
               ("set GB/s", "set_gbs", "{:.2f}", None),
               ("read GB/s", "read_gbs", "{:.2f}", True), *RSS, *TRAFFIC,
               ("close s", "close_s", "{:.2f}", None), WALL],
    "small": [("write kops/s", "write_kops", "{:.1f}", True),
              ("read kops/s", "read_kops", "{:.1f}", True), *RSS, *TRAFFIC,
              ("disk MiB", "disk", "{:,.1f}", False),
              ("disk/pickled", "disk_per_pickled", "{:.1f}", None),
              ("close s", "close_s", "{:.2f}", None), WALL],
    "hot": [("get ns", "get_ns", "{:,.0f}", False),
            ("set ns", "set_ns", "{:,.0f}", False), *RSS, WALL],
    "policy": [("time s", "seconds", "{:.2f}", False),
               ("to disk MiB", "to_disk", "{:,.0f}", False),
               ("from disk MiB", "from_disk", "{:,.0f}", False),
               ("io write MiB", "io_write_bytes", "{:,.0f}", None),
               ("wchars MiB", "io_write_chars", "{:,.0f}", None),
               ("rchars MiB", "io_read_chars", "{:,.0f}", None), *RSS, WALL],
}


def grid(rows: List[List[str]]) -> List[str]:
    """Left-align the first column, right-align the others."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join([row[0].ljust(widths[0])]
                      + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])])
            for row in rows]


def cell(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def ratio(a: Result, b: Result, field: str, higher_is_better: bool) -> str:
    """How many times better ``a`` is than ``b`` at ``field``."""
    x, y = a.get(field), b.get(field)
    if x is None or y is None:
        return "-"
    top, bottom = (x, y) if higher_is_better else (y, x)
    return f"{top / bottom:.2f}x" if bottom else "-"


def table(workload: str, title: str, results: Dict[str, Result]) -> List[str]:
    columns = COLUMNS[workload]
    out = [f"== {workload}: {title}"]
    rows = [["backend"] + [c[0] for c in columns]]
    errors = []
    for backend, result in results.items():
        if "error" in result:
            errors.append(f"{backend}: {result['error']}")
        else:
            rows.append([backend] + [cell(result.get(f), fmt)
                                     for _, f, fmt, _ in columns])
    out += grid(rows) if len(rows) > 1 else []
    out += [f"  error in {line}" for line in errors]

    compared = [(h, f, better) for h, f, _, better in columns if better is not None]
    good = {b: r for b, r in results.items() if "error" not in r}
    pairs = [(b, "floor") for b in good if b != "floor" and "floor" in good]
    pairs += [(c, x) for c in good if c.startswith("chest")
              for x in good if not x.startswith("chest") and x != "floor"]
    if pairs:
        out.append("ratios, times better (>1: the first is faster or leaner):")
        out += grid([["pair"] + [h for h, _, _ in compared]]
                    + [[f"{a} / {b}"] + [ratio(good[a], good[b], f, better)
                                         for _, f, better in compared]
                       for a, b in pairs])
    return out


def variants(backend: str, workload: str) -> List[str]:
    """The runs of ``backend`` in ``workload``: chest once per policy in
    policy, and once per packed engine in small and hot."""
    if backend == "chest" and workload == "policy":
        return [f"chest:{policy}" for policy in CHEST_POLICIES]
    if backend == "chest" and workload in ("small", "hot"):
        return ["chest"] + [f"chest:{engine}" for engine in PACKED]
    if backend == "pyfloor" and workload != "hot":
        return []  # it keeps everything in memory: only hot compares with it
    return [backend]


def parse(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark chest against zict, SpillBuffer, diskcache, a raw "
                    "file-per-key floor and a dict.")
    parser.add_argument("--quick", action="store_true",
                        help=f"sizes, budgets and counts divided by {QUICK}")
    parser.add_argument("--only", default=",".join(WORKLOADS),
                        help="comma-separated workloads (default: all)")
    parser.add_argument("--repeat", type=int, default=2,
                        help="rounds over the backends; each pair's best "
                             "figures are shown (default: 2)")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="comma-separated backends (default: all)")
    parser.add_argument("--dir", default=None,
                        help="where the temporary folders go (default: the "
                             "system's temporary folder)")
    parser.add_argument("--record-trace", action="store_true",
                        help=f"record the policy trace into {TRACE.name}")
    parser.add_argument("--child", nargs=2, metavar=("BACKEND", "WORKLOAD"),
                        help="run one pair in this process")
    parser.add_argument("--json", action="store_true",
                        help="with --child: print the result as one JSON line")
    args = parser.parse_args(argv)
    args.only = args.only.split(",")
    args.backends = args.backends.split(",")
    for name, given, known in (("workload", args.only, WORKLOADS),
                               ("backend", args.backends, BACKENDS)):
        unknown = set(given) - set(known)
        if unknown:
            parser.error(f"unknown {name}(s): {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(known)}")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse(argv)
    if args.record_trace:
        record_trace()
        return 0
    if args.child:
        backend, workload = args.child
        try:
            result = run_child(backend, workload, args.quick, args.dir)
        except Exception as e:
            result = {"error": f"{type(e).__name__}: {e}"}
        if args.json:
            print(json.dumps(result))
        else:
            print("\n".join(f"{k}: {v}" for k, v in result.items()))
        return 1 if "error" in result else 0

    root = tempfile.mkdtemp(prefix="chest-peers-", dir=args.dir)
    try:
        print("\n".join(machine(root)), flush=True)
        for workload in args.only:
            backends = [name for b in args.backends for name in variants(b, workload)]
            started = time.perf_counter()
            results = run_rounds(args.repeat, backends, workload, args.quick, root)
            lines = table(workload, CONFIGS[workload](args.quick)["title"], results)
            lines.append(f"({time.perf_counter() - started:.0f} s in all)")
            print("\n" + "\n".join(lines), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
