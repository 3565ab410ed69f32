"""Journal: spilled keys survive a crash between flushes."""
from __future__ import annotations

import errno
import os
import shutil

import pytest

from conftest import files_in

from chest import Chest
from chest.journal import JOIN_BELOW, Journal, read_journal


def crash_copy(c, tmp_path, name="crashed"):
    """The chest's folder as a kill -9 would leave it now."""
    target = tmp_path / name
    shutil.copytree(c.path, target)
    return str(target)


def test_torn_last_record_is_ignored(tmp_path):
    j = Journal(str(tmp_path / ".journal"))
    j.append("a", "a", 1)
    j.append("b", "b", 2)
    j.close()
    data = (tmp_path / ".journal").read_bytes()
    (tmp_path / ".journal").write_bytes(data[:-3])
    assert read_journal(str(tmp_path / ".journal")) == [("a", "a", 1)]


def test_spilled_keys_are_recovered_after_a_crash(make_chest, tmp_path):
    c = make_chest(available_memory=0)
    c["flushed"] = 0
    c.flush()
    c["spilled"] = 1
    c[("tuple", 2)] = 2
    crashed = Chest(path=crash_copy(c, tmp_path))
    assert dict(crashed) == {"flushed": 0, "spilled": 1, ("tuple", 2): 2}
    # Recovery wrote the index: the journal is gone.
    assert ".journal" not in os.listdir(crashed.path)
    crashed.close()


def test_deleted_keys_stay_deleted_after_a_crash(make_chest, tmp_path):
    c = make_chest(available_memory=0)
    c["a"] = 1
    c["b"] = 2
    c.flush()
    del c["a"]
    crashed = Chest(path=crash_copy(c, tmp_path))
    assert dict(crashed) == {"b": 2}
    assert files_in(crashed.path) == [".keys", "b"]
    crashed.close()


def test_overwritten_and_spilled_value_wins_after_a_crash(make_chest, tmp_path):
    c = make_chest(available_memory=0)
    c["k"] = "flushed"
    c.flush()
    c["k"] = "later"
    crashed = Chest(path=crash_copy(c, tmp_path))
    assert crashed["k"] == "later"
    assert files_in(crashed.path) == [".keys", "k"]
    crashed.close()


def test_value_only_in_memory_at_the_crash_falls_back_to_flushed(make_chest, tmp_path):
    c = make_chest(available_memory=10**6)
    c["k"] = "flushed"
    c.flush()
    c["k"] = "in memory only"
    c["new"] = "in memory only"
    crashed = Chest(path=crash_copy(c, tmp_path))
    assert dict(crashed) == {"k": "flushed"}
    crashed.close()


def test_a_temporary_chest_keeps_no_journal():
    c = Chest(available_memory=0)
    c["x"] = 1
    assert ".journal" not in os.listdir(c.path)
    c.close()


def test_a_clean_close_leaves_no_journal(chest_path):
    c = Chest(path=chest_path, available_memory=10**7)
    c["big list"] = list(range(100_000))  # no fingerprint: rewritten if read
    c.close()
    c = Chest(path=chest_path, available_memory=10**7)
    assert c["big list"][-1] == 99_999
    c.close()
    assert ".journal" not in os.listdir(chest_path)


def test_a_failed_append_cuts_only_its_own_record(tmp_path, monkeypatch):
    # Two journals on one file, as two chests on one folder in one process.
    path = str(tmp_path / ".journal")
    a, b = Journal(path), Journal(path)
    a.append("a1", "a1", 1)
    b.append("b1", "b1", 1)
    b.append("b2", "b2", 1)
    write, writev = os.write, os.writev
    full = []

    def disk_full_after_3_bytes(fd, data):
        if fd != a._fd:
            return write(fd, data)
        if full:
            raise OSError(errno.ENOSPC, "No space left on device")
        full.append(fd)
        return write(fd, bytes(data[:3]))  # a short write, then no space

    def writev_disk_full_after_3_bytes(fd, buffers):
        if fd != a._fd:
            return writev(fd, buffers)
        return disk_full_after_3_bytes(fd, b"".join(buffers))

    monkeypatch.setattr(os, "write", disk_full_after_3_bytes)
    monkeypatch.setattr(os, "writev", writev_disk_full_after_3_bytes)
    try:
        with pytest.raises(OSError):
            a.append("a2", "a2", 1)
        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "writev", writev)
        b.append("b3", "b3", 1)
        assert [key for key, _, _ in read_journal(path)] == ["a1", "b1", "b2", "b3"]
    finally:
        a.close()
        b.close()


