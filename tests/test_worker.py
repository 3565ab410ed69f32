"""chest.worker: what a dask.distributed worker asks of its store."""
from __future__ import annotations

import platform
import sys
import threading
import time
import types

import pytest

from chest import Chest, core, worker
from chest.stats import Stats
from chest.worker import OnDiskKeys, SpilledSize, disk_metrics, worker_budget


def test_on_disk_keys_is_a_live_view():
    keys = {"a": 0, "b": 1}
    inmem = {"a": "x"}
    view = OnDiskKeys(keys, inmem, threading.RLock())
    assert list(view) == ["b"] and len(view) == 1
    keys["c"] = 2
    inmem.pop("a")
    assert sorted(view) == ["a", "b", "c"] and "a" in view and "z" not in view


def test_metrics_have_spillbuffers_names():
    stats = Stats()
    stats.spills, stats.bytes_written, stats.reloads, stats.bytes_read = 2, 20, 1, 10
    metrics = disk_metrics(stats)
    assert metrics[("disk-write", "count")] == 2
    assert metrics[("disk-read", "bytes")] == 10
    spill = pytest.importorskip("distributed.spill")
    buffer = spill.SpillBuffer("unused", target=1)
    assert set(metrics) <= set(buffer.cumulative_metrics) | {
        ("disk-write", "count"), ("disk-write", "bytes"), ("disk-write", "seconds"),
        ("disk-read", "count"), ("disk-read", "bytes"), ("disk-read", "seconds")}


def fake_distributed(monkeypatch, folder, limit, target, spill=0.7):
    manager = types.SimpleNamespace(memory_limit=limit, memory_target_fraction=target,
                                    memory_spill_fraction=spill)
    worker = types.SimpleNamespace(local_directory=str(folder), memory_manager=manager)
    module = types.SimpleNamespace(Worker=types.SimpleNamespace(_instances=[worker]))
    monkeypatch.setitem(sys.modules, "distributed", module)


@pytest.mark.parametrize("limit, target, expected", [
    (1000, 0.6, 600),     # memory_limit x target
    (1000, False, 700),   # target off: the spill threshold
    (None, 0.6, None),    # no limit: the chest keeps its default
])
def test_the_budget_is_the_workers(monkeypatch, tmp_path, limit, target, expected):
    fake_distributed(monkeypatch, tmp_path, limit, target)
    assert worker_budget(str(tmp_path)) == expected
    assert worker_budget(str(tmp_path / "elsewhere")) is None


def test_a_chest_in_a_workers_folder_takes_its_budget(monkeypatch, tmp_path):
    fake_distributed(monkeypatch, tmp_path, 10_000, 0.5)
    c = Chest(str(tmp_path))  # as a worker calls Chest(local_directory)
    assert c.available_memory == 5000
    c.close()


def test_an_unexpected_distributed_leaves_the_default(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "distributed",
                        types.SimpleNamespace(Worker=types.SimpleNamespace()))
    assert worker_budget(str(tmp_path)) is None


def test_spilled_size_is_a_pair():
    assert SpilledSize(1, 2) == (1, 2) and SpilledSize(1, 2).disk == 2


# -- memory the allocators keep, given back when nothing is left to evict -----
class _Recorder:
    def __init__(self, fail=False):
        self.calls, self.fail = [], fail

    def __call__(self, *args):
        self.calls.append(args)
        if self.fail:
            raise RuntimeError("refused")
        return 1


def _fake_pyarrow(release):
    pool = types.SimpleNamespace(release_unused=release)
    return types.SimpleNamespace(default_memory_pool=lambda: pool)


def test_freed_memory_goes_back_from_pyarrow_and_malloc(monkeypatch):
    release, trim = _Recorder(), _Recorder()
    monkeypatch.setitem(sys.modules, "pyarrow", _fake_pyarrow(release))
    monkeypatch.setattr(worker, "_malloc_trim", lambda: trim)
    freed = worker.FreedMemory(every=3600)
    assert freed.release() is True
    assert release.calls == [()] and trim.calls == [(0,)]
    assert freed.release() is False  # within the hour: not now
    assert len(release.calls) == 1 and len(trim.calls) == 1
    freed._pending.cancel()


def test_freed_memory_asked_too_soon_is_given_back_later(monkeypatch):
    # Dropped, a request was never made again: a worker calls evict() only
    # while its store holds something, so a store emptied twice within a
    # second gave nothing back the second time.
    trim = _Recorder()
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setattr(worker, "_malloc_trim", lambda: trim)
    freed = worker.FreedMemory(every=0.2)
    assert freed.release() is True and len(trim.calls) == 1
    assert freed.release() is False and freed.release() is False  # one later
    time.sleep(0.5)
    assert len(trim.calls) == 2 and freed._pending is None


def test_freed_memory_never_raises(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", _fake_pyarrow(_Recorder(fail=True)))
    trim = _Recorder(fail=True)
    monkeypatch.setattr(worker, "_malloc_trim", lambda: trim)
    assert worker.FreedMemory(every=0).release() is True and trim.calls


def test_without_pyarrow_or_glibc_nothing_is_called(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setattr(worker, "_malloc_trim", lambda: None)
    assert worker.FreedMemory(every=0).release() is True


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_malloc_trim_is_found_on_glibc():
    assert worker._malloc_trim() is not None


@pytest.fixture
def releases(monkeypatch):
    """The calls every chest makes to give freed memory back."""
    calls = []
    monkeypatch.setattr(core, "FREED_MEMORY",
                        types.SimpleNamespace(release=lambda: calls.append(1)))
    return calls


def test_evict_gives_freed_memory_back_once_nothing_is_left(releases, tmp_path):
    calls = releases
    c = Chest(path=str(tmp_path / "c"), available_memory=10**6)
    try:
        c["a"], c["b"] = bytes(1000), bytes(1000)
        assert c.evict() > 0 and calls == []  # "b" is still in memory
        assert c.evict() > 0 and calls == [1]  # nothing left
        assert c.evict() == -1 and calls == [1, 1]
    finally:
        c.close()


def test_fast_read_while_empty_gives_freed_memory_back(releases, tmp_path):
    # A worker over its spill threshold reads `fast` and stops there if it
    # is empty: the one moment a paused worker with an empty store asks.
    calls = releases
    c = Chest(path=str(tmp_path / "c"), available_memory=10**6)
    try:
        assert not c.fast and calls == [1]
        c["a"] = bytes(1000)
        assert c.fast and calls == [1]
    finally:
        c.close()
