"""repair: ``.keys`` rebuilt from what can be trusted, under the writer's lock."""
from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil

import pytest

from conftest import files_in, snapshot
from test_folder import (BIG, change_slots, crash_packed, damage_database,  # noqa: F401
                         engine, make_packed, slot_of, snapshot_data)

from chest import Chest, cli, folder
from chest import repair as repair_module
from chest.folder import Entry, read_index, read_packed
from chest.index import write_index_file as write_with_retired
from chest.packed import ENGINES
from chest.repair import write_index_file
from chest.names import hashed_name
from chest.store import INDEX_NAME, Store


#: A temporary file as the chest names them (chest.files.temp_name).
TMP = ".tmp.x.0123456789ab"


def test_repair_garbage_index_recovers_keys_from_file_names(sample, capsys):
    index = os.path.join(sample, INDEX_NAME)
    with open(index, "wb") as f:
        f.write(b"garbage" * 10)
    with open(os.path.join(sample, TMP), "wb") as f:  # as temp_name makes them
        f.write(b"half")
    assert cli.main(["repair", sample]) == 1  # the file of key 7 is left, keyless
    out = capsys.readouterr().out
    assert "add    ('a', 'b') (file name, file _a/b)" in out
    assert f"leave  {hashed_name(7)}: no key can be read from its name" in out
    assert f"remove {TMP}" in out
    assert "copy   .keys -> .keys.damaged" in out
    with open(os.path.join(sample, ".keys.damaged"), "rb") as f:
        assert f.read() == b"garbage" * 10
    assert not os.path.exists(os.path.join(sample, TMP))
    c = Chest(path=sample)
    try:
        assert dict(c) == {("a", "b"): "ab", ("p", "q", "r"): {"n": 1},
                           "big": list(range(1000)), "x": [1, 2, 3]}
    finally:
        c.close()
    # What is left is the file of key 7, whose hashed name says nothing.
    assert cli.main(["verify", sample]) == 1
    problems = capsys.readouterr().out.splitlines()[:-1]
    assert problems == [f"orphan: {hashed_name(7)} is a file no key refers to"]


def test_repair_crashed_chest_with_its_journal(crashed, capsys):
    assert cli.main(["repair", crashed]) == 0
    out = capsys.readouterr().out
    assert "keep   'v1' (journal, file v1)" in out
    assert "remove .old.replaced" in out
    assert "remove .journal" in out
    assert ("wrote .keys: 5 keys (1 from the index, 4 from the journal, 0 recovered "
            "from file names), 0 dropped") in out
    assert files_in(crashed) == [".keys", "_t/u", "kept", "replaced", "v1", "v2"]
    assert cli.main(["verify", "--deep", crashed]) == 0
    assert cli.main(["repair", crashed]) == 0
    assert "nothing to repair: 5 keys" in capsys.readouterr().out
    c = Chest(path=crashed)
    try:
        assert dict(c) == {"kept": "flushed", "replaced": "the new, longer value",
                           "v1": list(range(101)), "v2": list(range(102)),
                           ("t", "u"): "tuple"}
    finally:
        c.close()


def test_repair_restores_a_retired_copy(sample, capsys):
    os.rename(os.path.join(sample, "x"), os.path.join(sample, ".old.x"))
    assert cli.main(["repair", sample]) == 0
    assert "restore .old.x -> x" in capsys.readouterr().out
    c = Chest(path=sample)
    try:
        assert c["x"] == [1, 2, 3]
    finally:
        c.close()


def test_repair_drops_missing_and_damaged_values(sample, capsys):
    os.remove(os.path.join(sample, "x"))
    with open(os.path.join(sample, "_a", "b"), "r+b") as f:
        f.truncate(3)
    assert cli.main(["repair", "--quiet", sample]) == 1  # keys were dropped
    out = capsys.readouterr().out
    assert "drop   'x' (index, file x): the file is missing" in out
    assert "drop   ('a', 'b') (index, file _a/b): it does not load" in out
    assert "keep   3 keys of the index as they are" in out
    c = Chest(path=sample)
    try:
        assert sorted(map(str, c)) == ["('p', 'q', 'r')", "7", "big"]
    finally:
        c.close()


def test_repair_dry_run_changes_nothing(crashed, sample, capsys):
    with open(os.path.join(sample, INDEX_NAME), "wb") as f:
        f.write(b"garbage")
    for path, code in ((crashed, 0), (sample, 1)):  # sample would leave key 7's file
        before = snapshot(path)
        assert cli.main(["repair", "--dry-run", path]) == code
        out = capsys.readouterr().out
        assert out.startswith("dry run, nothing is changed")
        assert "would remove" in out or "would copy" in out
        assert snapshot(path) == before


def test_repair_refuses_while_this_process_writes(sample, capsys):
    before = snapshot(sample)
    c = Chest(path=sample)
    try:
        assert cli.main(["repair", sample]) == 2
    finally:
        c.close()
    assert "this process has the chest open for writing" in capsys.readouterr().err
    assert snapshot(sample) == before


