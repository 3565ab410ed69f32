"""repair: ``.keys`` rebuilt from what can be trusted, under the writer's lock."""
from __future__ import annotations

import json
import os
import pickle

from conftest import files_in, snapshot

from chest import Chest, cli
from chest.folder import Entry
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
