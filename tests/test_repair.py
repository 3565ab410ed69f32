"""repair: ``.keys`` rebuilt from what can be trusted, under the writer's lock."""
from __future__ import annotations

import json
import os
import pickle
import re

import pytest

from conftest import files_in, snapshot
from test_folder import (BIG, change_slots, crash_packed, damage_database,  # noqa: F401
                         engine, make_packed, slot_of, snapshot_data)

from chest import Chest, cli, folder
from chest.folder import Entry, read_index, read_packed
from chest.packed import ENGINES
from chest.repair import write_index_file
from chest.store import INDEX_NAME, Store, hashed_name


def test_repair_garbage_index_recovers_keys_from_file_names(sample, capsys):
    index = os.path.join(sample, INDEX_NAME)
    with open(index, "wb") as f:
        f.write(b"garbage" * 10)
    with open(os.path.join(sample, ".tmp.x.1"), "wb") as f:
        f.write(b"half")
    assert cli.main(["repair", sample]) == 1  # the file of key 7 is left, keyless
    out = capsys.readouterr().out
    assert "add    ('a', 'b') (file name, file _a/b)" in out
    assert f"leave  {hashed_name(7)}: no key can be read from its name" in out
    assert "remove .tmp.x.1" in out
    assert "copy   .keys -> .keys.damaged" in out
    with open(os.path.join(sample, ".keys.damaged"), "rb") as f:
        assert f.read() == b"garbage" * 10
    assert not os.path.exists(os.path.join(sample, ".tmp.x.1"))
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
    assert f"drop   'x' (index, slot " in out and f"of {name}): {name} cannot be read" \
        in out
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
