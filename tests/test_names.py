"""File names for keys (chest.names): suggestions, safety, and the table
that keeps the names of one folder unique."""
from __future__ import annotations

import os

import pytest

from chest.names import (MAX_NAME, NameTable, fold, hashed_name, key_to_filename,
                         safe_name)


@pytest.fixture
def table(tmp_path):
    return NameTable(str(tmp_path))


def name_of(table, key):
    return table.relative(table.prepare(key))


def test_suggestions_keep_identifiers_nest_tuples_and_hash_the_rest():
    assert key_to_filename("abc") == "abc"
    assert key_to_filename(("x", 1)) == "_x/" + hashed_name(1)
    assert key_to_filename(1) != key_to_filename("1") != key_to_filename(1.0)
    assert key_to_filename("a" * (MAX_NAME + 1)) == hashed_name("a" * (MAX_NAME + 1))


@pytest.mark.parametrize("name", ["", ".hidden", "../up", "a//b", "a/.b", "a\0b",
                                  "x" * (MAX_NAME + 1), None, 3])
def test_unsafe_names_are_refused(name):
    assert safe_name(name) is None


def test_names_differing_only_in_case_are_one(table):
    assert name_of(table, "Data") == "Data"
    assert name_of(table, "data") == hashed_name("data")
    assert fold("Data") == fold("data")


def test_a_key_never_takes_a_folder_of_another_or_a_name_over_its_folder(table):
    assert name_of(table, ("a", "b")) == "_a/b"
    assert name_of(table, "_a") == hashed_name("_a")  # the folder of ("a", "b")
    table2 = NameTable(table.folder + "2")
    assert name_of(table2, "_a") == "_a"
    assert table2.relative(table2.prepare(("a", "b"))) == hashed_name(("a", "b"))


def test_a_file_the_table_does_not_own_is_never_taken(table):
    with open(os.path.join(table.folder, "mine"), "w") as f:
        f.write("the user's")
    assert name_of(table, "mine") == hashed_name("mine")


def test_a_hashed_name_taken_gets_a_counter(tmp_path):
    table = NameTable(str(tmp_path), key_to_filename=lambda key: "same")
    assert [name_of(table, k) for k in ("k1", "k2")] == ["same", hashed_name("k2")]
    with open(table.full_path(hashed_name("k3")), "w"):
        pass
    assert name_of(table, "k3") == hashed_name("k3") + "-1"


def test_a_name_too_long_as_a_path_is_hashed(tmp_path):
    deep = tuple("p" * 150 for _ in range(40))  # ~6 kB of path
    table = NameTable(str(tmp_path))
    assert name_of(table, deep) == hashed_name(deep)


def test_a_released_name_stays_reserved_until_settled(table):
    table.prepare("x")
    table.release("x")
    assert "x" not in table.names and table.released == {"x": "x"}
    assert name_of(table, "X") == hashed_name("X")  # still taken
    assert table.relative(table.filename("x")) == "x"  # its own again if asked
    table.settle()
    assert not table.released
    assert name_of(table, "x") == "x"


def test_a_name_taken_again_before_settling_stays_claimed(table):
    table.prepare("x")
    table.release("x")
    table.prepare("x")  # written again
    table.settle()
    assert table.names == {"x": "x"}
    assert name_of(table, "X") == hashed_name("X")


def test_folders_left_empty_are_given_deepest_first(table):
    for key in [("a", "b", "c"), ("a", "d")]:
        table.prepare(key)
    table.drop(("a", "b", "c"))
    assert table.emptied() == ["_a/_b"]
    table.prepare(("a", "b", "e"))
    table.drop(("a", "b", "e"))
    table.drop(("a", "d"))
    assert table.emptied() == ["_a/_b", "_a"]
    assert table.emptied() == []  # given once


def test_claim_records_a_name_from_an_index(table):
    table.claim("k", "_x/name")
    assert table.names == {"k": "_x/name"}
    assert name_of(table, "_x") == hashed_name("_x")
    table.clear()
    assert not table.names and name_of(table, "_x") == "_x"
