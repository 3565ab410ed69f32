"""The command line: ``python -m chest info / ls / verify / repair``."""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import sys

import pytest
from conftest import files_in

from chest import Chest, cli
from chest.journal import JOURNAL_NAME
from chest.store import INDEX_NAME, Store, hashed_name


def run(*args):
    """``python -m chest ARGS`` in a real process."""
    return subprocess.run([sys.executable, "-m", "chest", *args],
                          capture_output=True, text=True, timeout=120)


def snapshot(path):
    """Every file below ``path`` with its bytes."""
    found = {}
    for name in files_in(path):
        with open(os.path.join(path, name), "rb") as f:
            found[name] = f.read()
    return found


@pytest.fixture
def sample(tmp_path):
    """A closed chest with a few values, tuple keys and a hashed name."""
    path = str(tmp_path / "sample")
    with Chest(path=path, available_memory=0) as c:
        c["x"] = [1, 2, 3]
        c["big"] = list(range(1000))
        c["a", "b"] = "ab"
        c["p", "q", "r"] = {"n": 1}
        c[7] = "seven"
    return path


@pytest.fixture
def crashed(tmp_path):
    """A copy of a chest that was never closed: keys spilled since the last
    flush are only in the journal, an overwritten key left its ``.old`` file."""
    live = Chest(path=str(tmp_path / "live"), available_memory=1)
    try:
        live["kept"] = "flushed"
        live["replaced"] = "flushed value"
        live.flush()
        live["replaced"] = "the new, longer value"  # retires the flushed file to .old.
        for i in range(3):
            live[f"v{i}"] = list(range(100 + i))  # over the budget: spilled
        live["t", "u"] = "tuple"
        del live["v0"]
        copy = str(tmp_path / "crashed")
        shutil.copytree(live.path, copy)  # what kill -9 would leave
    finally:
        live.close()
    return copy


# -- end to end, in a real process ------------------------------------------------
def test_main_module_end_to_end(sample, tmp_path):
    result = run("verify", "--deep", sample)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no problems: 5 keys, 5 value files")

    os.remove(os.path.join(sample, "x"))
    result = run("verify", sample)
    assert result.returncode == 1
    assert "missing: key 'x'" in result.stdout

    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hello")
    result = run("verify", str(tmp_path / "plain"))
    assert result.returncode == 2
    assert "not a chest folder" in result.stderr

    result = run("--version")
    assert result.returncode == 0 and result.stdout.startswith("chest ")
    assert run().returncode == 2  # no command


def test_repair_refuses_while_another_process_writes(sample):
    before = snapshot(sample)
    c = Chest(path=sample)  # holds the writer's lock
    try:
        result = run("repair", sample)
        info = run("info", sample)
    finally:
        c.close()
    assert result.returncode == 2
    assert f"open for writing by process {os.getpid()}" in result.stderr
    assert info.returncode == 0
    assert f"held by process {os.getpid()}" in info.stdout
    assert snapshot(sample) == before


# -- info and ls ----------------------------------------------------------------
def test_info(sample, capsys):
    assert cli.main(["info", "--largest", "2", sample]) == 0
    out = capsys.readouterr().out
    assert "format 1" in out
    assert "keys:          5\n" in out
    assert "writer lock:   free" in out
    assert "journal:       none" in out
    largest = out.split("largest values (2 of 5):\n")[1].splitlines()
    assert largest[0].split() == [str(os.path.getsize(os.path.join(sample, "big"))),
                                  "big", "'big'"]
    assert len(largest) == 2


def test_info_json_and_lock_held_here(sample, capsys):
    c = Chest(path=sample)
    try:
        assert cli.main(["info", "--json", sample]) == 0
    finally:
        c.close()
    info = json.loads(capsys.readouterr().out)
    assert info["index"]["format_version"] == 1 and info["index"]["error"] is None
    assert info["keys"] == 5
    sizes = [e["size"] for e in info["largest"]]
    assert sizes == sorted(sizes, reverse=True)
    assert info["value_bytes"] == sum(sizes)
    assert {"key": "('a', 'b')", "file": "_a/b",
            "size": os.path.getsize(os.path.join(sample, "_a", "b"))} in info["largest"]
    assert info["writer_lock"]["held"] is True
    assert info["writer_lock"]["holder"].startswith("this process")
    assert info["journal"]["exists"] is False


