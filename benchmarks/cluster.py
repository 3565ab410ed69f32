"""Benchmark chest as the store of dask.distributed workers, against dask's own.

Three workloads larger than the workers' memory run on a fresh
``LocalCluster`` each time, once with dask's default store (``SpillBuffer``)
and once with a chest as every worker's ``data=``, in rounds that alternate
which of the two goes first. Each run is a process of its own (the parent
collects its JSON), with its own folder: the cluster's ``local_directory``
and ``TMPDIR`` point there, and the folder is removed after the run.

Usage
-----
Run from the repository, with dask, distributed, pandas and pyarrow installed::

    python benchmarks/cluster.py                    # 2 rounds of everything, ~30 min
    python benchmarks/cluster.py --quick            # tiny sizes, ~1 min
    python benchmarks/cluster.py --only persist --rounds 3
    python benchmarks/cluster.py --backends spillbuffer,chest,chest:150MB
    python benchmarks/cluster.py --memory-limit 600MB --n 16000
    python benchmarks/cluster.py --logs /tmp/cluster-logs   # keep every run's log

Cluster
-------
``LocalCluster(n_workers=2, threads_per_worker=2, memory_limit="400MB",
processes=True, dashboard_address=None)`` (``--workers``, ``--threads``,
``--memory-limit``; 1 GB for rechunk), dask's memory thresholds unchanged (spill to disk past
the target, 60% of the limit; pause at 80% of the limit in process memory;
restart at 95%) unless ``--target`` sets another target fraction, for both
backends alike (``--quick`` sets 0.05, so that its tiny data spills).

Backends
--------
spillbuffer
    No ``data=``: dask's ``SpillBuffer`` with ``memory_limit * target`` as its
    budget, in the worker's ``storage`` folder.
chest
    ``data=(Chest, {})``: the worker passes its ``local_directory`` and the
    chest makes its temporary folder there and takes the same budget
    (``memory_limit * target``) from the worker.
chest:SIZE
    ``data=(Chest, {"available_memory": SIZE})``, e.g. ``chest:150MB``.

Workloads
---------
persist
    ``x = random((N, N), chunks=C)`` (N=20000, C=2000: 3.2 GB of float64 in
    32 MB chunks), ``xp = (x + 1).persist()``, wait, then
    ``(xp + xp.T).mean()``; right if within 1e-3 of 3.0.
rechunk
    The same N x N random array in column slabs of (N, S) (S=100: 16 MB
    each), persisted; its row and column sums computed; then rechunked to
    row slabs of (S, N), every output chunk taking a piece of every input
    chunk, and summed again. Right if both sums agree to 1e-9 (relative).
    A task rechunk (``--rechunk-method``), whose pieces all go through
    ``data=``, on workers of 1 GB (``--rechunk-memory-limit``). With 400 MB
    workers neither backend ever finished: every run ended in
    ``KilledWorker`` within a minute, for the task and the P2P rechunk
    alike, from 0.8 GB (N=10000) to 3.2 GB, in slabs of 8 to 32 MB. A task
    rechunk's pieces are views that keep their whole input chunk alive while
    counting as the piece's bytes; the P2P rechunk failed even on 1 GB
    workers (restarts until the timeout).
shuffle
    ``dd.from_map`` of P partitions of R rows of (key int64 in [0, K), a
    float64, b int64, c float64) (P=160, R=125,000, K=1,000,000: 0.64 GB in
    4 MB partitions), persisted; its row count, ``b.sum()`` and
    ``key.nunique()`` computed;
    then ``shuffle("key", shuffle_method="p2p")`` and, per partition, its
    length, ``b.sum()`` and number of distinct keys. Right if the rows and
    the checksum are unchanged and the distinct keys of the partitions add
    up to the frame's (no key is in two partitions). The frame is smaller
    than the arrays: a worker with pandas and pyarrow loaded takes ~156 MB
    before any data (its pause threshold is 305 MiB), and at 2.56 GB (80 x
    1,000,000 rows) and 1.28 GB (160 x 250,000 or 320 x 125,000) neither
    backend finished within the timeout (240-300 s) on the 2-core VM:
    workers restarted until ``KilledWorker``, or paused until the timeout.

The P2P shuffle (and a P2P rechunk) keeps the pieces in transit in a disk
buffer of its own (in the worker's folder), not in ``data=``; its inputs and
outputs go through the backend.

Reading the output
------------------
Each run prints a line as it ends. Then, per workload, a row per backend:

- ``ok``: runs that finished with the right answer, of all runs; a run that
  failed (an exception such as ``KilledWorker``, a wrong answer, or no answer
  within ``--timeout`` seconds) is listed with its error underneath.
- ``best / median / worst s``: wall time of the workload over the runs that
  finished right, from the first submission to the checked answer (starting
  and closing the cluster not included; shown per run).
- ``restarts``: workers that left the cluster during the workload (the nanny
  restarts a worker past 95% of its memory limit, or one that died), summed
  over the runs; ``pauses``: times a worker went from running to paused
  (past 80%), summed over the runs (the scheduler's status events).
- ``to disk / from disk GB``: bytes the stores wrote and read back, summed
  over the workers, median over the runs: the backend's own counters
  (``cumulative_metrics``: SpillBuffer's ``disk-write``/``disk-read`` bytes,
  chest's ``stats``). Each worker reports them every 0.5 s and at the end;
  a worker that was killed counts up to its last report.
- ``peak disk GB``: the most the run's folder took on disk (blocks, as
  ``du`` counts them, polled every 0.5 s), all runs' maximum: spilled
  values, and P2P's disk buffers.
- ``left``: files left in the run's folder after the cluster closed (0 when
  every worker removed its store), summed over the runs.
- ``warn / err``: lines at WARNING and at ERROR (or tracebacks) in the
  run's log (the scheduler's and the workers'), summed over the runs;
  ``chest``: those of them that mention chest. A worker whose event loop
  is stuck for a minute prints every thread's stack to the log
  (``faulthandler``; shown as "Thread 0x..." lines, kept with ``--logs``).
  A run that fails or times out also logs each worker's state then ("store
  states after ..."): its status, process memory (also by kind, and once
  the allocators gave back what they keep freed), the values in memory and
  on disk, Python's objects by type, what the p2p shuffle still buffers,
  and for a chest the keys in memory its policy does not know and the
  values being written.

The ratio line divides chest's wall times by SpillBuffer's (best by best,
median by median): below 1, chest was faster. The distinct warnings and
errors of the logs are listed after the tables, counted over the runs.

Before each full-size run, ``os.sync()`` flushes the dirty pages of the one
before, and 4 GiB (at most half of what is free) are written and freed in a
process of its own (see ``peers.py``: on a virtual machine, fresh memory
can be slow to write the first time).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Tuple

GB = 1e9
WORKLOADS = ("persist", "rechunk", "shuffle")
BACKENDS = ("spillbuffer", "chest")
WARM_UP = 4 << 30  # bytes written and freed before each full-size run
TOPIC = "cluster-bench-metrics"
#: Seconds a worker's event loop may be stuck before its threads' stacks are
#: printed to the run's log.
STUCK = 60
#: Seconds a run may take beyond --timeout (starting and closing the
#: cluster) before its process group is killed.
GRACE = 180

Result = Dict[str, Any]


# -- in the workers and the scheduler ------------------------------------------
def store_metrics(dask_worker: Any) -> Dict[str, Any]:
    """What a worker's ``data`` says it did: its kind, budget and disk traffic."""
    data = dask_worker.data
    metrics = getattr(data, "cumulative_metrics", None)
    if metrics is not None:
        written = metrics.get(("disk-write", "bytes"), 0)
        read = metrics.get(("disk-read", "bytes"), 0)
    elif hasattr(data, "stats"):
        written, read = data.stats.bytes_written, data.stats.bytes_read
    else:
        written = read = None
    budget = getattr(data, "available_memory", None)
    if budget is None:
        budget = getattr(data, "n", None)  # zict.Buffer, so SpillBuffer
    return {"pid": os.getpid(), "kind": type(data).__name__, "budget": budget,
            "written": written, "read": read}


