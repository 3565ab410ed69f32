"""Store: names, atomic files, retiring, the index and its recovery."""
from __future__ import annotations

import json
import os
import pickle
import struct

import pytest
from conftest import files_in

from chest import Chest
from chest.errors import IndexFileError, ValueFileError
from chest.index import INDEX_MAGIC
from chest.names import hashed_name, key_to_filename
from chest.store import Store


def make(path, **kwargs):
    return Store(str(path), pickle.dump, pickle.load, **kwargs)


def put(store, key, value):
    store.commit(key, store.write_temp(store.prepare(key), value))


def test_key_to_filename_of_the_original():
    assert key_to_filename("x") == "x"
    assert key_to_filename(("one", "two")) == "_one/two"
    assert key_to_filename(1) == hashed_name(1) != key_to_filename("1")
    assert key_to_filename(frozenset({"a", "b"})) == key_to_filename(
        frozenset({"b", "a"}))
    assert len(key_to_filename("x" * 300)) == 32


def test_write_read_and_index_roundtrip(tmp_path):
    s = make(tmp_path)
    put(s, "x", [1, 2])
    put(s, ("a", "b"), "ab")
    s.write_index(["x", ("a", "b")])
    again = make(tmp_path)
    assert again.names == {"x": "x", ("a", "b"): "_a/b"}
    assert again.read(("a", "b"))[0] == "ab"
    assert again.files["x"] == os.path.getsize(tmp_path / "x")


def test_write_failure_leaves_nothing(tmp_path):
    def dump(value, f):
        f.write(b"partial")
        raise ValueError("no")

    s = Store(str(tmp_path), dump, pickle.load)
    with pytest.raises(ValueError):
        s.write_temp(s.prepare("x"), 1)
    assert files_in(tmp_path) == []


def test_retired_file_is_restored_after_a_crash(tmp_path):
    s = make(tmp_path)
    put(s, "x", "flushed")
    s.write_index(["x"])
    s.retire("x")
    assert files_in(tmp_path) == [".keys", ".old.x"]
    again = make(tmp_path)  # as if the process had died here
    assert again.read("x")[0] == "flushed"
    assert files_in(tmp_path) == [".keys", "x"]


def test_retired_file_is_removed_by_the_next_index(tmp_path):
    s = make(tmp_path)
    put(s, "x", 1)
    s.write_index(["x"])
    s.retire("x")
    put(s, "x", 2)
    s.write_index(["x"])
    assert files_in(tmp_path) == [".keys", "x"]


def test_retired_files_of_a_crash_right_after_the_index_are_cleaned(tmp_path,
                                                                   monkeypatch):
    # The new index no longer names the deleted key: it lists the retired
    # files it is about to remove, so reopening knows them as the chest's.
    s = make(tmp_path)
    put(s, ("t", "gone"), 1)
    put(s, "kept", 2)
    s.write_index([("t", "gone"), "kept"])
    s.forget(("t", "gone"))
    monkeypatch.setattr(Store, "discard", lambda self, path: None)  # dies here
    s.write_index(["kept"])
    monkeypatch.undo()
    assert ".old.gone" in " ".join(files_in(tmp_path))
    make(tmp_path)
    assert files_in(tmp_path) == [".keys", "kept"]


def test_unindexed_file_is_deleted_not_retired(tmp_path):
    s = make(tmp_path)
    put(s, "x", 1)
    s.retire("x")
    assert files_in(tmp_path) == []


def test_temporary_files_of_a_crash_are_cleaned(tmp_path):
    s = make(tmp_path)
    put(s, ("a", "b"), 1)
    s.write_index([("a", "b")])
    for stray in [tmp_path / ".tmp.x.0123456789ab", tmp_path / "_a" / ".tmp.b.456789abcdef",
                  tmp_path / ".tmp.keys.a0a0a0a0a0a0"]:
        stray.write_bytes(b"half")
    (tmp_path / ".tmp.users-own").write_bytes(b"not a chest's temporary name")
    make(tmp_path)
    assert files_in(tmp_path) == [".keys", ".tmp.users-own", "_a/b"]


def test_forgotten_name_is_not_reused_before_the_next_index(tmp_path):
    s = make(tmp_path, key_to_filename=lambda k: "same")
    put(s, 1, "one")
    s.write_index([1])
    s.forget(1)
    assert s.prepare(2) != s.full_path("same")
    s.write_index([])
    assert s.filename(3) == s.full_path("same")


def test_names_differing_in_case_are_distinct(tmp_path):
    s = make(tmp_path)
    assert s.prepare("Key") != s.prepare("KEY")
    assert s.prepare("KEY") == s.prepare("KEY")


@pytest.mark.parametrize("damage", [
    lambda data: data[:-3],
    lambda data: data[:len(INDEX_MAGIC) + 4],
    lambda data: data[:-1] + bytes([data[-1] ^ 1]),
    lambda data: b"",
    lambda data: b"not an index at all",
])
def test_damaged_index_is_an_error_never_an_empty_chest(tmp_path, damage):
    s = make(tmp_path)
    put(s, "x", 1)
    s.write_index(["x"])
    index = tmp_path / ".keys"
    index.write_bytes(damage(index.read_bytes()))
    with pytest.raises(IndexFileError, match=str(index)):
        make(tmp_path)


