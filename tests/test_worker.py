"""chest.worker: what a dask.distributed worker asks of its store."""
from __future__ import annotations

import sys
import threading
import types

import pytest

from chest import Chest
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