def test_ls(sample, capsys):
    assert cli.main(["ls", sample]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "'x'", "'big'", "('a', 'b')", "('p', 'q', 'r')", "7"]

    assert cli.main(["ls", "--long", sample]) == 0
    lines = capsys.readouterr().out.splitlines()
    size, name, key = lines[2].split(maxsplit=2)
    assert (name, key) == ("_a/b", "('a', 'b')")
    assert int(size) == os.path.getsize(os.path.join(sample, "_a", "b"))
    assert lines[4].split()[1:] == [hashed_name(7), "7"]

    assert cli.main(["ls", "--json", sample]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["key"] for e in listed] == ["'x'", "'big'", "('a', 'b')",
                                          "('p', 'q', 'r')", "7"]
    assert listed[3]["file"] == "_p/_q/r"


def test_info_and_ls_of_a_crashed_chest_replay_the_journal(crashed, capsys):
    assert cli.main(["ls", crashed]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "'kept'", "'replaced'", "'v1'", "'v2'", "('t', 'u')"]
    assert cli.main(["info", crashed]) == 0
    out = capsys.readouterr().out
    assert "keys:          5 (3 not in the index yet)" in out
    assert "the chest was not closed cleanly" in out
    assert "leftovers:     .old.replaced" in out


def test_help_of_every_command(capsys):
    for args in (["--help"], ["info", "-h"], ["ls", "-h"], ["verify", "-h"],
                 ["repair", "-h"]):
        assert cli.main(args) == 0
        assert "usage: python -m chest" in capsys.readouterr().out
    assert cli.main(["info"]) == 2  # PATH missing
    assert cli.main(["info", "--largest", "-1", "x"]) == 2


# -- verify ---------------------------------------------------------------------
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
    with open(os.path.join(sample, ".tmp.x.1"), "wb") as f:
        f.write(b"half")
    with open(os.path.join(sample, "stray"), "wb") as f:
        f.write(b"mine")
    assert cli.main(["verify", sample]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [
        "leftover: .tmp.x.1 (a temporary file left by an interrupted write)",
        "orphan: stray is a file no key refers to"]
    assert lines[2].startswith("2 problems")


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


# -- repair ---------------------------------------------------------------------
def test_repair_garbage_index_recovers_keys_from_file_names(sample, capsys):
    index = os.path.join(sample, INDEX_NAME)
    with open(index, "wb") as f:
        f.write(b"garbage" * 10)
    with open(os.path.join(sample, ".tmp.x.1"), "wb") as f:
        f.write(b"half")
    assert cli.main(["repair", sample]) == 0
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
    assert cli.main(["repair", "--quiet", sample]) == 0
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
    for path in (crashed, sample):
        before = snapshot(path)
        assert cli.main(["repair", "--dry-run", path]) == 0
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
    assert cli.main(["repair", "--force", path]) == 0


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
    entries = [cli.Entry("x", "x", 10), cli.Entry(("a", 1), "_a/f00", 20)]
    (tmp_path / "mine").mkdir()
    cli.write_index_file(str(tmp_path / "mine"), entries)
    store = Store(str(tmp_path / "store"), pickle.dump, pickle.load)
    for e in entries:
        store.names[e.key], store.files[e.key] = e.name, e.size
    store.write_index([e.key for e in entries])
    with open(tmp_path / "mine" / INDEX_NAME, "rb") as a, \
            open(tmp_path / "store" / INDEX_NAME, "rb") as b:
        assert a.read() == b.read()
    assert files_in(tmp_path / "mine") == [INDEX_NAME]


def test_key_from_name():
    assert cli.key_from_name("x") == "x"
    assert cli.key_from_name("_a/_b/c") == ("a", "b", "c")
    assert cli.key_from_name("__a/b") == ("_a", "b")
    assert cli.key_from_name(hashed_name("abc")) is None
    assert cli.key_from_name("d" * 32) is None  # looks hashed
    for name in ("a/b", "_1/b", "x.npy", "_a/b.c", "1"):
        assert cli.key_from_name(name) is None


# -- progress -------------------------------------------------------------------
class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_only():
    tty = FakeTerminal()
    with cli.Progress(500, stream=tty) as progress:
        for _ in range(500):
            progress.advance()
    text = tty.getvalue()
    assert text.startswith("\rchecked 1/500 files")
    assert "\rchecked 500/500 files" in text
    assert text.endswith("\r")  # the line is erased
    for progress in (cli.Progress(500, stream=io.StringIO()),  # not a terminal
                     cli.Progress(500, quiet=True, stream=FakeTerminal()),
                     cli.Progress(cli.PROGRESS_THRESHOLD, stream=FakeTerminal())):
        with progress:
            progress.advance(500)
        assert progress.stream.getvalue() == ""
