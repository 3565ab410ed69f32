"""Shared fixtures: fresh chest folders and a guard against leaked files."""
from __future__ import annotations

import gc
import os

import psutil
import pytest

from chest import Chest


@pytest.fixture(autouse=True)
def no_leaked_file_descriptors():
    """Every test closes the files it opens (checked as zict does)."""
    process = psutil.Process()
    gc.collect()
    before = process.num_fds()
    yield
    gc.collect()
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