def test_repair_refuses_a_chest_written_with_another_dump(tmp_path, capsys):
    path = str(tmp_path / "json")
    with Chest(path=path, available_memory=0, dump=json.dump, load=json.load,
               mode="t") as c:
        c["a"] = [1]
        c["b"] = {"x": 2}
    os.remove(os.path.join(path, "b"))
    before = snapshot(path)
    assert cli.main(["repair", path]) == 2
    assert "none of its 1 value files loads with pickle.load" in \
        capsys.readouterr().err
    assert snapshot(path) == before
    assert cli.main(["repair", "--force", path]) == 1  # its key was dropped


def test_repair_refuses_a_json_chest_whose_float_reads_as_pickle_opcodes(
        tmp_path, capsys):
    # json's "0.5" is POP, STOP and a "5": taken for a whole pickle stream,
    # it made the chest look like a pickle chest, and the rest was dropped.
    path = str(tmp_path / "json")
    with Chest(path=path, available_memory=0, dump=json.dump, load=json.load,
               mode="t") as c:
        c["x"], c["rate"], c["name"], c["two"] = [1, 2], 0.5, "str", 2.0
    os.remove(os.path.join(path, ".keys"))
    with open(os.path.join(path, ".keys"), "wb") as f:
        f.write(b"garbage")
    before = snapshot(path)
    assert cli.main(["repair", path]) == 2
    assert "none of its 4 value files loads" in capsys.readouterr().err
    assert snapshot(path) == before