def store_state(dask_worker: Any) -> Dict[str, Any]:
    """What a worker and its ``data`` hold now (written to the log when a run
    fails or times out, to tell a stall's cause): the worker's status and
    process memory, the store's values in memory and their bytes, and for a
    chest the keys in memory its eviction policy does not know (held:
    values that cannot be written, or a bug) and the values being written;
    what pyarrow's pool holds, the process memory again once the allocators
    gave back what they keep freed (as chest's ``FreedMemory``: it changes
    the worker), the memory by kind, Python's objects by type, and what the
    p2p shuffle still buffers."""
    import psutil

    data = dask_worker.data
    fast = data.fast
    state: Dict[str, Any] = {
        "pid": os.getpid(), "status": str(getattr(dask_worker, "status", "?")),
        "rss_mib": round(psutil.Process().memory_info().rss / 2**20, 1),
        "in_memory": len(fast), "on_disk": len(data.slow),
        "memory_bytes": getattr(data, "memory_usage", None)
        or getattr(fast, "total_weight", None)}
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None:  # what pyarrow's pool holds, if the workload used it
        state["arrow_mib"] = round(pyarrow.total_allocated_bytes() / 2**20, 1)
    # Memory freed but kept by the allocators, given back as a chest's evict()
    # does when it is empty (pyarrow's pool, malloc_trim), and measured again.
    from chest.worker import FreedMemory

    FreedMemory(every=0).release()
    state["rss_trimmed_mib"] = round(psutil.Process().memory_info().rss / 2**20, 1)
    try:  # the process's memory by kind (Linux)
        with open("/proc/self/smaps_rollup") as f:
            rows = [line.split() for line in f]
        state["smaps_mib"] = {r[0].rstrip(":"): round(int(r[1]) / 1024, 1) for r in rows
                              if len(r) == 3 and r[0] in ("Anonymous:", "AnonHugePages:",
                                                          "Pss_File:", "Swap:")}
    except Exception:
        pass
    try:  # Python's own objects: how many, of which types most
        import gc

        objects = gc.get_objects()
        state["objects"] = len(objects)
        state["object_types"] = dict(Counter(
            type(o).__name__ for o in objects).most_common(8))
        del objects
    except Exception:
        pass
    try:  # what the p2p shuffle still holds in this worker
        runs = getattr(dask_worker.plugins.get("shuffle"), "shuffle_runs", None)
        active = getattr(runs, "_active_runs", {}) if runs is not None else {}
        state["shuffle_runs"] = [
            {"closed": getattr(run, "closed", None),
             "comm_buffer": getattr(getattr(run, "_comm_buffer", None), "bytes_memory", None),
             "disk_buffer": getattr(getattr(run, "_disk_buffer", None), "bytes_memory", None)}
            for run in list(active.values())]
    except Exception as e:
        state["shuffle_runs"] = repr(e)
    heap = getattr(data, "heap", None)
    if heap is not None:  # a chest
        state["not_in_policy"] = sorted(map(repr, set(fast) - set(heap)))[:20]
        state["in_flight"] = len(data.flight.values)
        state["types"] = dict(Counter(type(v).__name__ for v in list(fast.values())))
    return state


