"""The command line: ``python -m chest info / ls`` and its exit codes; verify and
repair have their own files."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import snapshot

from chest import Chest, cli
from chest.store import hashed_name


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