def test_newer_index_version_is_refused(tmp_path):
    s = make(tmp_path)
    s.write_index([])
    index = tmp_path / ".keys"
    data = bytearray(index.read_bytes())
    struct.pack_into("<I", data, len(INDEX_MAGIC), 99)
    index.write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match="version 99 is newer"):
        make(tmp_path)


def test_legacy_json_index_turns_lists_back_into_tuples(tmp_path):
    (tmp_path / "_a").mkdir()
    (tmp_path / "_a" / "b").write_text(json.dumps(5))
    (tmp_path / ".keys").write_text(json.dumps([[["a", "b"], "_a/b"]]))
    s = Store(str(tmp_path), json.dump, json.load, mode="t")
    assert s.read(("a", "b"))[0] == 5


def test_read_errors_name_key_and_file(tmp_path):
    s = make(tmp_path)
    put(s, "x", 1)
    (tmp_path / "x").write_bytes(b"\x80\x05\x95")
    with pytest.raises(ValueFileError, match=r"'x' from .*x: UnpicklingError"):
        s.read("x")


def test_link_or_copy(tmp_path):
    a = make(tmp_path / "a")
    b = make(tmp_path / "b")
    put(a, "x", "value")
    b.commit("x", b.link_temp(a.filename("x"), b.prepare("x")))
    assert b.read("x")[0] == "value"


def test_mode_is_checked(tmp_path):
    with pytest.raises(ValueError, match="mode must be 'b'"):
        make(tmp_path, mode="x")


@pytest.mark.parametrize("entries", [
    [("x", "x")],                      # not (key, name, size)
    [("x", "../outside", 1)],          # a name that leaves the folder
    [("x", "x", "not a size")],
])
def test_malformed_index_entries_are_an_index_error(tmp_path, entries):
    import zlib
    from chest.index import HEADER, INDEX_VERSION
    payload = pickle.dumps({"entries": entries})
    (tmp_path / ".keys").write_bytes(
        INDEX_MAGIC + HEADER.pack(INDEX_VERSION, len(payload), zlib.crc32(payload))
        + payload)
    with pytest.raises(IndexFileError):
        make(tmp_path)


def test_folders_of_deleted_tuple_keys_are_removed_on_flush(tmp_path):
    c = Chest(path=str(tmp_path / "c"), available_memory=0)
    for i in range(5):
        c[(f"group{i}", "x")] = i
    c[("a", ("b", "c"))] = "deep"
    c[("kept", "y")] = "kept"
    c.flush()
    with open(tmp_path / "c" / "_group0" / "notes.txt", "w") as f:
        f.write("a user's file")  # never removed, nor its folder
    for i in range(5):
        del c[(f"group{i}", "x")]
    del c[("a", ("b", "c"))]
    c.flush()
    assert sorted(os.listdir(tmp_path / "c")) == [".keys", "_group0", "_kept"]
    c[("a", ("b", "c"))] = "again"  # its folders are made again
    c.flush()
    c.close()
    c = Chest(path=str(tmp_path / "c"))
    assert dict(c) == {("kept", "y"): "kept", ("a", ("b", "c")): "again"}
    c.close()


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 200_000])
@pytest.mark.parametrize("hint", [0, 1000])
def test_read_whole_reads_to_the_end_whatever_the_hint(tmp_path, size, hint):
    from chest.files import read_whole
    path = tmp_path / "f"
    data = os.urandom(size)
    path.write_bytes(data)
    assert read_whole(str(path), hint) == data


@pytest.mark.parametrize("name", ["sqlite", "lmdb"])
def test_threads_opening_the_packed_engine_together_share_one(tmp_path, name):
    # Values are packed and read outside the chest's lock: threads that
    # first use the engine at once must not each open one (all but one
    # would be left open, their files with them).
    if name == "lmdb":
        pytest.importorskip("lmdb")
    import threading

    store = Store(str(tmp_path), pickle.dump, pickle.load, packed=name)
    start = threading.Barrier(8)
    got = []

    def first_use() -> None:
        start.wait()
        got.append(store.engine(name))

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 8 and all(engine is got[0] for engine in got)
    store.close()


def test_a_new_chest_opens_where_its_first_index_cannot_be_written(tmp_path):
    # (Its index is written at once, naming its engine; a full disk there
    # must not keep the chest from opening, its values in memory, as before.
    # RLIMIT_FSIZE=0 stands in for a full disk: writes fail with EFBIG.)
    import subprocess
    import sys
    path = str(tmp_path / "new")
    script = f"""
import resource, signal
from chest import Chest
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))
c = Chest(path={path!r}, packed=None)
c["a"] = 1
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
c.close()
print(Chest(path={path!r})["a"])
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "1", out.stderr


def test_a_durable_chest_syncs_the_folder_its_folder_is_in(tmp_path, monkeypatch):
    import chest.store
    synced = []
    real = chest.store.sync_dir
    monkeypatch.setattr(chest.store, "sync_dir", lambda d: (synced.append(d), real(d)))
    path = tmp_path / "parent" / "c"
    c = Chest(path=str(path), durable=True)
    c["a"] = 1
    c.close()
    assert str(path.parent) in synced  # (a power loss could take the new folder away)