def _plugins() -> Tuple[Any, Any]:
    """The worker and scheduler plugins (made here: distributed is imported
    only by the runs)."""
    from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

    class Report(WorkerPlugin):
        """Sends the store's counters to the scheduler every 0.5 s, and
        prints every thread's stack to the log if the worker's event loop
        is stuck for ``STUCK`` seconds (it re-arms a faulthandler timer)."""

        name = "cluster-bench-report"

        def setup(self, worker: Any) -> None:
            from tornado.ioloop import PeriodicCallback

            self.worker = worker
            self.callback = PeriodicCallback(self.send, 500)
            self.callback.start()

        def send(self) -> None:
            import faulthandler

            faulthandler.dump_traceback_later(STUCK, exit=False)
            try:
                self.worker.log_event(TOPIC, store_metrics(self.worker))
            except Exception:  # a closing worker
                pass

        def teardown(self, worker: Any) -> None:
            import faulthandler

            faulthandler.cancel_dump_traceback_later()
            self.callback.stop()

    class Watch(SchedulerPlugin):
        """Counts workers leaving and joining, pauses, and keeps each
        worker's last report of its store's counters."""

        name = "cluster-bench-watch"

        def __init__(self) -> None:
            self.added: List[str] = []
            self.removed: List[str] = []
            self.pauses: List[str] = []
            self.reports: Dict[str, Dict[str, Any]] = {}

        def add_worker(self, scheduler: Any, worker: str) -> None:
            self.added.append(worker)

        def remove_worker(self, scheduler: Any, worker: str, *, stimulus_id: str,
                          **kwargs: Any) -> None:
            self.removed.append(worker)

        def log_event(self, topic: str, msg: Any) -> None:
            if not isinstance(msg, dict):
                return
            if topic == TOPIC and "worker" in msg:
                self.reports[msg["worker"]] = dict(msg)
            elif msg.get("action") == "worker-status-change" and \
                    msg.get("status") == "paused":
                self.pauses.append(topic)

        def summary(self) -> Dict[str, Any]:
            return {"added": list(self.added), "removed": list(self.removed),
                    "pauses": list(self.pauses),
                    "reports": {k: dict(v) for k, v in self.reports.items()}}

    return Report, Watch


def watch_summary(dask_scheduler: Any) -> Dict[str, Any]:
    return dask_scheduler.plugins["cluster-bench-watch"].summary()


# -- workloads (in the run's process) --------------------------------------------
class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("no time left")
        return left


