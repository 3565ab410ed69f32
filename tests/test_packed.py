"""The packed engines' contract, run over every engine (SQLite, LMDB)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from chest.packed import ENGINES, engine_files, open_engine

ENGINE_NAMES = ["sqlite", "lmdb"]


@pytest.fixture(params=ENGINE_NAMES)
def name(request):
    if request.param == "lmdb":
        pytest.importorskip("lmdb")
    return request.param


def test_put_get_delete_slots(tmp_path, name):
    e = open_engine(name, str(tmp_path))
    try:
        assert list(e.slots()) == [] and e.get(1) is None and e.last_slot() == 0
        for slot in (3, 1, 2):
            e.put(slot, b"v%d" % slot * slot)
        e.put(4, b"")
        assert e.get(2) == b"v2v2" and e.get(4) == b"" and e.get(9) is None
        assert list(e.slots()) == [(1, 2), (2, 4), (3, 6), (4, 0)]
        assert list(e.slots(3)) == [(3, 6), (4, 0)] and list(e.slots(9)) == []
        assert e.last_slot() == 4
        e.delete([2, 9])
        e.delete([])
        assert e.get(2) is None and [s for s, _ in e.slots()] == [1, 3, 4]
    finally:
        e.close()
        e.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        e.get(1)


def test_put_many_in_one_commit(tmp_path, name):
    e = open_engine(name, str(tmp_path))
    try:
        e.put_many([(slot, b"%d" % slot) for slot in range(1, 1001)])
        e.put_many([])
        assert e.last_slot() == 1000 and e.get(500) == b"500"
        assert len(list(e.slots())) == 1000
    finally:
        e.close()


def test_committed_values_survive_reopening_and_kill_9(tmp_path, name):
    script = f"""
import os, signal, sys
from chest.packed import open_engine
e = open_engine({name!r}, sys.argv[1])
for slot in range(100):
    e.put(slot, bytes([slot % 256]) * slot)
os.kill(os.getpid(), signal.SIGKILL)
"""
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)])
    assert result.returncode == -9
    e = open_engine(name, str(tmp_path))
    try:
        assert [s for s, _ in e.slots()] == list(range(100))
        assert all(e.get(s) == bytes([s % 256]) * s for s in range(100))
    finally:
        e.close()


def test_a_reader_beside_the_writer(tmp_path, name):
    writer = open_engine(name, str(tmp_path))
    writer.put(1, b"first")
    reader = open_engine(name, str(tmp_path), readonly=True)
    try:
        assert reader.get(1) == b"first"
        writer.put(2, b"second")
        assert reader.get(2) == b"second"  # committed: visible to a new read
        with pytest.raises(Exception):
            reader.put(3, b"no")
    finally:
        reader.close()
        writer.close()


def test_threads_put_and_read_at_once(tmp_path, name):
    e = open_engine(name, str(tmp_path))
    errors = []

    def work(base):
        try:
            for i in range(200):
                e.put(base + i, b"x" * i)
                assert e.get(base + i) == b"x" * i
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(1000 * t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == [] and len(list(e.slots())) == 800
    finally:
        e.close()


@pytest.mark.parametrize("mode", [0o600, 0o660])
def test_files_are_made_with_the_chests_mode(tmp_path, name, mode):
    old = os.umask(0o022)  # takes the group's write bit of 0o660
    try:
        e = open_engine(name, str(tmp_path), file_mode=mode)
        e.put(1, b"x" * 10_000)  # (SQLite makes its -wal and -shm files now)
        made = [f for f in os.listdir(tmp_path) if f in engine_files(name)]
        modes = {f: oct(os.stat(tmp_path / f).st_mode & 0o777) for f in made}
        e.close()
    finally:
        os.umask(old)
    assert ENGINES[name].filename in made and len(made) >= 2, made
    assert set(modes.values()) == {oct(mode)}, modes


def test_an_unknown_engine_is_refused(tmp_path):
    with pytest.raises(ValueError, match="packed must be one of"):
        open_engine("zip", str(tmp_path))


def test_a_value_read_while_it_waits_to_be_packed_keeps_changes_in_place(tmp_path, name):
    # Evicted small values wait in a queue to be packed in one commit; one
    # read meanwhile comes back to memory, so that a change made in place
    # is kept as it is for a value in memory (the queued pickle is dropped).
    np = pytest.importorskip("numpy")
    from chest import Chest

    from chest import nbytes

    a, b = np.zeros(10), np.zeros(400)
    budget = nbytes(a) + nbytes(b) - 1
    with Chest(path=tmp_path / "c", available_memory=budget, packed=name) as c:
        c["a"] = a
        c["b"] = b  # evicts "a": queued, not yet packed
        assert "a" not in c.inmem and "a" in c.flight
        x = c["a"]
        assert c.inmem["a"] is x and "a" not in c.flight
        assert "a" not in c.flight.queued
        x[0] = 7
        assert c["a"][0] == 7
    with Chest(path=tmp_path / "c", readonly=True) as again:
        assert again["a"][0] == 7


FORKED_READERS = '''
import multiprocessing as mp, os, sys
from chest import Chest
name, path = sys.argv[1:]
c = Chest(path=path, available_memory=2000, packed=name)
for i in range(1000):
    c[i] = {"i": i}
c.flush()  # every value packed, memory empty

def read(q):
    try:
        for _ in range(3):  # (~250 reads filled LMDB's reader table before)
            for i in range(1000):
                assert c[i]["i"] == i
        again = Chest(path=path, readonly=True)  # as README says to
        assert again[5] == {"i": 5}
        again.close()
        q.put("ok")
    except Exception as e:
        q.put(repr(e))

ctx = mp.get_context("fork")
q = ctx.Queue()
children = [ctx.Process(target=read, args=(q,)) for _ in range(2)]
for p in children:
    p.start()
for i in range(1000, 1200):  # the parent writes meanwhile
    c[i] = {"i": i}
c.flush()
print(sorted(q.get() for _ in children))
for p in children:
    p.join()
print(all(c[i]["i"] == i for i in range(1200)))
c.close()
'''


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_forked_children_read_with_their_own_handle(tmp_path, name):
    # SQLite and LMDB forbid using a connection or environment across fork():
    # a child reading through its parent's LMDB environment got
    # MDB_READERS_FULL after ~250 reads, and then the parent did too.
    out = subprocess.run([sys.executable, "-c", FORKED_READERS, name,
                          str(tmp_path / "c")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["['ok', 'ok']", "True"], out.stdout


def test_a_large_flush_leaves_the_write_ahead_log_cut_back(tmp_path):
    # A flush packs every small value in memory in one commit: the log kept
    # that commit's size (17.9 MiB for 50,000 small values) until a later one.
    from chest import Chest
    from chest.packed import WAL_LIMIT
    c = Chest(path=str(tmp_path / "c"), packed="sqlite")
    for i in range(25_000):
        c[i] = os.urandom(300)
    c.flush()
    wal = tmp_path / "c" / ".packed.sqlite3-wal"
    assert not wal.exists() or wal.stat().st_size <= WAL_LIMIT
    c.clear()
    c.flush()  # (the slots deleted in one commit)
    assert not wal.exists() or wal.stat().st_size <= WAL_LIMIT
    c.close()
