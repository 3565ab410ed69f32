"""folder: reading a chest's folder without opening it."""
from __future__ import annotations

import json
import os

import pytest

from chest import Chest
from chest.errors import FolderError
from chest.folder import (check_folder, effective_entries, key_from_name, lock_state,
                          read_index, read_journal_file, walk_files)
from chest.store import INDEX_NAME, hashed_name


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