def test_repair_of_a_chest_0_2_index(tmp_path, capsys):
    path = tmp_path / "old"
    path.mkdir()
    with open(path / "x", "wb") as f:
        pickle.dump("value", f, protocol=1)
    with open(path / INDEX_NAME, "wb") as f:  # chest 0.2: the user's dump
        pickle.dump([("x", str(path / "x")), ("never", str(path / "never"))], f,
                    protocol=1)
    assert cli.main(["info", str(path)]) == 0
    assert "chest 0.2 (legacy)" in capsys.readouterr().out
    assert cli.main(["repair", str(path)]) == 0
    capsys.readouterr()
    assert cli.main(["info", "--json", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["index"]["format_version"] == 1


def test_index_written_without_a_store_is_the_stores_format(tmp_path):
    entries = [Entry("x", "x", 10), Entry(("a", 1), "_a/f00", 20)]
    (tmp_path / "mine").mkdir()
    write_index_file(str(tmp_path / "mine"), entries)
    store = Store(str(tmp_path / "store"), pickle.dump, pickle.load)
    for e in entries:
        store.names[e.key], store.files[e.key] = e.name, e.size
    store.write_index([e.key for e in entries])
    with open(tmp_path / "mine" / INDEX_NAME, "rb") as a, \
            open(tmp_path / "store" / INDEX_NAME, "rb") as b:
        assert a.read() == b.read()
    assert files_in(tmp_path / "mine") == [INDEX_NAME]


# -- packed values ----------------------------------------------------------------
def reopened(path):
    """The contents of the chest at ``path`` and the engine its index names."""
    c = Chest(path=path)
    try:
        return dict(c), c.store.packed
    finally:
        c.close()


def test_repair_clean_packed_chest_changes_nothing(tmp_path, engine, capsys):
    path = make_packed(str(tmp_path / "c"), engine)
    before = snapshot_data(path)
    assert cli.main(["repair", path]) == 0
    out = capsys.readouterr().out
    assert "keep   4 keys of the index as they are" in out
    assert "nothing to repair: 4 keys" in out
    assert snapshot_data(path) == before


def test_repair_crashed_packed_chest(tmp_path, engine, capsys):
    path = crash_packed(tmp_path, engine)
    old = slot_of(path, "replaced")
    db = ENGINES[engine].filename
    before = snapshot_data(path)
    assert cli.main(["repair", "--dry-run", path]) == 0
    out = capsys.readouterr().out
    assert f"would remove slot {old[1]} of {db} (" in out
    assert "a value of key 'replaced' the chest no longer has" in out
    assert snapshot_data(path) == before

    assert cli.main(["repair", path]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"keep   'v1' \(journal, slot \d+ of {re.escape(db)}\)", out)
    assert "keep   'big' (journal, file big)" in out
    assert "remove .journal" in out
    assert ("wrote .keys: 6 keys (1 from the index, 5 from the journal, 0 recovered "
            "from file names), 0 dropped") in out
    assert old not in read_packed(path).sizes
    index = read_index(path)
    assert (index.version, index.packed) == (2, engine)  # the store's format
    assert cli.main(["verify", "--deep", path]) == 0
    assert cli.main(["repair", path]) == 0
    assert "nothing to repair: 6 keys" in capsys.readouterr().out
    assert reopened(path) == ({"kept": "flushed", "replaced": "the new, longer value",
                               "v1": list(range(101)), "v2": list(range(102)),
                               ("t", "u"): "tuple", "big": BIG}, engine)


def test_repair_drops_a_missing_slot(tmp_path, engine, capsys):
    path = make_packed(str(tmp_path / "c"), engine)
    x = slot_of(path, "x")
    change_slots(path, engine, delete=[x[1]])
    assert cli.main(["repair", path]) == 1  # a key was dropped
    out = capsys.readouterr().out
    assert (f"drop   'x' (index, slot {x[1]} of {ENGINES[engine].filename}): the slot "
            f"is missing") in out
    assert "keep   3 keys of the index as they are" in out
    assert cli.main(["verify", path]) == 0
    assert reopened(path) == ({("a", "b"): "ab", 7: "seven", "big": BIG}, engine)


def test_repair_drops_and_removes_a_slot_that_does_not_load(tmp_path, engine, capsys):
    path = make_packed(str(tmp_path / "c"), engine)
    x = slot_of(path, "x")
    change_slots(path, engine, put=[(x[1], b"\x80\x05not a pickle")])
    assert cli.main(["repair", path]) == 1
    out = capsys.readouterr().out
    assert f"drop   'x' (index, slot {x[1]} of " in out
    assert "it does not load (" in out and "the slot is removed" in out
    assert x not in read_packed(path).sizes
    assert cli.main(["verify", "--deep", path]) == 0


def test_repair_removes_orphan_slots(tmp_path, engine, capsys):
    path = make_packed(str(tmp_path / "c"), engine)
    change_slots(path, engine, put=[(99, pickle.dumps("nobody's"))])
    before = snapshot_data(path)
    assert cli.main(["repair", "--dry-run", path]) == 0
    out = capsys.readouterr().out
    assert (f"would remove slot 99 of {ENGINES[engine].filename} (") in out
    assert "no key refers to it" in out
    assert snapshot_data(path) == before
    assert cli.main(["repair", path]) == 0
    assert "would" not in capsys.readouterr().out
    assert (engine, 99) not in read_packed(path).sizes
    assert cli.main(["verify", "--deep", path]) == 0
    assert len(reopened(path)[0]) == 4


def test_repair_moves_a_damaged_database_aside(tmp_path, engine, capsys):
    path = make_packed(str(tmp_path / "c"), engine)
    db = damage_database(path, engine)
    with open(db, "rb") as f:
        damaged = f.read()
    before = snapshot_data(path)
    assert cli.main(["repair", "--dry-run", path]) == 1
    assert snapshot_data(path) == before
    capsys.readouterr()
    assert cli.main(["repair", path]) == 1
    out = capsys.readouterr().out
    name = ENGINES[engine].filename
    assert f"move   {name} -> {name}.damaged: it cannot be read (" in out
    # Nothing in it can be read (its header is garbage): each key says so.
    for key in ("'x'", r"\('a', 'b'\)", "7"):
        assert re.search(rf"drop   {key} \(index, slot \d+ of {re.escape(name)}\): "
                         rf"(slot \d+ cannot be read from the damaged|"
                         rf"\S+ cannot be opened) .*{re.escape(name)}", out), key
    assert "are dropped ('x', ('a', 'b'), 7)" in out
    assert "copy" not in out  # no fresh database: the chest makes one when it writes
    assert "1 from the index" in out and "3 dropped" in out
    with open(db + ".damaged", "rb") as f:
        assert f.read() == damaged
    assert cli.main(["verify", "--deep", path]) == 0
    c = Chest(path=path, available_memory=0)
    try:
        assert dict(c) == {"big": BIG}
        c["new"] = "small"  # the engine works again, in a new database
        c.flush()
        assert "new" in c.store.slots
    finally:
        c.close()
    assert cli.main(["verify", "--deep", path]) == 0


def test_repair_garbage_index_of_a_packed_chest(tmp_path, engine, capsys):
    path = crash_packed(tmp_path, engine)
    with open(os.path.join(path, INDEX_NAME), "wb") as f:
        f.write(b"garbage")
    assert cli.main(["repair", path]) == 1  # slots only the index named are left
    out = capsys.readouterr().out
    db = ENGINES[engine].filename
    assert f"keep   packing small values in {db}" in out
    assert re.search(r"leave  2 slots no key can be told for \(.*\): the index that "
                     r"may name them cannot be read", out)
    # The journal's keys are kept; 'kept' and the flushed 'replaced' were in the
    # index only: their slots stay until the chest is opened for writing.
    assert reopened(path) == ({"replaced": "the new, longer value",
                               "v1": list(range(101)), "v2": list(range(102)),
                               ("t", "u"): "tuple", "big": BIG}, engine)


def test_repair_refuses_without_the_engines_package(tmp_path, monkeypatch, capsys):
    path = make_packed(str(tmp_path / "c"), "sqlite")
    change_slots(path, "sqlite", put=[(99, b"x")])

    def missing(engine, path):
        raise ImportError("no such package")

    monkeypatch.setattr(folder, "open_packed", missing)
    before = snapshot(path)
    assert cli.main(["repair", path]) == 2
    assert ("cannot be read by this Python (no such package). Nothing was changed"
            in capsys.readouterr().err)
    assert snapshot(path) == before


def test_index_with_slots_written_without_a_store(tmp_path):
    entries = [Entry("x", ("sqlite", 3), 10), Entry("y", "y", 20)]
    write_index_file(str(tmp_path), entries, packed="sqlite")
    index = read_index(str(tmp_path))
    assert (index.version, index.packed) == (2, "sqlite")
    assert [(e.key, e.name, e.size) for e in index.entries] == \
        [("x", ("sqlite", 3), 10), ("y", "y", 20)]


def test_repair_keeps_slot_numbers_growing(tmp_path, engine, capsys):
    path = make_packed(str(tmp_path / "c"), engine)
    before = read_index(path)
    assert before.next_slot > max(n for _, n in read_packed(path).sizes)
    change_slots(path, engine, put=[(before.next_slot + 50, pickle.dumps("orphan"))])
    assert cli.main(["repair", path]) == 0
    capsys.readouterr()
    after = read_index(path)
    # Past the orphan it removed: no slot number is given twice.
    assert after.next_slot == before.next_slot + 51
    assert after.packed == engine and after.retired_slots == {
        (engine, before.next_slot + 50)}  # removed right after the index was written
    assert (engine, before.next_slot + 50) not in read_packed(path).sizes
    c = Chest(path=path, available_memory=0)
    try:
        c["new"] = "small"
        c.flush()
        assert c.store.slots["new"][1] >= after.next_slot
    finally:
        c.close()


def test_verify_and_repair_a_slot_the_index_retired(tmp_path, engine, capsys):
    # A writer that died right after writing its index, before removing the
    # slots the index lists as retired.
    path = make_packed(str(tmp_path / "c"), engine)
    index = read_index(path)
    change_slots(path, engine, put=[(index.next_slot, pickle.dumps("old"))])
    write_index_file(path, index.entries, packed=engine,
                     next_slot=index.next_slot + 1,
                     retired_slots=[(engine, index.next_slot)])
    assert cli.main(["verify", path]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"leftover: slot {index.next_slot} of "
                          f"{ENGINES[engine].filename} (")
    assert "a value the last flush retired" in out
    assert cli.main(["repair", path]) == 0
    out = capsys.readouterr().out
    assert f"remove slot {index.next_slot} of" in out
    assert "a value the last flush retired" in out
    assert cli.main(["verify", "--deep", path]) == 0


WRITE_THROUGH_THEN_KILL = '''
import os, signal, sys
from chest import Chest
c = Chest(path=sys.argv[1], write_through=True,
          packed=None if sys.argv[2] == "files" else sys.argv[2])
c["flushed"], c["gone"] = "F", 1
c.flush()
c["counter"] = 41
c["counter"] += 1
c["flushed"] = "F2"
del c["gone"]
os.kill(os.getpid(), signal.SIGKILL)
'''


@pytest.mark.parametrize("engine", ["files", "sqlite"])
def test_repair_keeps_the_values_a_crashed_write_through_chest_kept_in_its_journal(
        tmp_path, capsys, engine):
    # repair took a value kept in the journal for an unsafe record, dropped
    # it, brought back the deleted key and removed the journal: 0 dropped.
    import subprocess
    import sys
    path = str(tmp_path / "c")
    subprocess.run([sys.executable, "-c", WRITE_THROUGH_THEN_KILL, path, engine])
    assert cli.main(["ls", path]) == 0
    assert "'counter'" in capsys.readouterr().out
    cli.main(["verify", path])
    out = capsys.readouterr().out
    assert "unsafe" not in out and "written through" in out
    before = snapshot(path)
    assert cli.main(["repair", "--dry-run", path]) == 0
    assert "would keep   'counter' (journal" in capsys.readouterr().out
    assert snapshot(path) == before
    assert cli.main(["repair", path]) == 0
    assert "0 dropped" in capsys.readouterr().out
    assert cli.main(["verify", "--deep", path]) == 0
    c = Chest(path=path)
    try:
        assert dict(c) == {"flushed": "F2", "counter": 42}
    finally:
        c.close()


KILLED_BEFORE_A_LARGE_VALUES_RENAME = '''
import os, signal, sys
import chest.store
from chest import Chest
c = Chest(path=sys.argv[1], write_through=True,
          packed=None if sys.argv[2] == "files" else sys.argv[2])
c["k"] = "small, acknowledged"  # kept in the journal
c["other"] = 1
def killed(src, dst):  # after the large value's record, before its rename
    os.kill(os.getpid(), signal.SIGKILL)
chest.store.os.replace = killed
c["k"] = b"x" * 200_000  # (never acknowledged)
'''


@pytest.mark.parametrize("engine", ["files", "sqlite", "lmdb"])
def test_repair_keeps_a_value_the_journal_holds_before_a_record_whose_file_is_missing(
        tmp_path, capsys, engine):
    # The last record of 'k' names a file a kill -9 kept from being renamed
    # into place: replay keeps the value an earlier record holds. repair
    # wrote out the values of last records only, then an index naming the
    # journal, which it removed: the chest no longer opened.
    import subprocess
    import sys
    path = str(tmp_path / "c")
    subprocess.run([sys.executable, "-c", KILLED_BEFORE_A_LARGE_VALUES_RENAME, path, engine])
    with Chest(path=path, readonly=True) as before:
        assert before["k"] == "small, acknowledged"
    assert cli.main(["repair", path]) == 0
    assert "write  'k'" in capsys.readouterr().out
    assert cli.main(["verify", "--deep", path]) == 0
    with Chest(path=path) as c:
        assert dict(c) == {"k": "small, acknowledged", "other": 1}


@pytest.mark.parametrize("engine", ["files", "sqlite", "lmdb"])
def test_repair_gives_the_files_it_writes_the_chests_file_mode(tmp_path, capsys, engine):
    # A chest shared with a group (file_mode=0o660), killed with values kept
    # in its journal: repair wrote them, and the index, readable by its
    # owner only (0o600), and reopening it did not widen them again. Its
    # report named the values written before the chest it repairs.
    import stat
    import subprocess
    import sys
    path = str(tmp_path / "c")
    script = WRITE_THROUGH_THEN_KILL.replace("write_through=True,",
                                             "write_through=True, file_mode=0o660,")
    subprocess.run([sys.executable, "-c", script, path, engine])
    os.umask(old := os.umask(0o077))  # (a narrow umask must not narrow them)
    try:
        assert cli.main(["repair", path]) == 0
    finally:
        os.umask(old)
    out = capsys.readouterr().out
    assert out.index(f"repairing {path}") < out.index("write  'counter'")
    c = Chest(path=path, file_mode=0o660)
    try:
        assert dict(c) == {"flushed": "F2", "counter": 42}
        names = [c.key_to_filename(k) for k in c if not c.store.place(k)]
    finally:
        c.close()
    names.append(os.path.join(path, ".keys"))
    assert {n: oct(stat.S_IMODE(os.stat(n).st_mode)) for n in names} == \
        {n: "0o660" for n in names}


@pytest.mark.parametrize("engine", ["files", "sqlite", "lmdb"])
def test_repair_of_a_write_through_journal_whose_last_record_is_torn(
        tmp_path, capsys, engine):
    # repair recorded the files it wrote the journal's values to after the
    # torn record, where nothing is read: the index named journal places,
    # the journal was removed, and the chest no longer opened.
    import subprocess
    import sys
    path = str(tmp_path / "c")
    subprocess.run([sys.executable, "-c", WRITE_THROUGH_THEN_KILL, path, engine])
    journal = os.path.join(path, ".journal")
    os.truncate(journal, os.path.getsize(journal) - 1)  # the deletion is torn
    expected = {"flushed": "F2", "counter": 42, "gone": 1}
    assert dict(Chest(path=path, readonly=True).items()) == expected
    assert cli.main(["repair", path]) == 0
    assert "cut    the last" in capsys.readouterr().out
    assert cli.main(["verify", "--deep", path]) == 0
    c = Chest(path=path)
    try:
        assert dict(c) == expected
    finally:
        c.close()


# -- only the chest's own leftovers are removed --------------------------------------
#: Files a user may keep in a chest's folder, whose names start as the chest's
#: temporary and retired files do, but are not of their patterns.
USERS = [".tmp.notes", ".old.config", "sub/.tmp.draft", ".old.x.txt", ".tmp.x.1",
         "_a/.tmp.b.12"]
#: Leftovers the chest wrote: a temporary file as temp_name makes them, the
#: retired copies of files keys have.
CHESTS = [TMP, "_a/.tmp.b.0123456789ab", ".old.x", "_a/.old.b"]


def add_files(path, names):
    for name in names:
        filename = os.path.join(path, *name.split("/"))
        os.makedirs(os.path.dirname(filename), exist_ok=True)
        with open(filename, "w") as f:
            f.write(f"the user's own {name}\n")


@pytest.mark.parametrize("index", ["readable", "garbage"])
def test_repair_removes_only_the_leftovers_the_chest_wrote(sample, capsys, index):
    # repair removed every .tmp.* and .old.* file at any depth, the user's too.
    add_files(sample, USERS + CHESTS)
    if index == "garbage":
        with open(os.path.join(sample, INDEX_NAME), "wb") as f:
            f.write(b"garbage")
    cli.main(["repair", sample])
    out = capsys.readouterr().out
    # With the index lost, the keys are recovered from their files' names,
    # and nothing tells the chest's retired copies from a user's files (a
    # user's "mydata" and ".old.mydata"): they are left.
    ours = CHESTS if index == "readable" else [n for n in CHESTS if ".old." not in n]
    for name in ours:
        assert f"remove {name}\n" in out
        assert not os.path.exists(os.path.join(sample, name)), name
    for name in set(CHESTS) - set(ours):
        assert f"leave  {name}: a hidden file chest did not write, or the " \
            f"retired copy of key" in out
        assert os.path.exists(os.path.join(sample, name)), name
        os.remove(os.path.join(sample, name))  # (as the user is told to)
    for name in USERS:
        with open(os.path.join(sample, name)) as f:
            assert f.read() == f"the user's own {name}\n", name
        assert f"remove {name}\n" not in out
    assert "leave  .tmp.notes: a hidden file chest did not write" in out
    assert "leave  .old.config: a hidden file chest did not write" in out \
        or "leave  .old.config: it does not load" in out  # (index lost: a candidate)
    assert cli.main(["repair", sample]) == 1  # the user's files are left, keyless
    assert "nothing to repair" in capsys.readouterr().out
    for name in USERS:
        assert os.path.exists(os.path.join(sample, name)), name


def test_repair_removes_what_opening_for_writing_removes(sample, tmp_path):
    add_files(sample, USERS + CHESTS)
    opened = str(tmp_path / "opened")
    shutil.copytree(sample, opened)
    Chest(path=opened).close()
    assert cli.main(["repair", "--quiet", sample]) == 1  # (the user's files: left)
    left = {name for name in USERS + CHESTS
            if os.path.exists(os.path.join(sample, name))}
    assert left == set(USERS)
    assert left == {name for name in USERS + CHESTS
                    if os.path.exists(os.path.join(opened, name))}


def test_repair_removes_the_retired_copies_the_index_lists(sample, capsys):
    # A key deleted, its retired copy listed in the index the writer wrote
    # before it died: that copy is the chest's, though no key has its name.
    index = read_index(sample)
    add_files(sample, [".old.gone", ".old.kept"])
    write_with_retired(sample, [(e.key, e.name, e.size) for e in index.entries],
                       retired=[".old.gone"])
    assert cli.main(["verify", sample]) == 1
    out = capsys.readouterr().out
    assert "leftover: .old.gone (a retired value file" in out
    assert "orphan: .old.kept is a file no key refers to" in out
    assert cli.main(["repair", sample]) == 1  # .old.kept is left
    out = capsys.readouterr().out
    assert "remove .old.gone\n" in out and "leave  .old.kept: a hidden file" in out
    assert files_in(sample).count(".old.kept") == 1
    assert ".old.gone" not in files_in(sample)


# -- a damaged packed database: what can be read is kept ------------------------------
def damage_a_page(path, engine):
    """4 KiB of garbage over one page in the middle of the database (pages
    are 4 KiB in both engines), as a bad disk sector would leave it; returns
    the database's bytes after."""
    db = os.path.join(path, ENGINES[engine].filename)
    size = os.path.getsize(db)
    with open(db, "r+b") as f:
        f.seek(size // 2 // 4096 * 4096)
        f.write(random.Random(0).randbytes(4096))
    with open(db, "rb") as f:
        return f.read()


def packed_many(tmp_path, engine):
    """A crashed copy of a chest of 300 packed values (flushed) and 30 more in
    the journal only, with 3 values in files; its database has a bad page."""
    with Chest(path=str(tmp_path / "live"), available_memory=1000,
               packed=engine) as closed:  # (closed: SQLite's log goes into the file)
        for i in range(300):
            closed[f"s{i}"] = ("small", i, "x" * (i * 10))
        for i in range(3):
            closed[f"big{i}"] = b"B" * 100_000
    live = Chest(path=str(tmp_path / "live"), available_memory=1000)
    try:
        for i in range(300, 330):
            live[f"s{i}"] = ("small", i, "x" * 10)
            live.move_to_disk(f"s{i}")  # a slot, recorded in the journal only
        copy = str(tmp_path / "crashed")
        shutil.copytree(live.path, copy)  # what kill -9 would leave
    finally:
        live.close()
    damage_a_page(copy, engine)
    return copy


def readable(path):
    """key -> value of every key the chest reads (read-only), and the keys it
    cannot read."""
    c = Chest(path=path, readonly=True)
    try:
        values, unread = {}, set()
        for key in list(c):
            try:
                values[key] = c[key]
            except Exception:
                unread.add(key)
        return values, unread
    finally:
        c.close()


def test_verify_names_the_keys_a_damaged_database_loses(tmp_path, engine, capsys):
    # verify said the packed values of all the keys cannot be read.
    path = packed_many(tmp_path, engine)
    values, unread = readable(path)
    assert unread and len(values) > 250  # the damage costs a few keys only
    before = snapshot_data(path)
    for deep in ([], ["--deep"]):
        assert cli.main(["verify", *deep, path]) == 1
        lines = capsys.readouterr().out.splitlines()
        db = ENGINES[engine].filename
        assert lines[0].startswith(f"damaged: {db} cannot be read whole (")
        assert lines[0].endswith(f"the packed values of {len(unread)} of its "
                                 f"{len(unread) + len(values) - 3} keys cannot be "
                                 f"read; repair copies the others to a fresh database")
        named = {line.split("'")[1] for line in lines
                 if line.startswith("damaged: key ")}
        assert named == unread
        assert f"damaged: key {sorted(unread)[0]!r}: slot " in "\n".join(lines)
    assert snapshot_data(path) == before


def test_repair_keeps_what_a_damaged_database_still_reads(tmp_path, engine, capsys):
    # repair moved the database aside and dropped every packed key (299 of
    # 302 readable keys), though the chest read all but one of them.
    path = packed_many(tmp_path, engine)
    values, unread = readable(path)
    db = ENGINES[engine].filename
    with open(os.path.join(path, db), "rb") as f:
        damaged = f.read()
    before = snapshot_data(path)
    assert cli.main(["repair", "--dry-run", path]) == 1
    assert snapshot_data(path) == before
    assert not [n for n in os.listdir(path) if n.startswith(".tmp.")]
    capsys.readouterr()

    assert cli.main(["repair", path]) == 1  # keys were dropped
    out = capsys.readouterr().out
    dropped = {line.split("'")[1] for line in out.splitlines()
               if line.startswith("drop   ")}
    assert dropped == unread
    for key in unread:
        assert re.search(rf"drop   '{key}' \((index|journal), slot \d+ of "
                         rf"{re.escape(db)}\): slot \d+ (cannot be read from|is not "
                         rf"found in) the damaged {re.escape(db)}", out), key
    assert (f"copy   the {len(values) - 3} values of kept keys in {db} (all read and "
            f"loaded) to a fresh {db}") in out
    assert f"move   {db} -> {db}.damaged: it cannot be read (" in out
    assert f"{len(unread)} dropped" in out
    # The damaged database is kept as it was, for the user only.
    with open(os.path.join(path, db + ".damaged"), "rb") as f:
        assert f.read() == damaged
    assert not [n for n in os.listdir(path) if n.startswith(".tmp.")]
    assert cli.main(["verify", "--deep", path]) == 0
    capsys.readouterr()
    assert reopened(path) == (values, engine)
    c = Chest(path=path, available_memory=0)
    try:
        c["new"] = "small"  # the fresh database takes new values
        c.flush()
        assert c.store.slots["new"][0] == engine
    finally:
        c.close()
    assert reopened(path)[0] == {**values, "new": "small"}
    assert cli.main(["verify", "--deep", path]) == 0


def test_repair_that_cannot_make_the_fresh_database_changes_nothing(
        tmp_path, engine, monkeypatch, capsys):
    path = packed_many(tmp_path, engine)
    before = snapshot_data(path)
    made = []

    def full_disk(name, folder, **kwargs):
        made.append(folder)
        raise OSError(28, "No space left on device", folder)

    monkeypatch.setattr(repair_module, "open_engine", full_disk)
    assert cli.main(["repair", path]) == 2
    err = capsys.readouterr().err
    assert "failed copying the values that can be read from the damaged" in err
    assert "left as they were" in err
    assert made and all(not os.path.exists(f) for f in made)
    assert snapshot_data(path) == before


def test_repair_removes_a_fresh_database_it_did_not_finish(tmp_path, engine, capsys):
    path = make_packed(str(tmp_path / "c"), engine)
    folder = os.path.join(path, ".tmp.packed.0123456789ab")
    os.mkdir(folder)
    with open(os.path.join(folder, ENGINES[engine].filename), "wb") as f:
        f.write(b"half a database")
    mine = os.path.join(path, ".tmp.packed.notes")  # not the chest's
    os.mkdir(mine)
    add_files(path, [f".tmp.packed.notes/{ENGINES[engine].filename}"])
    assert cli.main(["verify", path]) == 1
    assert (f"leftover: .tmp.packed.0123456789ab/{ENGINES[engine].filename} (a packed "
            f"database repair was building when it stopped)") in capsys.readouterr().out
    assert cli.main(["repair", path]) == 1  # the user's file is left
    assert not os.path.exists(folder)
    assert os.path.exists(os.path.join(mine, ENGINES[engine].filename))


def test_repair_stopped_before_its_index_leaves_a_chest_that_reads_the_same(
        tmp_path, engine, monkeypatch, capsys):
    # The fresh database takes the damaged one's place before the new index
    # is written: with the old index (and journal) it holds every value that
    # could be read, so a repair that stops there loses nothing.
    path = packed_many(tmp_path, engine)
    values, unread = readable(path)

    def stop(*args, **kwargs):
        raise OSError(28, "No space left on device", os.path.join(path, INDEX_NAME))

    monkeypatch.setattr(repair_module, "write_index_file", stop)
    assert cli.main(["repair", path]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert os.path.exists(os.path.join(path, ENGINES[engine].filename + ".damaged"))
    assert readable(path) == (values, unread)
    monkeypatch.undo()
    assert cli.main(["repair", path]) == 1
    assert f"{len(unread)} dropped" in capsys.readouterr().out
    assert reopened(path) == (values, engine)
    assert cli.main(["verify", "--deep", path]) == 0


def test_repair_reads_a_damaged_lmdb_database_without_its_lock_file(tmp_path, capsys):
    # Without its -lock, LMDB's database is read unlocked; the lmdb package
    # refuses to open one file twice in a process, so the reader that found
    # the damage is closed before the slots are read one by one.
    pytest.importorskip("lmdb")
    path = packed_many(tmp_path, "lmdb")
    values, unread = readable(path)
    os.remove(os.path.join(path, ".packed.lmdb-lock"))
    assert cli.main(["verify", path]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert {line.split("'")[1] for line in lines
            if line.startswith("damaged: key ")} == unread
    assert cli.main(["repair", path]) == 1
    out = capsys.readouterr().out
    assert "already open" not in out
    assert f"{len(unread)} dropped" in out
    assert reopened(path) == (values, "lmdb")


@pytest.mark.parametrize("engine", ["files", "sqlite", "lmdb"])
def test_repair_refuses_values_it_may_not_open_and_changes_nothing(
        tmp_path, capsys, monkeypatch, engine):
    # A value file (or database) this user may not open is not damaged:
    # repair dropped its keys (and moved the database aside).
    path = str(tmp_path / "c")
    with Chest(path=path, available_memory=0,
               packed=None if engine == "files" else engine) as c:
        c["x"], c["y"] = [1, 2, 3], "why"
    with open(os.path.join(path, ".keys"), "wb") as f:
        f.write(b"garbage")  # something to repair
    before = snapshot(path)
    victim = os.path.join(path, "x" if engine == "files" else
                          ".packed.sqlite3" if engine == "sqlite" else ".packed.lmdb")
    real_open = os.open

    def denied(name, flags, *args, **kwargs):
        if os.fspath(name) == victim:
            raise PermissionError(13, "Permission denied", name)
        return real_open(name, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    assert cli.main(["repair", path]) == 2
    assert f"{victim} cannot be opened by this user" in capsys.readouterr().err
    monkeypatch.setattr(os, "open", real_open)
    assert snapshot(path) == before


def test_repair_leaves_a_users_old_file_beside_a_file_it_adopts(sample, capsys):
    # A user's pickle "mydata" is made a key (recovered from its name); the
    # user's ".old.mydata" was then taken for that key's retired copy.
    with open(os.path.join(sample, "mydata"), "wb") as f:
        pickle.dump({"mine": 1}, f)
    with open(os.path.join(sample, ".old.mydata"), "w") as f:
        f.write("the user's own backup\n")
    assert cli.main(["repair", sample]) == 1  # (a file is left: see its output)
    out = capsys.readouterr().out
    assert "add    'mydata'" in out and "remove .old.mydata" not in out
    assert "leave  .old.mydata" in out
    with open(os.path.join(sample, ".old.mydata")) as f:
        assert f.read() == "the user's own backup\n"


@pytest.mark.parametrize("engine", ["sqlite", "lmdb"])
def test_a_packed_chest_whose_index_was_deleted_is_a_chest_repair_will_not_empty(
        tmp_path, capsys, engine):
    # Every command called it "not a chest folder"; the chest itself says
    # to restore .keys. repair now refuses to drop the packed values whose
    # keys only the index knew, unless forced.
    path = str(tmp_path / "c")
    with Chest(path=path, available_memory=0, packed=engine) as c:
        c["small"], c["big"] = "s", list(range(20_000))
    os.remove(os.path.join(path, INDEX_NAME))
    assert cli.main(["verify", path]) == 1
    assert ".keys is missing, and may have named it" in capsys.readouterr().out
    before = snapshot(path)
    assert cli.main(["repair", path]) == 2
    assert "its .keys is missing, and 1 packed values" in capsys.readouterr().err
    assert snapshot(path) == before
    assert cli.main(["repair", "--force", path]) == 0
    c = Chest(path=path)
    try:
        assert dict(c) == {"big": list(range(20_000))}
    finally:
        c.close()


def test_repair_without_an_index_keeps_the_engine_whose_database_is_there(tmp_path, engine,
                                                                          capsys):
    # A folder a crash left without .keys (chests before this one wrote it
    # at creation): the values the journal names stay packed, and new ones
    # go to the same engine (it made a file of each, and said "files").
    import subprocess
    import sys
    path = str(tmp_path / "c")
    subprocess.run([sys.executable, "-c", f"""
import os
from chest import Chest
c = Chest(path={path!r}, available_memory=2000, packed={engine!r})
for i in range(100):
    c[i] = {{"i": i}}
os._exit(0)
"""], check=True)
    os.remove(os.path.join(path, INDEX_NAME))
    assert cli.main(["repair", path]) == 0
    assert "(the index that said so is missing)" in capsys.readouterr().out
    with Chest(path=path) as again:
        assert again.store.packed == engine and len(again) > 50
        assert all(again[k] == {"i": k} for k in again)
        again[1000] = {"i": 1000}
    assert [f for f in os.listdir(path) if not f.startswith(".")] == []