def sizes(args: Any) -> Result:
    """The workloads' sizes: ``args`` is the parsed command line (or the
    run's configuration, with the same names)."""
    n, c, slab = args.n, args.chunk, args.slab
    rows = args.rows
    return {
        "persist": f"random(({n:,}, {n:,}), chunks={c:,}) + 1 persisted "
                   f"({n * n * 8 / GB:.2f} GB, {c * c * 8 / 1e6:.0f} MB chunks), "
                   f"(xp + xp.T).mean()",
        "rechunk": f"random(({n:,}, {n:,})) in ({n:,}, {slab:,}) slabs persisted "
                   f"({n * n * 8 / GB:.2f} GB, {n * slab * 8 / 1e6:.0f} MB chunks), "
                   f"rechunked to ({slab:,}, {n:,}) ({args.rechunk_method or 'auto'}), "
                   f"summed both ways; workers of {args.rechunk_memory_limit}",
        "shuffle": f"{args.partitions} partitions of {rows:,} rows x 4 columns "
                   f"({args.partitions * rows * 32 / GB:.2f} GB) persisted, "
                   f"p2p shuffle on {args.keys:,} keys, per-partition counts",
    }


def run_persist(client: Any, cfg: Result, deadline: Deadline) -> Result:
    import dask.array as da
    import distributed

    n, c = cfg["n"], cfg["chunk"]
    x = da.random.default_rng(0).random((n, n), chunks=c)
    xp = (x + 1).persist()
    distributed.wait(xp, timeout=deadline.left())
    mean = float(client.compute((xp + xp.T).mean()).result(timeout=deadline.left()))
    return {"right": abs(mean - 3.0) < 1e-3, "answer": f"mean {mean:.6f}"}


def run_rechunk(client: Any, cfg: Result, deadline: Deadline) -> Result:
    import dask.array as da
    import distributed
    import numpy as np

    n, slab = cfg["n"], cfg["slab"]
    x = da.random.default_rng(1).random((n, n), chunks=(n, slab))
    xp = x.persist()
    distributed.wait(xp, timeout=deadline.left())
    rows_before, cols_before = client.compute(
        [xp.sum(axis=1), xp.sum(axis=0)], sync=False)
    rows_before = rows_before.result(timeout=deadline.left())
    cols_before = cols_before.result(timeout=deadline.left())
    y = xp.rechunk((slab, n), method=cfg["rechunk_method"] or None)
    method = "p2p" if "p2p" in y.name else "tasks"
    rows_after, cols_after = client.compute([y.sum(axis=1), y.sum(axis=0)])
    rows_after = rows_after.result(timeout=deadline.left())
    cols_after = cols_after.result(timeout=deadline.left())
    right = bool(np.allclose(rows_after, rows_before, rtol=1e-9, atol=0)
                 and np.allclose(cols_after, cols_before, rtol=1e-9, atol=0))
    worst = float(max(np.max(np.abs(rows_after - rows_before) / np.abs(rows_before)),
                      np.max(np.abs(cols_after - cols_before) / np.abs(cols_before))))
    return {"right": right, "answer": f"{method} rechunk, sums within {worst:.1e}",
            "method": method}


def make_partition(i: int, rows: int, keys: int) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(1000 + i)
    return pd.DataFrame({
        "key": rng.integers(0, keys, rows, dtype=np.int64),
        "a": rng.random(rows),
        "b": rng.integers(0, 1_000_000, rows, dtype=np.int64),
        "c": rng.random(rows),
    })


def partition_counts(part: Any) -> Any:
    import pandas as pd

    return pd.DataFrame({"rows": [len(part)], "b": [int(part["b"].sum())],
                         "keys": [int(part["key"].nunique())]})


def run_shuffle(client: Any, cfg: Result, deadline: Deadline) -> Result:
    import dask.dataframe as dd
    import distributed

    df = dd.from_map(make_partition, range(cfg["partitions"]), rows=cfg["rows"],
                     keys=cfg["keys"], meta=make_partition(0, 0, 1))
    df = df.persist()
    distributed.wait(df, timeout=deadline.left())
    rows = client.compute(df.shape[0], sync=False)
    b = client.compute(df["b"].sum(), sync=False)
    keys = client.compute(df["key"].nunique(), sync=False)
    rows, b, keys = (int(f.result(timeout=deadline.left())) for f in (rows, b, keys))
    shuffled = df.shuffle("key", shuffle_method="p2p")
    meta = partition_counts(make_partition(0, 0, 1))
    counts = shuffled.map_partitions(partition_counts, meta=meta)
    counts = client.compute(counts).result(timeout=deadline.left())
    got = (int(counts["rows"].sum()), int(counts["b"].sum()), int(counts["keys"].sum()))
    right = got == (rows, b, keys) and rows == cfg["partitions"] * cfg["rows"]
    return {"right": right,
            "answer": f"rows {got[0]:,}/{rows:,}, b {got[1]:,}/{b:,}, "
                      f"keys {got[2]:,}/{keys:,}"}


RUNS: Dict[str, Callable[[Any, Result, Deadline], Result]] = {
    "persist": run_persist, "rechunk": run_rechunk, "shuffle": run_shuffle,
}


