"""folder: reading a chest's folder without opening it."""
from __future__ import annotations

import json
import os
import pickle
import shutil

import pytest

from conftest import files_in, snapshot

from chest import Chest
from chest.errors import FolderError
from chest.folder import (PackedReader, check_folder, check_value_bytes, describe_place,
                          effective_entries, is_chest_file, journal_changes,
                          key_from_name, lock_state, place_sizes, place_text,
                          read_index, read_journal_file, read_packed, stat_size,
                          walk_files)
from chest.index import is_slot
from chest.packed import ENGINES, engine_files, open_engine
from chest.names import hashed_name
from chest.store import INDEX_NAME


def test_key_from_name():
    assert key_from_name("x") == "x"
    assert key_from_name("_a/_b/c") == ("a", "b", "c")
    assert key_from_name("__a/b") == ("_a", "b")
    assert key_from_name(hashed_name("abc")) is None
    assert key_from_name("d" * 32) is None  # looks hashed
    for name in ("a/b", "_1/b", "x.npy", "_a/b.c", "1"):
        assert key_from_name(name) is None


def test_check_folder_names_what_is_wrong(tmp_path):
    with pytest.raises(FolderError, match="no such folder"):
        check_folder(str(tmp_path / "missing"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(FolderError, match="is not a folder"):
        check_folder(str(tmp_path / "file"))
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("x")
    with pytest.raises(FolderError, match="not a chest folder"):
        check_folder(str(tmp_path / "plain"))


def test_a_damaged_index_is_reported_not_raised(sample):
    with open(os.path.join(sample, INDEX_NAME), "r+b") as f:
        f.seek(-8, os.SEEK_END)  # inside the entries, past the header
        f.write(b"\xff" * 8)
    info = read_index(sample)
    assert info.exists and not info.readable and info.entries == []
    assert os.path.join(sample, INDEX_NAME) in info.error


def test_effective_entries_replay_the_journal(crashed):
    index = read_index(crashed)
    journal = read_journal_file(crashed)
    assert journal.exists and journal.torn_bytes == 0
    entries = effective_entries(index.entries, journal.records, walk_files(crashed).get)
    assert set(entries) == {"kept", "replaced", "v1", "v2", ("t", "u")}
    assert entries["v1"].source == "journal"
    assert entries["kept"].source == "index"


def test_lock_state_sees_the_writer(tmp_path):
    c = Chest(path=str(tmp_path / "c"))
    c["x"] = 1
    c.flush()
    assert lock_state(c.path) == (True, f"this process ({os.getpid()})")
    c.close()
    assert lock_state(c.path) == (False, "free")


def test_a_chest_0_2_json_index_is_read(tmp_path):
    # chest 0.2 wrote .keys with the user's dump: a json chest has a json index.
    path = tmp_path / "old"
    (path / "a").mkdir(parents=True)
    items = [("x", "x"), (("a", "b"), "a/b")]
    for _, name in items:
        (path / name).write_text('{"v": 1}')
    (path / INDEX_NAME).write_text(json.dumps(items))
    info = read_index(str(path))
    assert info.readable and info.legacy
    assert [(e.key, e.name) for e in info.entries] == [("x", "x"), (("a", "b"), "a/b")]


# -- packed values ------------------------------------------------------------------
# Helpers shared with test_cli, test_verify and test_repair (imported from here).

@pytest.fixture(params=["sqlite", "lmdb"])
def engine(request):
    """Each packed engine (LMDB only where the lmdb package is installed)."""
    if request.param == "lmdb":
        pytest.importorskip("lmdb")
    return request.param


BIG = b"\0" * 50_000  # over packed_limit: a file of its own


def make_packed(path, engine):
    """A closed chest whose small values are packed, and one value in a file."""
    with Chest(path=path, available_memory=0, packed=engine) as c:
        c["x"] = [1, 2, 3]
        c["a", "b"] = "ab"
        c[7] = "seven"
        c["big"] = BIG
    return path


def crash_packed(tmp_path, engine):
    """A copy of a packed chest never closed (as the ``crashed`` fixture): keys
    packed since the last flush are in the journal only, and the flushed
    slot of an overwritten key is kept until a flush that did not happen."""
    live = Chest(path=str(tmp_path / "live"), available_memory=1, packed=engine)
    try:
        live["kept"] = "flushed"
        live["replaced"] = "flushed value"
        live.flush()
        live["replaced"] = "the new, longer value"  # a new slot; the old one stays
        for i in range(3):
            live[f"v{i}"] = list(range(100 + i))
        live["t", "u"] = "tuple"
        live["big"] = BIG
        del live["v0"]
        copy = str(tmp_path / "crashed")
        shutil.copytree(live.path, copy)  # what kill -9 would leave
    finally:
        live.close()
    return copy


def slot_of(path, key):
    """The place of ``key`` in the index of the chest at ``path``."""
    return {e.key: e.name for e in read_index(path).entries}[key]


def change_slots(path, engine, delete=(), put=()):
    """Delete slots and put ``(slot, bytes)`` in a closed chest's database."""
    db = open_engine(engine, path)
    try:
        db.delete(delete)
        for slot, data in put:
            db.put(slot, data)
    finally:
        db.close()


def damage_database(path, engine):
    """Write garbage over the engine's file (as test_faults does)."""
    db = os.path.join(path, ENGINES[engine].filename)
    for companion in engine_files(engine)[1:]:
        if os.path.exists(os.path.join(path, companion)):
            os.remove(os.path.join(path, companion))
    with open(db, "r+b") as f:
        f.write(b"this is not a database" * 200)
    return db


def snapshot_data(path):
    """``snapshot`` without the engines' shared memory of their readers
    (``-shm``, ``-lock``), which every reader of the database writes."""
    return {name: data for name, data in snapshot(path).items()
            if not name.endswith(("-shm", "-lock"))}


def test_places_for_humans():
    assert place_text("_a/b") == "_a/b" and place_text(("lmdb", 3)) == "lmdb:3"
    assert describe_place(("sqlite", 12)) == "slot 12 of .packed.sqlite3"
    assert describe_place("x") == "file x"
    assert place_text(("zip", 1)) == "('zip', 1)"


def test_engine_files_are_the_chests_own(tmp_path):
    for name in [".packed.sqlite3", ".packed.sqlite3-wal", ".packed.sqlite3-shm",
                 ".packed.lmdb", ".packed.lmdb-lock", ".packed.sqlite3.damaged",
                 ".packed.lmdb.damaged.1-lock"]:
        assert is_chest_file(name), name
    assert not is_chest_file(".packed.zip") and not is_chest_file("_a/.packed.lmdb")
    # A writer that died before it recorded its first packed value leaves
    # only the database: still a chest's folder.
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / ".packed.sqlite3").write_bytes(b"")
    assert check_folder(str(tmp_path / "c")) == str(tmp_path / "c")


def test_read_packed_gives_every_slot_and_changes_nothing(tmp_path, engine):
    path = make_packed(str(tmp_path / "c"), engine)
    before = snapshot_data(path)
    files_before = files_in(path)
    packed = read_packed(path)
    index = read_index(path)
    assert index.packed == engine and index.version == 2
    in_slots = {e.name: e.size for e in index.entries if is_slot(e.name)}
    assert len(in_slots) == 3 and packed.sizes == in_slots
    assert packed.errors == {} and packed.unavailable == {}
    assert packed.files[engine] >= os.path.getsize(
        os.path.join(path, ENGINES[engine].filename))
    assert snapshot_data(path) == before and files_in(path) == files_before
    # No -wal, -shm or -lock is made where there was none (no process has the
    # database open then): it is read as it is.
    for companion in engine_files(engine)[1:]:
        if os.path.exists(os.path.join(path, companion)):
            os.remove(os.path.join(path, companion))
    files_before = files_in(path)
    assert read_packed(path).sizes == in_slots
    assert snapshot(path) == before and files_in(path) == files_before
    # One dict of sizes for files and slots.
    sizes = place_sizes(walk_files(path), packed.sizes)
    assert all(sizes.get(e.name) == e.size for e in index.entries)
    size = stat_size(path, packed.sizes)
    assert size("big") == os.path.getsize(os.path.join(path, "big"))
    assert size(slot_of(path, "x")) == in_slots[slot_of(path, "x")]
    assert size((engine, 999)) is None and size((engine, 1.0)) is None
    assert stat_size(path)(slot_of(path, "x")) is None  # no slots given


def test_a_packed_value_is_checked_by_loading_its_bytes(tmp_path, engine):
    path = make_packed(str(tmp_path / "c"), engine)
    x = slot_of(path, "x")
    change_slots(path, engine, put=[(x[1], b"\x80\x05garbage")])
    with PackedReader(path) as packed:
        assert packed.check(slot_of(path, ("a", "b"))).ok
        bad = packed.check(x)
        assert not bad.ok and not bad.whole and "Error" in bad.reason
        missing = packed.check((engine, 999))
        assert not missing.ok and missing.reason == "the slot is missing"
    assert check_value_bytes(pickle.dumps({"a": 1})) == (True, True, "")
    # A whole pickle of a class this Python lacks: whole, not loaded.
    whole = check_value_bytes(b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c"
                              b"\x03nox\x94\x8c\x01C\x94\x93\x94.")
    assert not whole.ok and whole.whole


def test_a_damaged_database_is_reported_not_raised(tmp_path, engine):
    path = make_packed(str(tmp_path / "c"), engine)
    damage_database(path, engine)
    packed = read_packed(path)
    assert packed.sizes == {} and engine in packed.files
    # "file is not a database", "File is not an LMDB file"
    assert "not" in packed.errors[engine]
    with PackedReader(path) as reader:
        loaded = reader.check(slot_of(path, "x"))
    assert not loaded.ok and ENGINES[engine].filename in loaded.reason


def test_effective_entries_of_a_crashed_packed_chest(tmp_path, engine):
    path = crash_packed(tmp_path, engine)
    index = read_index(path)
    journal = read_journal_file(path)
    packed = read_packed(path)
    sizes = place_sizes(walk_files(path), packed.sizes)
    entries = effective_entries(index.entries, journal.records, sizes.get)
    assert set(entries) == {"kept", "replaced", "v1", "v2", ("t", "u"), "big"}
    assert is_slot(entries["v1"].name) and entries["v1"].source == "journal"
    assert entries["big"].name == "big"
    assert entries["replaced"].name != slot_of(path, "replaced")
    assert entries["kept"].source == "index"
    # A record naming a slot of no known engine, or not an int, is ignored.
    records = journal.records + [("kept", ("zip", 1), 5), ("kept", (engine, 1.0), 5)]
    assert effective_entries(index.entries, records, sizes.get)["kept"] == \
        entries["kept"]
    changes = journal_changes(index.entries, records, sizes.get)
    assert sum("an unsafe record, ignored" in line for line in changes) == 1  # last
