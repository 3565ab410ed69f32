"""benchmarks/cluster.py runs each workload on a LocalCluster with each
backend, checks the answers and leaves nothing behind."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("distributed")
pytest.importorskip("pandas")

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "benchmarks", "cluster.py")


def test_quick_run_is_right_for_every_workload_and_backend(tmp_path):
    result = subprocess.run(
        [sys.executable, SCRIPT, "--quick", "--rounds", "1", "--partitions", "8",
         "--only", "persist,shuffle", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # (rechunk is left out: each workload starts two clusters, ~8 s each)
    for workload in ("persist", "shuffle"):
        assert f"== {workload}:" in out
        for backend in ("spillbuffer", "chest"):
            assert f"{workload:8} {backend:12}" in out  # its run's line
    rows = [line.split() for line in out.splitlines()
            if re.match(r"(spillbuffer|chest) +\d+/\d+ ", line)]
    assert len(rows) == 4 and all(row[1] == "1/1" for row in rows), out
    assert out.count(": right") == 4 and "FAILED" not in out, out
    assert "chest / spillbuffer time" in out
    assert os.listdir(tmp_path) == []  # every run's folder removed


def test_store_state_tells_what_a_workers_chest_holds(tmp_path):
    # Logged when a run fails or times out (a stall): a chest's values in
    # memory, those its policy does not know, those being written.
    sys.path.insert(0, os.path.dirname(SCRIPT))
    try:
        import cluster
    finally:
        sys.path.remove(os.path.dirname(SCRIPT))
    from chest import Chest

    class Worker:
        status = "Status.paused"

        def __init__(self, data):
            self.data = data

    c = Chest(path=str(tmp_path / "c"), available_memory=10**6)
    try:
        c["a"], c["b"] = b"x" * 10, b"y" * 900_000
        c["c"] = b"z" * 900_000  # something goes to disk
        state = cluster.store_state(Worker(c))
        assert state["status"] == "Status.paused" and state["rss_mib"] > 0
        assert state["in_memory"] == len(c.inmem) >= 1
        assert state["in_memory"] + state["on_disk"] == 3
        assert state["memory_bytes"] == c.memory_usage > 0
        assert state["not_in_policy"] == [] and state["in_flight"] == 0
        assert state["types"] == {"bytes": len(c.inmem)}
        if sys.platform.startswith("linux"):  # glibc gives back what it kept
            assert 0 < state["rss_trimmed_mib"] <= state["rss_mib"] + 1
    finally:
        c.close()