def disk_used(directory: str) -> int:
    """Bytes the file system gives the folder's files (blocks, as ``du``)."""
    total = 0
    for folder, _, names in os.walk(directory):
        for name in names:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except OSError:  # removed meanwhile
                pass
    return total


class DiskWatch(threading.Thread):
    """Polls the disk use of a folder every ``interval`` s; keeps the peak."""

    def __init__(self, directory: str, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.directory, self.interval = directory, interval
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, disk_used(self.directory))
            self.done.wait(self.interval)

    def stop(self) -> int:
        self.done.set()
        self.join()
        return self.peak


def backend_data(backend: str) -> Optional[Tuple[Any, Dict[str, Any]]]:
    name, _, budget = backend.partition(":")
    if name == "spillbuffer":
        return None
    if name == "chest":
        from chest import Chest

        return (Chest, {"available_memory": budget} if budget else {})
    raise ValueError(f"unknown backend {backend!r}")


def run_child(cfg: Result) -> Result:
    """One run: a fresh cluster in ``cfg["dir"]``, the workload, its figures."""
    import logging

    import dask
    import distributed

    if cfg["target"] is not None:
        dask.config.set({"distributed.worker.memory.target": cfg["target"]})
    workers_dir = os.path.join(cfg["dir"], "workers")
    os.makedirs(workers_dir, exist_ok=True)
    kwargs: Dict[str, Any] = {}
    data = backend_data(cfg["backend"])
    if data is not None:
        kwargs["data"] = data
    result: Result = {}
    disk = DiskWatch(cfg["dir"])
    disk.start()
    started = time.perf_counter()
    try:
        with distributed.LocalCluster(
            n_workers=cfg["workers"], threads_per_worker=cfg["threads"],
            memory_limit=cfg["memory_limit"], processes=True,
            dashboard_address=None, local_directory=workers_dir,
            silence_logs=logging.WARNING, **kwargs,
        ) as cluster, distributed.Client(cluster) as client:
            Report, Watch = _plugins()
            client.register_plugin(Watch())
            client.register_plugin(Report())
            stores = client.run(store_metrics)
            result["kind"] = sorted({s["kind"] for s in stores.values()})
            result["budget"] = sorted({s["budget"] for s in stores.values()
                                       if s["budget"] is not None})
            result["start_s"] = time.perf_counter() - started
            deadline = Deadline(cfg["timeout"])
            start = time.perf_counter()
            try:
                result.update(RUNS[cfg["workload"]](client, cfg, deadline))
                result["seconds"] = time.perf_counter() - start
                if not result["right"]:
                    result["error"] = f"wrong answer: {result['answer']}"
            except BaseException as e:  # KilledWorker, TimeoutError, ...
                result["seconds"] = time.perf_counter() - start
                result["error"] = f"{type(e).__name__}: {e}"[:500]
                try:  # what each worker holds now, into the run's log
                    states = client.run(store_state, on_error="ignore")
                    print(f"store states after {type(e).__name__}: "
                          f"{json.dumps(states, default=str)}", file=sys.stderr,
                          flush=True)
                except Exception as state_error:
                    print(f"no store states: {state_error!r}", file=sys.stderr)
            try:
                final = client.run(store_metrics, on_error="ignore")
                watch = client.run_on_scheduler(watch_summary)
            except Exception as e:
                final, watch = {}, {"added": [], "removed": [], "pauses": [],
                                    "reports": {}}
                result.setdefault("error", f"no figures: {type(e).__name__}: {e}")
            reports = dict(watch["reports"])
            reports.update(final)  # fresh figures of the workers still there
            for field in ("written", "read"):
                values = [r.get(field) for r in reports.values()]
                result[field] = None if None in values or not values else sum(values)
            result["restarts"] = len(watch["removed"])
            result["pauses"] = len(watch["pauses"])
            result["workers_seen"] = len(reports)
            closing = time.perf_counter()
        result["close_s"] = time.perf_counter() - closing
    except BaseException as e:
        result.setdefault("error", f"{type(e).__name__}: {e}"[:500])
    finally:
        result["peak_disk"] = disk.stop()
    return result