def test_offsets_of_values_are_right_alone_beside_another_and_after_a_failure(
        tmp_path, monkeypatch):
    # A journal alone on its file counts where its values start; one with
    # another journal on the same file (two chests on one folder in one
    # process) asks the system. Each must read back what it appended, also
    # once the other is closed, after a failed append, and on a file that
    # already held records when it was opened.
    path = str(tmp_path / ".journal")
    a = Journal(path)
    written = {}

    def put(journal, key, data):
        written[key] = (journal, journal.append(key, None, len(data), data=data), data)

    put(a, "a1", b"first")
    a.append("gone", None, 0)
    put(a, "a2", b"x" * 5000)  # (written with writev)
    b = Journal(path)
    put(b, "b1", b"b's")
    put(a, "a3", b"after b")
    put(b, "b2", b"after a")
    b.close()
    put(a, "a4", b"b closed")
    write = os.write

    def disk_full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(OSError):
        a.append("failed", None, 3, data=b"abc")
    monkeypatch.setattr(os, "write", write)
    put(a, "a5", b"after the failure")
    a.close()
    c = Journal(path)  # (on a file already there)
    put(c, "c1", b"reopened")
    for key, (journal, offset, data) in written.items():
        assert c.read(offset, len(data)) == data, key
    c.close()
    places = {key: place for key, place, _ in read_journal(path) if place}
    for key, (journal, offset, data) in written.items():
        assert places[key] == ("journal", offset, len(data)), key


@pytest.mark.parametrize("whole_records", [0, 2])
def test_a_torn_record_left_by_a_crash_does_not_hide_the_records_after_it(
        tmp_path, whole_records):
    # A kill -9 during a large write left a torn record at the journal's end;
    # with no whole record before it, reopening folded nothing into the
    # index (which empties the journal) and left it: the values written
    # through after it were appended behind it, and the next crash's replay
    # stopped at it. Reopened for writing, the chest cuts it off.
    path = str(tmp_path / "c")
    with Chest(path=path, write_through=True) as c:
        c["flushed"] = 1
    j = Journal(os.path.join(path, ".journal"))
    for i in range(whole_records):
        j.append(("before", i), None, 1, data=b"b")
    j.close()
    with open(os.path.join(path, ".journal"), "ab") as f:
        f.write(b"\x10\x00\x01\x00torn record")  # (claims 65,552 bytes)
    c = Chest(path=path, write_through=True)
    c["x"] = 42
    crashed = crash_copy(c, tmp_path)
    c.close()
    with Chest(path=crashed) as again:
        assert again["x"] == 42 and again["flushed"] == 1
        assert len(again) == 2 + whole_records
    with Chest(path=path) as again:
        assert again["x"] == 42


def test_threads_opening_the_journal_at_once_open_it_once(tmp_path, monkeypatch):
    # An append (under the chest's lock) and a packed engine's first use (not
    # under it) both opened the journal when it was not open: each made a
    # descriptor, and one of them was never closed.
    import threading
    import time
    j = Journal(str(tmp_path / ".journal"))
    opened = []
    real_open = os.open

    def slow_open(*args, **kwargs):
        fd = real_open(*args, **kwargs)
        opened.append(fd)
        time.sleep(0.05)  # (the other thread gets here meanwhile)
        return fd

    monkeypatch.setattr(os, "open", slow_open)
    threads = [threading.Thread(target=j.touch),
               threading.Thread(target=lambda: j.append("k", None, 1, data=b"v"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monkeypatch.setattr(os, "open", real_open)
    assert len(opened) == 1
    j.close()
    assert read_journal(j.filename)[0][0] == "k"


def test_equal_keys_of_other_types_are_recorded_as_they_are(tmp_path):
    # Records of values are remembered by key for str and int keys; keys
    # equal to those but of another type must not take their record.
    j = Journal(str(tmp_path / ".journal"))
    for key in (1, True, 1.0, (1,), (True,), "1"):
        j.append(key, None, 4, data=b"abcd")
    keys = [record[0] for record in read_journal(j.filename)]
    assert [type(k) for k in keys] == [int, bool, float, tuple, tuple, str]
    assert [type(k[0]) for k in keys[3:5]] == [int, bool]
    j.close()


@pytest.mark.parametrize("length", [0, 10, JOIN_BELOW - 100, JOIN_BELOW, 10 * JOIN_BELOW])
def test_values_kept_in_records_joined_or_not_read_back(tmp_path, length):
    # Small records are joined and written at once, large ones with writev:
    # both are read back whole, by offset and by replay, between others.
    path = str(tmp_path / ".journal")
    j = Journal(path)
    j.append("before", "before", 1)
    data = bytes(range(256)) * (length // 256) + b"v" * (length % 256)
    offset = j.append(("k", 1), None, length, data=data)
    j.append("after", None, 0)
    assert j.read(offset, length) == data
    j.close()
    records = read_journal(path)
    assert [key for key, _, _ in records] == ["before", ("k", 1), "after"]
    assert records[1][1] == ("journal", offset, length)


def test_a_value_dumped_as_no_bytes_is_read_back_with_write_through(tmp_path):
    # A dump that writes nothing for a value (here ""): its record keeps
    # zero bytes, which must still be found (they were read at offset -1).
    def dump(value, f):
        f.write(value.encode())

    def load(f):
        return f.read().decode()

    path = str(tmp_path / "c")
    c = Chest(path=path, write_through=True, dump=dump, load=load,
              available_memory=0)
    c["empty"], c["full"] = "", "text"
    assert c["empty"] == "" and c["full"] == "text"
    c.close()
    again = Chest(path=path, dump=dump, load=load)
    assert again["empty"] == "" and again["full"] == "text"
    again.close()
