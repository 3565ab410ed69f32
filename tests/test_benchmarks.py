"""The benchmark scripts still run (on the stores the test extras install)
and check what they read back."""
from __future__ import annotations

import json
import os
import subprocess
import sys

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "benchmarks")


def run_script(name: str, *args: str, tmp_path) -> str:
    result = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, name), "--dir", str(tmp_path), *args],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_peers_quick_run_prints_every_workload(tmp_path):
    out = run_script("peers.py", "--quick", "--repeat", "1", "--backends",
                     "chest,floor,dict,pyfloor", tmp_path=tmp_path)
    for workload in ("== arrays", "== small", "== hot", "== policy"):
        assert workload in out
    for row in ("chest ", "chest:clean-first", "floor ", "dict ", "pyfloor "):
        assert row in out
    assert "chest / floor" in out and "chest / pyfloor" in out
    assert os.listdir(tmp_path) == []  # every store's folder removed


def test_small_bound_reads_back_from_each_store(tmp_path):
    out = run_script("small_bound.py", "--count", "3000", "--rounds", "1",
                     "--stores", "bare,least,chest,bare:lmdb,least:lmdb,"
                     "chest:lmdb,bare:sqlite,least:sqlite,chest:sqlite",
                     tmp_path=tmp_path)
    lines = out.splitlines()[1:]
    assert [line.split()[0] for line in lines] == [
        "bare", "least", "chest", "bare:lmdb", "least:lmdb", "chest:lmdb",
        "bare:sqlite", "least:sqlite", "chest:sqlite"]
    assert all(float(line.split()[1]) > 0 for line in lines)
    assert os.listdir(tmp_path) == []


def test_million_writes_reopens_and_reads_back(tmp_path):
    out = run_script("million.py", "--count", "3000", "--reads", "500",
                     "--stores", "chest:sqlite,chest", tmp_path=tmp_path)
    rows = {line.split()[0]: line.split() for line in out.splitlines()[-2:]}
    assert set(rows) == {"chest:sqlite", "chest"}
    # Each store's figures, unrounded (the table's 0.01 s may read 0.00):
    figures = {line.split(": ", 1)[0]: json.loads(line.split(": ", 1)[1])
               for line in out.splitlines() if ": {" in line}
    assert set(figures) == {"chest:sqlite", "chest"}
    assert all(f["reopen_s"] > 0 and f["read_kops"] > 0 for f in figures.values())
    assert os.listdir(tmp_path) == []


def test_counter_counts_and_checks_every_store_it_has(tmp_path):
    out = run_script("counter.py", "--count", "300", "--rounds", "1",
                     "--stores", "chest,chest.State", tmp_path=tmp_path)
    assert "chest.State" in out and "write_through costs" in out
    assert "error" not in out
    assert os.listdir(tmp_path) == []


def test_containers_appends_and_probes(tmp_path):
    out = run_script("containers.py", "--appends", "200", "--elements", "2000",
                     "--rounds", "1", tmp_path=tmp_path)
    assert "chest    " in out and "chest     build" in out and "set       build" in out
    assert os.listdir(tmp_path) == []
