"""verify: every problem of a chest's folder is reported, nothing changes."""
from __future__ import annotations

import json
import os
import pickle
import re

from test_folder import (change_slots, crash_packed, damage_database,  # noqa: F401
                         engine, make_packed, slot_of, snapshot_data)

from chest import Chest, cli, folder
from chest.folder import read_packed
from chest.journal import JOURNAL_NAME, Journal
from chest.packed import ENGINES, engine_files
from chest.store import INDEX_NAME


def test_verify_clean(sample, capsys):
    assert cli.main(["verify", "--deep", sample]) == 0
    out = capsys.readouterr().out
    assert out.startswith("no problems: 5 keys, 5 value files")


def test_verify_deleted_file(sample, capsys):
    os.remove(os.path.join(sample, "_a", "b"))
    assert cli.main(["verify", sample]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "missing: key ('a', 'b'): its file _a/b is missing"
    assert lines[-1].startswith(f"1 problems in {sample}")


def test_verify_truncated_file(sample, capsys):
    with open(os.path.join(sample, "big"), "r+b") as f:
        f.truncate(100)
    assert cli.main(["verify", sample]) == 1
    out = capsys.readouterr().out
    assert "size: key 'big': file big has 100 bytes, the index says" in out
    assert "damaged" not in out
    assert cli.main(["verify", "--deep", sample]) == 1
    out = capsys.readouterr().out
    assert "damaged: key 'big': file big does not load (UnpicklingError" in out


def test_verify_deep_finds_damage_of_the_same_size(sample, capsys):
    filename = os.path.join(sample, "x")
    size = os.path.getsize(filename)
    with open(filename, "wb") as f:
        f.write(b"\xff" * size)
    assert cli.main(["verify", sample]) == 0  # existence and size only
    capsys.readouterr()
    assert cli.main(["verify", "--deep", sample]) == 1
    assert "damaged: key 'x': file x does not load" in capsys.readouterr().out


def test_verify_garbage_index(sample, capsys):
    with open(os.path.join(sample, INDEX_NAME), "wb") as f:
        f.write(b"garbage" * 10)
    assert cli.main(["verify", sample]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("index unreadable: cannot read the chest index")
    assert "orphan: _a/b is a file no key refers to" in lines
    assert "orphan: x is a file no key refers to" in lines


def test_verify_checksum_mismatch(sample, capsys):
    filename = os.path.join(sample, INDEX_NAME)
    with open(filename, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    assert cli.main(["verify", sample]) == 1
    assert "checksum mismatch" in capsys.readouterr().out


def test_verify_leftover_and_orphan(sample, capsys):
    with open(os.path.join(sample, ".tmp.x.0123456789ab"), "wb") as f:
        f.write(b"half")  # as chest.files.temp_name names them
    with open(os.path.join(sample, "stray"), "wb") as f:
        f.write(b"mine")
    assert cli.main(["verify", sample]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [
        "leftover: .tmp.x.0123456789ab (a temporary file left by an interrupted "
        "write)",
        "orphan: stray is a file no key refers to"]
    assert lines[2].startswith("2 problems")


def test_verify_tells_a_users_dot_files_from_the_chests_leftovers(sample, capsys):
    # Only names the chest makes are its leftovers (what repair, or opening
    # the chest for writing, removes); a user's .tmp.notes is not one.
    os.makedirs(os.path.join(sample, "sub"))
    for name in (".tmp.notes", ".old.config", "sub/.tmp.draft", ".old.x.txt",
                 ".old.x", "_a/.old.b"):
        with open(os.path.join(sample, name), "w") as f:
            f.write("mine")
    assert cli.main(["verify", sample]) == 1
    lines = capsys.readouterr().out.splitlines()[:-1]
    assert sorted(lines) == sorted([
        "orphan: .tmp.notes is a file no key refers to",
        "orphan: .old.config is a file no key refers to",
        "orphan: sub/.tmp.draft is a file no key refers to",
        "orphan: .old.x.txt is a file no key refers to",
        # Retired copies of files keys have: the chest's.
        "leftover: .old.x (a retired value file, kept until a flush that did not "
        "happen)",
        "leftover: _a/.old.b (a retired value file, kept until a flush that did not "
        "happen)"])


def test_verify_crashed_chest(crashed, capsys):
    with open(os.path.join(crashed, JOURNAL_NAME), "ab") as f:
        f.write(b"\x10\x00\x00")  # a torn record
    assert cli.main(["verify", "--deep", crashed]) == 1
    out = capsys.readouterr().out
    assert "journal: key 'v1' is in file v1" in out and "not in the index" in out
    assert "journal: key ('t', 'u') is in file _t/u" in out
    assert "journal: key 'replaced' is in file replaced" in out
    assert "'v0'" not in out  # written and deleted since the index: nothing to say
    assert "journal: the last 3 bytes of .journal are a torn" in out
    assert "leftover: .old.replaced" in out


def test_verify_not_a_chest(tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "data.csv").write_text("1,2\n")
    assert cli.main(["verify", str(tmp_path / "plain")]) == 2
    assert "is not a chest folder" in capsys.readouterr().err
    assert cli.main(["verify", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert cli.main(["verify", str(tmp_path / "plain" / "data.csv")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_an_empty_chest_folder_is_clean(tmp_path, capsys):
    path = str(tmp_path / "empty")
    Chest(path=path).close()  # nothing written: an empty folder
    assert cli.main(["verify", path]) == 0
    assert cli.main(["ls", path]) == 0
    assert cli.main(["repair", path]) == 0
    assert "nothing to repair: 0 keys" in capsys.readouterr().out


def test_verify_deep_of_a_json_chest_says_it_checks_pickles_only(tmp_path, capsys):
    path = str(tmp_path / "json")
    with Chest(path=path, dump=json.dump, load=json.load, mode="t",
               available_memory=0) as c:
        for i in range(3):
            c[f"k{i}"] = [i]
    assert cli.main(["verify", path]) == 0
    capsys.readouterr()
    assert cli.main(["verify", "--deep", path]) == 1
    out = capsys.readouterr().out
    assert "none of the 3 value files loads with pickle.load" in out
    assert "damaged" not in out  # the files are whole: they are json


# -- packed values ----------------------------------------------------------------
def test_verify_clean_packed_chest(tmp_path, engine, capsys):
    path = make_packed(str(tmp_path / "c"), engine)
    before = snapshot_data(path)
    assert cli.main(["verify", "--deep", path]) == 0
    out = capsys.readouterr().out
    assert out.startswith("no problems: 4 keys, 1 value files")
    assert ", 3 packed values (" in out
    assert snapshot_data(path) == before


def test_verify_crashed_packed_chest(tmp_path, engine, capsys):
    path = crash_packed(tmp_path, engine)
    db = ENGINES[engine].filename
    assert cli.main(["verify", "--deep", path]) == 1
    out = capsys.readouterr().out
    assert re.search(rf"journal: key 'v1' is in slot \d+ of {re.escape(db)} "
                     rf"\(\d+ bytes\) but not in the index", out)
    assert re.search(rf"journal: key 'replaced' is in slot \d+ of {re.escape(db)} .*; "
                     rf"the index says {engine}:\d+", out)
    old = slot_of(path, "replaced")[1]
    assert (f"leftover: slot {old} of {db} (" in out and
            "(an older value of key 'replaced', kept until a flush" in out)
    assert "'v0'" not in out and "damaged" not in out and "orphan" not in out


def test_verify_missing_slot(tmp_path, engine, capsys):
    path = make_packed(str(tmp_path / "c"), engine)
    x = slot_of(path, "x")
    change_slots(path, engine, delete=[x[1]])
    assert cli.main(["verify", path]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (f"missing: key 'x': its slot {x[1]} of "
                        f"{ENGINES[engine].filename} is missing")
    assert lines[-1].startswith("1 problems")


def test_verify_orphan_slot(tmp_path, engine, capsys):
    path = make_packed(str(tmp_path / "c"), engine)
    change_slots(path, engine, put=[(99, pickle.dumps("nobody's"))])
    assert cli.main(["verify", path]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"orphan: slot 99 of {ENGINES[engine].filename} "
                               f"(")
    assert "is a slot no key refers to" in lines[0]
    assert lines[-1].startswith("1 problems")


def test_verify_slot_of_another_size_or_damaged(tmp_path, engine, capsys):
    path = make_packed(str(tmp_path / "c"), engine)
    x, ab = slot_of(path, "x"), slot_of(path, ("a", "b"))
    size = read_packed(path).sizes[ab]
    change_slots(path, engine, put=[(x[1], b"\x80short"), (ab[1], b"\xff" * size)])
    db = ENGINES[engine].filename
    assert cli.main(["verify", path]) == 1  # sizes only
    out = capsys.readouterr().out
    assert f"size: key 'x': slot {x[1]} of {db} has 6 bytes, the index says" in out
    assert "('a', 'b')" not in out
    assert cli.main(["verify", "--deep", path]) == 1
    out = capsys.readouterr().out
    assert f"damaged: key ('a', 'b'): slot {ab[1]} of {db} does not load (" in out
    assert f"damaged: key 'x': slot {x[1]} of {db} does not load (" in out


def test_verify_damaged_database_is_one_problem(tmp_path, engine, capsys):
    path = make_packed(str(tmp_path / "c"), engine)
    damage_database(path, engine)
    assert cli.main(["verify", "--deep", path]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"damaged: {ENGINES[engine].filename} cannot be read (")
    assert lines[0].endswith("the packed values of 3 keys in the index cannot be read")
    assert lines[1].startswith("1 problems") and "1 value files" in lines[1]


def test_verify_missing_database(tmp_path, engine, capsys):
    path = make_packed(str(tmp_path / "c"), engine)
    for name in engine_files(engine):
        if os.path.exists(os.path.join(path, name)):
            os.remove(os.path.join(path, name))
    assert cli.main(["verify", path]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (f"missing: {ENGINES[engine].filename} is missing: the packed "
                        f"values of 3 keys ('x', ('a', 'b'), 7) are lost")
    assert len(lines) == 2


def test_verify_unsafe_place_in_the_journal(tmp_path, capsys):
    path = make_packed(str(tmp_path / "c"), "sqlite")
    journal = Journal(os.path.join(path, JOURNAL_NAME))
    journal.append("x", ("zip", 3), 10)
    journal.append("y", ("sqlite", -1), 10)
    journal.close()
    assert cli.main(["verify", path]) == 1
    out = capsys.readouterr().out
    assert ("journal: key 'x' was written to place ('zip', 3), which is neither a file "
            "name nor a slot of a known engine (an unsafe record, ignored)") in out
    assert "journal: key 'y' was written to place ('sqlite', -1)" in out


def test_verify_without_the_engines_package(tmp_path, monkeypatch, capsys):
    path = make_packed(str(tmp_path / "c"), "sqlite")

    def missing(engine, path):
        raise ImportError("packed='sqlite' needs a package this Python lacks")

    monkeypatch.setattr(folder, "open_packed", missing)
    assert cli.main(["verify", path]) == 1
    out = capsys.readouterr().out
    assert out.startswith("unchecked: .packed.sqlite3 cannot be read by this Python "
                          "(packed='sqlite' needs a package this Python lacks): the "
                          "packed values of 3 keys are not checked\n")
    assert "missing" not in out


def test_verify_beside_a_packed_writer_in_this_process(tmp_path, engine, capsys):
    c = Chest(path=str(tmp_path / "c"), available_memory=0, packed=engine)
    try:
        c["x"] = 1
        c.flush()
        c["y"] = 2  # in the journal only
        assert cli.main(["verify", c.path]) == 1
        out = capsys.readouterr().out
        assert out.startswith("note: the chest is open for writing by this process")
        assert "journal: key 'y' is in slot" in out
        assert c["x"] == 1 and c["y"] == 2
    finally:
        c.close()
    assert cli.main(["verify", "--deep", c.path]) == 0


def test_deep_verify_reads_the_journals_values_from_the_bytes_it_read(
        tmp_path, monkeypatch, capsys):
    # A writer beside verify folded its journal into the index between
    # verify's reading of the records and of the values kept in it:
    # FileNotFoundError (or, with a new journal, another record's bytes).
    import chest.verify
    path = str(tmp_path / "c")
    c = Chest(path=path, write_through=True)
    try:
        c["a"], c["b"] = 1, 2  # kept in the journal
        walk_files = chest.verify.walk_files

        def walk_then_the_writer_flushes(folder):
            found = walk_files(folder)
            c.flush()
            c["a"] = "x" * 40  # a new journal, other bytes at those offsets
            return found

        monkeypatch.setattr(chest.verify, "walk_files", walk_then_the_writer_flushes)
        assert cli.main(["verify", "--deep", "-q", path]) in (0, 1)
        out = capsys.readouterr().out
        assert "does not load" not in out and "loads with pickle" not in out
    finally:
        c.close()
