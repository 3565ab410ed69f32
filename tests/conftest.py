"""Shared fixtures: fresh chest folders, sample chests (closed, crashed) and a
guard against leaked files."""
from __future__ import annotations

import gc
import os
import shutil

import psutil
import pytest

from chest import Chest


@pytest.fixture(autouse=True)
def no_leaked_file_descriptors():
    """Every test closes the files it opens (checked as zict does). The
    garbage is collected only when the count grew: a full collection costs
    ~50 ms once dask and pandas are loaded, two per test were 80 s of the
    suite."""
    process = psutil.Process()
    before = process.num_fds()
    yield
    after = process.num_fds()
    if after > before:
        gc.collect()  # files only garbage holds open are not leaks
        after = process.num_fds()
    assert after <= before, f"{after - before} file descriptor(s) leaked"


@pytest.fixture
def chest_path(tmp_path):
    """A path for a chest that does not exist yet."""
    return str(tmp_path / "chest")


@pytest.fixture
def make_chest(tmp_path):
    """Make chests in this test's folder; every one is closed afterwards."""
    made = []

    def make(name: str = "chest", **kwargs) -> Chest:
        kwargs.setdefault("path", str(tmp_path / name))
        c = Chest(**kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def files_in(path: str) -> list:
    """Every file under ``path``, relative, chest's own hidden files included."""
    found = []
    for folder, _, names in os.walk(path):
        for name in names:
            found.append(os.path.relpath(os.path.join(folder, name), path))
    return sorted(found)


def snapshot(path: str) -> dict:
    """Every file below ``path`` with its bytes."""
    found = {}
    for name in files_in(path):
        with open(os.path.join(path, name), "rb") as f:
            found[name] = f.read()
    return found


@pytest.fixture
def sample(tmp_path):
    """A closed chest with a few values, tuple keys and a hashed name."""
    path = str(tmp_path / "sample")
    with Chest(path=path, available_memory=0) as c:
        c["x"] = [1, 2, 3]
        c["big"] = list(range(1000))
        c["a", "b"] = "ab"
        c["p", "q", "r"] = {"n": 1}
        c[7] = "seven"
    return path


@pytest.fixture
def crashed(tmp_path):
    """A copy of a chest that was never closed: keys spilled since the last
    flush are only in the journal, an overwritten key left its ``.old`` file."""
    live = Chest(path=str(tmp_path / "live"), available_memory=1)
    try:
        live["kept"] = "flushed"
        live["replaced"] = "flushed value"
        live.flush()
        live["replaced"] = "the new, longer value"  # retires the flushed file to .old.
        for i in range(3):
            live[f"v{i}"] = list(range(100 + i))  # over the budget: spilled
        live["t", "u"] = "tuple"
        del live["v0"]
        copy = str(tmp_path / "crashed")
        shutil.copytree(live.path, copy)  # what kill -9 would leave
    finally:
        live.close()
    return copy


def kill_when_busy(args, delay):
    """Run ``python -c *args`` until it prints ``ready``, SIGKILL it ``delay``
    seconds later, and return what it printed by then."""
    import signal
    import subprocess
    import sys
    import time

    child = subprocess.Popen([sys.executable, "-c", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n", child.stderr.read()
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        return child.communicate()[0]
    finally:
        child.kill()
        child.wait()


def open_at_once(open_it, threads: int) -> tuple:
    """Call ``open_it()`` from ``threads`` threads at the same moment: the
    objects it returned, and how many raised ValueError."""
    import threading
    opened, refused = [], []
    start = threading.Barrier(threads)

    def run():
        start.wait()
        try:
            opened.append(open_it())
        except ValueError:
            refused.append(1)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return opened, len(refused)