# -- the parent -------------------------------------------------------------------
def machine(root: str, args: argparse.Namespace) -> List[str]:
    """Lines describing the machine, the versions and the cluster."""
    import psutil

    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    df = subprocess.run(["df", "-T", root], capture_output=True, text=True)
    device, fs, *_, mount = df.stdout.splitlines()[-1].split()
    versions = []
    for package in ("chest", "dask", "distributed", "numpy", "pandas", "pyarrow"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} missing")
    target = "dask's target" if args.target is None else f"target {args.target:g}"
    return [
        f"machine: {cpu}, {psutil.cpu_count(logical=False)} cores / "
        f"{os.cpu_count()} threads, {psutil.virtual_memory().total / 2**30:.1f} GiB",
        f"python {platform.python_version()}, " + ", ".join(versions),
        f"--dir {root}: {fs} ({device} on {mount})",
        f"LocalCluster(n_workers={args.workers}, threads_per_worker={args.threads}, "
        f"memory_limit={args.memory_limit!r}, processes=True) ({target}; "
        f"rechunk: memory_limit={args.rechunk_memory_limit!r}); "
        f"{args.rounds} round(s), timeout {args.timeout:g} s",
    ]


def back_memory(nbytes: int) -> None:
    """Write to ``nbytes`` of fresh memory, then free it, in a process of its
    own (see ``peers.py``)."""
    import psutil

    nbytes = min(nbytes, psutil.virtual_memory().available // 2)
    subprocess.run([sys.executable, "-c",
                    f"import numpy; numpy.ones({nbytes // 8})"], check=True)


def files_left(directory: str) -> int:
    """Files under ``directory``, but for the lock files dask leaves in each
    ``dask-scratch-space`` folder."""
    return sum(1 for folder, _, names in os.walk(directory) for name in names
               if not (os.path.basename(folder) == "dask-scratch-space"
                       and name in ("global.lock", "purge.lock")))


def strays(group: int, wait: float = 10.0) -> List[Any]:
    """The live processes of process group ``group``, after waiting up to
    ``wait`` s for them to end."""
    import psutil

    deadline = time.monotonic() + wait
    while True:
        found = []
        for p in psutil.process_iter():
            try:
                if os.getpgid(p.pid) == group and p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
            except (OSError, psutil.Error):
                pass
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def spawn(cfg: Result, root: str, log_path: str) -> Result:
    """Run one (workload, backend) in a process group of its own; its figures
    or ``{"error": ...}``. The group is killed if it overstays."""
    if not cfg["quick"]:
        os.sync()
        back_memory(WARM_UP)
    run_dir = tempfile.mkdtemp(prefix=f"{cfg['workload']}-", dir=root)
    tmp = os.path.join(run_dir, "tmp")
    os.makedirs(tmp)
    cfg = dict(cfg, dir=run_dir)
    env = dict(os.environ, TMPDIR=tmp, PYTHONWARNINGS="default")
    command = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(cfg)]
    start = time.perf_counter()
    try:
        with open(log_path, "w") as log:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log,
                                       text=True, env=env, start_new_session=True)
            try:
                out, _ = process.communicate(timeout=cfg["timeout"] + GRACE)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
                return {"error": f"killed after {time.perf_counter() - start:.0f} s",
                        "left": files_left(run_dir)}
        try:
            result = json.loads(out.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            with open(log_path) as log:
                tail = log.read().strip().splitlines()[-1:] or ["no output"]
            result = {"error": f"exit {process.returncode}: {tail[0]}"}
        stray = strays(process.pid)
        if stray:  # processes of the run still there: not expected
            result["stray"] = [p.cmdline()[-1:] for p in stray]
            for p in stray:
                p.kill()
        result["left"] = files_left(run_dir)
        return result
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


LEVEL = re.compile(r" - (WARNING|ERROR|CRITICAL) - ")


def read_log(log_path: str) -> Result:
    """Counts of warning and error lines in a run's log, and their messages."""
    with open(log_path, errors="replace") as f:
        lines = f.read().splitlines()
    warnings, errors, chest = [], [], 0
    for line in lines:
        level = LEVEL.search(line)
        if level:
            kind = level.group(1)
            message = line[level.end():]
        elif "Warning:" in line:
            kind, message = "WARNING", line.strip()
        elif line.startswith("Traceback"):
            kind, message = "ERROR", line
        else:
            continue
        (warnings if kind == "WARNING" else errors).append(message)
        chest += "chest" in line.lower()
    return {"warn": len(warnings), "err": len(errors), "chest_lines": chest,
            "messages": [normalise(m) for m in warnings + errors],
            "tail": lines[-40:]}


def normalise(message: str) -> str:
    """A log message with its numbers, addresses and paths blanked, to count
    the same message across runs."""
    message = re.sub(r"tcp://[\d.]+:\d+", "ADDR", message)
    message = re.sub(r"/[^\s'\"]+", "PATH", message)
    message = re.sub(r"\b[0-9a-f]{8,}\b", "#", message)
    message = re.sub(r"\d+(\.\d+)?", "#", message)
    return message[:160]


def config(args: argparse.Namespace, workload: str, backend: str) -> Result:
    return {"workload": workload, "backend": backend, "quick": args.quick,
            "workers": args.workers, "threads": args.threads,
            "memory_limit": (args.rechunk_memory_limit if workload == "rechunk"
                             else args.memory_limit),
            "target": args.target,
            "timeout": args.timeout, "n": args.n, "chunk": args.chunk,
            "slab": args.slab, "rechunk_method": args.rechunk_method,
            "partitions": args.partitions, "rows": args.rows, "keys": args.keys}


def run_line(workload: str, backend: str, round_: int, r: Result) -> str:
    gb = lambda v: "-" if v is None else f"{v / GB:.2f}"  # noqa: E731
    status = "right" if "error" not in r else f"FAILED ({r['error'][:200]})"
    secs = "-" if r.get("seconds") is None else f"{r['seconds']:.1f}"
    store = ", ".join(r.get("kind", [])) or "?"
    budget = "/".join(f"{b / 1e6:.0f}" for b in r.get("budget", [])) or "?"
    return (f"  round {round_ + 1} {workload:8} {backend:12} {secs:>6} s  "
            f"[{store} {budget} MB] "
            f"start {r.get('start_s', 0):.1f} s, close {r.get('close_s', 0):.1f} s, "
            f"restarts {r.get('restarts', '-')}, pauses {r.get('pauses', '-')}, "
            f"to disk {gb(r.get('written'))} GB, from disk {gb(r.get('read'))} GB, "
            f"peak disk {gb(r.get('peak_disk'))} GB, left {r.get('left', '-')}, "
            f"log {r.get('warn', 0)} warn / {r.get('err', 0)} err"
            f"{'; processes left running (killed)' if r.get('stray') else ''}; "
            f"{r.get('answer', '')}: {status}")


def grid(rows: List[List[str]]) -> List[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join([row[0].ljust(widths[0])]
                      + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])])
            for row in rows]


