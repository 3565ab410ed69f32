"""The walk that tells a whole LMDB file from one cut short, without LMDB."""
from __future__ import annotations

import os
import random
import shutil

import pytest

from chest.lmdbfile import missing_page

lmdb = pytest.importorskip("lmdb")


@pytest.fixture
def database(tmp_path):
    """An LMDB file of small, page-sized and overflowing values, changed
    over several commits (so that its free list has pages too)."""
    path = str(tmp_path / "db")
    env = lmdb.open(path, subdir=False, map_size=1 << 30, max_dbs=0)
    rng = random.Random(1)
    for _ in range(4):
        with env.begin(write=True) as txn:
            for _ in range(60):
                size = rng.choice([40, 900, 5000, 20000])
                txn.put(rng.randrange(400).to_bytes(8, "big"), os.urandom(size))
            for _ in range(30):
                txn.delete(rng.randrange(400).to_bytes(8, "big"))
    psize = env.stat()["psize"]
    env.close()
    return path, psize


def test_a_whole_file_misses_nothing(database):
    path, _ = database
    assert missing_page(path) is None


def test_every_cut_is_found(database, tmp_path):
    path, psize = database
    size = os.path.getsize(path)
    cut_file = str(tmp_path / "cut")
    found = 0
    for cut in range(2 * psize, size, psize // 3):
        shutil.copyfile(path, cut_file)
        os.truncate(cut_file, cut)
        if missing_page(cut_file) is not None:
            found += 1
            continue
        # Nothing it refers to is missing: LMDB reads every record (were a
        # page missing, this would kill the process, not fail the test).
        env = lmdb.open(cut_file, subdir=False, readonly=True, lock=False)
        with env.begin() as txn:
            assert sum(1 for _ in txn.cursor()) > 0
        env.close()
    assert found > 0
    os.truncate(cut_file, psize)  # not even the second meta page
    assert "meta" in missing_page(cut_file)


def test_a_file_that_is_not_lmdbs_is_an_error_naming_it(tmp_path):
    path = str(tmp_path / "other")
    with open(path, "wb") as f:
        f.write(b"SQLite format 3\0" + bytes(8192))
    with pytest.raises(OSError, match="not an LMDB database") as e:
        missing_page(path)
    assert e.value.filename == path


def test_a_damaged_page_is_reported_not_raised(database):
    path, psize = database
    env = lmdb.open(path, subdir=False, readonly=True, lock=False)
    pages = env.info()["last_pgno"] + 1
    env.close()
    with open(path, "r+b") as f:  # every page after the metas: garbage
        for number in range(2, pages):
            f.seek(number * psize + 8)
            f.write(bytes([0xFF]) * (psize - 8))
    assert missing_page(path) is not None
