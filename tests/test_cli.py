"""The command line: ``python -m chest info / ls`` and its exit codes; verify and
repair have their own files."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from conftest import snapshot
from test_folder import (crash_packed, damage_database, engine,  # noqa: F401
                         make_packed, slot_of)

from chest import Chest, cli
from chest.folder import read_index
from chest.packed import ENGINES
from chest.names import hashed_name


def run(*args):
    """``python -m chest ARGS`` in a real process."""
    return subprocess.run([sys.executable, "-m", "chest", *args],
                          capture_output=True, text=True, timeout=120)


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
    # 3 keys and the new value of 'replaced': changes, not keys
    assert "journal:       6 records, 4 changes not in the index" in out
    assert "the chest was not closed cleanly" in out
    assert "leftovers:     .old.replaced" in out


def test_help_of_every_command(capsys):
    for args in (["--help"], ["info", "-h"], ["ls", "-h"], ["verify", "-h"],
                 ["repair", "-h"]):
        assert cli.main(args) == 0
        assert "usage: python -m chest" in capsys.readouterr().out
    assert cli.main(["info"]) == 2  # PATH missing
    assert cli.main(["info", "--largest", "-1", "x"]) == 2


def test_info_counts_values_kept_in_the_journal_apart_from_files(tmp_path, capsys):
    # A value written through, in the journal only, was counted as a value
    # file ("2 value files" for one file and one journal record), and verify
    # gave its size twice.
    import shutil
    path = str(tmp_path / "c")
    c = Chest(path=path, write_through=True, packed=None)
    c["a"] = 1
    c.flush()
    c["b"] = 2
    crashed = str(tmp_path / "crashed")
    shutil.copytree(path, crashed)  # as a kill -9 leaves it
    c.close()
    assert cli.main(["info", crashed]) == 0
    assert "in 1 value files and 1 in the journal (written through))" in \
        capsys.readouterr().out
    cli.main(["verify", crashed])
    out = capsys.readouterr().out
    assert "key 'b' is in the journal (5 bytes at" in out and "bytes) (" not in out


# -- packed values ----------------------------------------------------------------
def test_info_and_ls_of_a_packed_chest(tmp_path, engine, capsys):
    path = make_packed(str(tmp_path / "c"), engine)
    db = ENGINES[engine].filename
    sizes = {e.key: e.size for e in read_index(path).entries}
    packed_bytes = sizes["x"] + sizes["a", "b"] + sizes[7]
    assert cli.main(["info", path]) == 0
    out = capsys.readouterr().out
    assert "format 2" in out and "keys:          4\n" in out
    assert (f"({sum(sizes.values())} bytes in 1 value files and 3 packed values)"
            in out)
    assert re.search(rf"packed: +3 values, .*, in {re.escape(db)} \(.* on disk\); new "
                     rf"small values go there\n", out)
    assert "leftovers:     none" in out
    largest = out.split("largest values (4 of 4):\n")[1].splitlines()
    assert largest[0].split() == [str(sizes["big"]), "big", "'big'"]
    x = slot_of(path, "x")
    assert [str(sizes["x"]), f"{engine}:{x[1]}", "'x'"] in [r.split() for r in largest]

    assert cli.main(["info", "--json", path]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["value_bytes"] == sum(sizes.values())
    assert info["packed"]["engine"] == engine
    assert (info["packed"]["values"], info["packed"]["bytes"]) == (3, packed_bytes)
    assert info["packed"]["files"][db]["slots"] == 3
    assert info["packed"]["files"][db]["error"] is None
    assert {"key": "'x'", "file": db, "size": sizes["x"], "slot": x[1],
            "place": f"{engine}:{x[1]}"} in info["largest"]
    assert {"key": "'big'", "file": "big", "size": sizes["big"]} in info["largest"]

    assert cli.main(["ls", "--long", path]) == 0
    rows = [line.split(maxsplit=2) for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == [str(sizes["x"]), f"{engine}:{x[1]}", "'x'"]
    assert [r[2] for r in rows] == ["'x'", "('a', 'b')", "7", "'big'"]
    assert cli.main(["ls", "--json", path]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0] == {"key": "'x'", "file": db, "size": sizes["x"], "slot": x[1],
                         "place": f"{engine}:{x[1]}"}
    assert listed[3] == {"key": "'big'", "file": "big", "size": sizes["big"]}


def test_info_and_ls_of_a_crashed_packed_chest(tmp_path, engine, capsys):
    path = crash_packed(tmp_path, engine)
    assert cli.main(["ls", path]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "'kept'", "'replaced'", "'v1'", "'v2'", "('t', 'u')", "'big'"]
    assert cli.main(["ls", "--long", path]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[2][1].startswith(f"{engine}:") and rows[5][1] == "big"
    assert cli.main(["info", path]) == 0
    out = capsys.readouterr().out
    assert "keys:          6 (4 not in the index yet)" in out
    assert "journal:       7 records, 5 changes not in the index" in out
    old = slot_of(path, "replaced")
    assert (f"leftovers:     1 slots of {ENGINES[engine].filename} no key has "
            f"({engine}:{old[1]})") in out
    assert cli.main(["info", "--json", path]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["leftovers"] == [f"{engine}:{old[1]}"]
    assert info["packed"]["values"] == 5


def test_info_and_ls_of_a_damaged_database(tmp_path, engine, capsys):
    path = make_packed(str(tmp_path / "c"), engine)
    damage_database(path, engine)
    assert cli.main(["info", path]) == 1  # (was 0: "all is well")
    out = capsys.readouterr().out
    assert re.search(rf"packed: +{re.escape(ENGINES[engine].filename)} cannot be read "
                     rf"\(.+\): the values of 3 keys cannot be read; see: python -m "
                     rf"chest verify", out)
    assert cli.main(["info", "--json", path]) == 1
    info = json.loads(capsys.readouterr().out)
    assert info["packed"]["files"][ENGINES[engine].filename]["error"]
    assert cli.main(["ls", path]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4


def test_ls_warns_when_the_journal_names_an_unreadable_database(tmp_path, capsys):
    path = crash_packed(tmp_path, "sqlite")
    damage_database(path, "sqlite")
    assert cli.main(["ls", path]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["'kept'", "'replaced'", "'big'"]
    assert captured.err.startswith("warning: .packed.sqlite3 cannot be read (")


def test_command_line_beside_a_packed_writer_in_another_process(tmp_path, engine):
    c = Chest(path=str(tmp_path / "c"), available_memory=0, packed=engine)
    try:
        c["x"] = 1
        c.flush()
        c["y"] = [2]
        info = run("info", c.path)
        ls = run("ls", "--long", c.path)
        verify = run("verify", "--deep", c.path)
        repair = run("repair", c.path)
        assert c["x"] == 1 and c["y"] == [2]
    finally:
        c.close()
    assert info.returncode == 0, info.stderr
    assert f"held by process {os.getpid()}" in info.stdout
    assert "keys:          2 (1 not in the index yet)" in info.stdout
    assert ls.returncode == 0 and f"{engine}:" in ls.stdout
    assert verify.returncode == 1 and "journal: key 'y' is in slot" in verify.stdout
    assert "Traceback" not in verify.stderr
    assert repair.returncode == 2
    result = run("verify", "--deep", c.path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 packed values" in result.stdout
