"""verify: every problem of a chest's folder is reported, nothing changes."""
from __future__ import annotations

import json
import os

from chest import Chest, cli
from chest.journal import JOURNAL_NAME
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