def median(values: List[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def table(workload: str, title: str, runs: Dict[str, List[Result]]) -> List[str]:
    out = [f"== {workload}: {title}"]
    header = ["backend", "ok", "best s", "median s", "worst s", "restarts", "pauses",
              "to disk GB", "from disk GB", "peak disk GB", "left", "warn", "err",
              "chest"]
    rows = [header]
    errors = []
    for backend, results in runs.items():
        good = [r for r in results if "error" not in r]
        times = sorted(r["seconds"] for r in good)
        fmt = lambda v, f="{:.1f}": "-" if v is None else f.format(v)  # noqa: E731
        written = median([r["written"] for r in results if r.get("written") is not None])
        read = median([r["read"] for r in results if r.get("read") is not None])
        peak = max((r.get("peak_disk", 0) for r in results), default=0)
        rows.append([
            backend, f"{len(good)}/{len(results)}",
            fmt(times[0] if times else None), fmt(median(times)),
            fmt(times[-1] if times else None),
            str(sum(r.get("restarts", 0) for r in results)),
            str(sum(r.get("pauses", 0) for r in results)),
            fmt(None if written is None else written / GB, "{:.2f}"),
            fmt(None if read is None else read / GB, "{:.2f}"),
            f"{peak / GB:.2f}",
            str(sum(r.get("left", 0) for r in results)),
            str(sum(r.get("warn", 0) for r in results)),
            str(sum(r.get("err", 0) for r in results)),
            str(sum(r.get("chest_lines", 0) for r in results)),
        ])
        errors += [f"  {backend} round {r['round'] + 1} failed: {r['error']}"
                   for r in results if "error" in r]
    out += grid(rows) + errors
    base = [r["seconds"] for r in runs.get("spillbuffer", []) if "error" not in r]
    for backend, results in runs.items():
        if not backend.startswith("chest") or not base:
            continue
        times = [r["seconds"] for r in results if "error" not in r]
        if times:
            out.append(f"{backend} / spillbuffer time: best {min(times) / min(base):.2f}x, "
                       f"median {median(times) / median(base):.2f}x "
                       f"(<1: chest faster)")
    return out


def parse(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="dask.distributed LocalCluster workloads larger than memory, "
                    "with dask's SpillBuffer and with chest as the workers' data=.")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and a spill target of 0.05 (about a minute)")
    parser.add_argument("--only", default=",".join(WORKLOADS),
                        help="comma-separated workloads (default: all)")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="comma-separated: spillbuffer, chest, chest:SIZE "
                             "(default: spillbuffer,chest)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds over the backends (default: 2)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="threads per worker")
    parser.add_argument("--memory-limit", default="400MB", help="per worker")
    parser.add_argument("--rechunk-memory-limit", default=None,
                        help="per worker, for rechunk only (default 1GB; quick: "
                             "--memory-limit)")
    parser.add_argument("--target", type=float, default=None,
                        help="distributed.worker.memory.target for both backends "
                             "(default: dask's, 0.6)")
    parser.add_argument("--n", type=int, default=None,
                        help="arrays are N x N (default 20000; quick 3200)")
    parser.add_argument("--chunk", type=int, default=None,
                        help="array chunks are C x C (default 2000; quick 400)")
    parser.add_argument("--slab", type=int, default=None,
                        help="rechunk: (N, S) column slabs to (S, N) row slabs "
                             "(default 100; quick 50)")
    parser.add_argument("--rechunk-method", default="tasks",
                        choices=("tasks", "p2p", "auto"),
                        help="rechunk: dask's method; auto lets dask choose "
                             "(default: tasks, whose pieces go through data=)")
    parser.add_argument("--partitions", type=int, default=None,
                        help="shuffle: partitions (default 160; quick 16)")
    parser.add_argument("--rows", type=int, default=None,
                        help="shuffle: rows per partition (default 125,000; "
                             "quick 50,000)")
    parser.add_argument("--keys", type=int, default=None,
                        help="shuffle: distinct keys drawn from (default 1,000,000; "
                             "quick 20,000)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds a workload may take (default 300; quick 60)")
    parser.add_argument("--dir", default=None,
                        help="where the runs' folders go (default: the system's "
                             "temporary folder)")
    parser.add_argument("--logs", default=None,
                        help="keep every run's log (scheduler and workers) here")
    parser.add_argument("--child", default=None, help="run one configuration (JSON)")
    args = parser.parse_args(argv)
    if args.child:
        return args
    if args.rechunk_method == "auto":
        args.rechunk_method = None
    defaults = ({"n": 3200, "chunk": 400, "slab": 50, "partitions": 16, "rows": 50_000,
                 "keys": 20_000, "timeout": 60.0, "target": 0.05} if args.quick else
                {"n": 20_000, "chunk": 2000, "slab": 100, "partitions": 160, "rows": 125_000,
                 "keys": 1_000_000, "timeout": 300.0, "target": None})
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.rechunk_memory_limit is None:
        args.rechunk_memory_limit = args.memory_limit if args.quick else "1GB"
    args.only = args.only.split(",")
    args.backends = args.backends.split(",")
    unknown = set(args.only) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}; "
                     f"choose from {', '.join(WORKLOADS)}")
    for backend in args.backends:
        name, _, budget = backend.partition(":")
        if name not in BACKENDS or (budget and name != "chest"):
            parser.error(f"unknown backend {backend!r}; choose from spillbuffer, "
                         f"chest, chest:SIZE")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse(argv)
    if args.child:
        try:
            result = run_child(json.loads(args.child))
        except BaseException as e:
            result = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(result), flush=True)
        return 0

    root = tempfile.mkdtemp(prefix="cluster-bench-", dir=args.dir)
    if args.logs:
        os.makedirs(args.logs, exist_ok=True)
    titles = sizes(args)
    everything = time.perf_counter()
    messages: Dict[str, Counter] = {}
    try:
        print("\n".join(machine(root, args)), flush=True)
        for workload in args.only:
            print(f"\n-- {workload}: {titles[workload]}", flush=True)
            started = time.perf_counter()
            runs: Dict[str, List[Result]] = {b: [] for b in args.backends}
            for round_ in range(args.rounds):
                # Alternate who goes first, so that no backend always follows
                # the other's clean-up.
                order = args.backends if round_ % 2 == 0 else args.backends[::-1]
                for backend in order:
                    log_path = os.path.join(root, "run.log")
                    result = spawn(config(args, workload, backend), root, log_path)
                    log = read_log(log_path)
                    result.update({k: log[k] for k in ("warn", "err", "chest_lines")})
                    result["round"] = round_
                    messages.setdefault(backend, Counter()).update(log["messages"])
                    if args.logs:
                        shutil.copy(log_path, os.path.join(
                            args.logs, f"{workload}-{backend.replace(':', '-')}-"
                                       f"r{round_ + 1}.log"))
                    os.remove(log_path)
                    runs[backend].append(result)
                    print(run_line(workload, backend, round_, result), flush=True)
                    if "error" in result:
                        print("    last lines of its log:\n" + "\n".join(
                            f"    | {line[:300]}" for line in log["tail"]), flush=True)
            lines = table(workload, titles[workload], runs)
            lines.append(f"({time.perf_counter() - started:.0f} s in all)")
            print("\n" + "\n".join(lines), flush=True)
        print("\nlog messages (WARNING and above) over all runs, numbers blanked:")
        for backend, counter in messages.items():
            print(f"  {backend}: {sum(counter.values())} lines"
                  + ("" if counter else ", none"))
            for message, count in counter.most_common(15):
                print(f"    {count:5} x {message}")
        print(f"\n({time.perf_counter() - everything:.0f} s in all)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
