"""Chest: the dict contract, the budget, files, reopening, closing, update."""
from __future__ import annotations

import errno
import gc
import json
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest
from conftest import files_in, open_at_once
from mapping_contract import check_mapping

import chest.store
import chest.valueio
from chest import Chest, ChestWarning, UnwritableValuesError, ValueFileError
from chest.core import key_to_filename, nbytes
from chest.eviction import Eviction


# -- the mapping contract, in every configuration ----------
@pytest.mark.parametrize("config", [
    {},
    {"available_memory": 0},
    {"available_memory": 200},
    {"policy": "lru", "available_memory": 100},
    {"dump": json.dump, "load": json.load, "mode": "t", "available_memory": 0},
    {"durable": True, "available_memory": 0},
    {"packed": "sqlite", "available_memory": 0},
    {"packed": "lmdb", "available_memory": 200},
    {"packed": "sqlite", "dump": json.dump, "load": json.load, "mode": "t",
     "available_memory": 0},
    {"write_through": True, "available_memory": 100},
    {"write_through": True, "packed": "lmdb", "durable": True},
])
def test_mapping_contract(make_chest, config):
    check_mapping(lambda: make_chest(**config), ["one", [1, 2, 3], 3])


def test_mapping_contract_temporary_chest():
    made = []

    def make():
        made.append(Chest(available_memory=50))
        return made[-1]

    check_mapping(make, [b"bytes", "two", (3, 4)])
    for c in made:
        c.close()


def test_reopened_chest_is_the_same_mapping(make_chest, chest_path):
    c = make_chest(available_memory=100)
    expected = {}
    for i, key in enumerate(["x", 1, ("a", "b"), ("a", ("b", 2)), None, 2.5,
                             b"raw", frozenset({1, 2}), "", "../x", ".keys"]):
        c[key] = expected[key] = [i] * i
    c.flush()
    again = Chest(path=chest_path)
    assert list(again) == list(expected)
    assert dict(again.items()) == expected
    again.close()


# -- keys and files ----------
def test_import_paths_of_the_original():
    from chest.core import Chest as C2
    assert C2 is Chest
    assert key_to_filename("x") == "x"
    assert nbytes(np.ones(10)) == 80


@pytest.mark.parametrize("a, b", [
    (1, "1"), (("x",), "x"), ("A", "a"), ("Key", "KEY"), (b"x", "x"),
    (None, "None"), ((1, 2), "(1, 2)"), (frozenset({1}), (1,)),
])
def test_distinct_keys_never_share_a_file(make_chest, chest_path, a, b):
    c = make_chest(available_memory=0)
    c[a] = "a"
    c[b] = "b"
    assert c.key_to_filename(a).casefold() != c.key_to_filename(b).casefold()
    assert (c[a], c[b]) == ("a", "b")
    c.flush()
    again = Chest(path=chest_path)
    assert (again[a], again[b]) == ("a", "b")
    again.close()


def test_user_key_to_filename_that_collides(make_chest, chest_path):
    c = make_chest(available_memory=0, key_to_filename=lambda key: "same")
    for i in range(5):
        c[i] = i * 10
    names = {c.key_to_filename(i) for i in range(5)}
    assert len(names) == 5
    assert [c[i] for i in range(5)] == [0, 10, 20, 30, 40]
    c.flush()
    again = Chest(path=chest_path)
    assert [again[i] for i in range(5)] == [0, 10, 20, 30, 40]
    again.close()


@pytest.mark.parametrize("name", [
    "", ".keys", ".hidden", "/etc/passwd", "../x", "a/../../x", "a//b", "x" * 300,
    "ok/" + "y" * 300, "nul\0byte", "back\\slash", ".",
])
def test_unsafe_names_stay_inside_the_folder(make_chest, tmp_path, name):
    c = make_chest(available_memory=0, key_to_filename=lambda key: name)
    c["k"] = "value"
    c.flush()
    path = os.path.realpath(c.key_to_filename("k"))
    assert path.startswith(os.path.realpath(c.path) + os.sep)
    assert os.path.basename(path) != ".keys"
    assert not os.path.basename(path).startswith(".")
    assert sorted(os.listdir(tmp_path)) == ["chest"]
    assert c["k"] == "value"


def test_a_tuple_key_whose_path_is_too_long_gets_a_hashed_name(make_chest, chest_path):
    # Each part is under the name limit, the whole over the path limit: every
    # write failed with errno 36 and the value was gone after close().
    key = tuple("p%02d" % i + "x" * 180 for i in range(25))
    c = make_chest(available_memory=0)
    c[key] = "deep"
    name = os.path.relpath(c.key_to_filename(key), c.path)
    assert "/" not in name and os.path.exists(c.key_to_filename(key))
    c.close()
    again = make_chest()
    assert again[key] == "deep"


@pytest.mark.parametrize("key", ["", ".keys", "../x", "/abs", "a/b", "x" * 300,
                                 ("..", ".keys"), ("x" * 300,), ()])
def test_default_names_of_odd_keys_are_safe(make_chest, tmp_path, key):
    c = make_chest(available_memory=0)
    c[key] = 1
    c.flush()
    path = os.path.realpath(c.key_to_filename(key))
    assert path.startswith(os.path.realpath(c.path) + os.sep)
    assert sorted(os.listdir(tmp_path)) == ["chest"]


def test_identifiers_keep_their_name_and_tuples_nest(make_chest):
    c = make_chest(available_memory=0)
    c["alpha"] = 1
    c["one", "two"] = 12
    c["one", "three"] = 13
    c.flush()
    assert os.path.basename(c.key_to_filename("alpha")) == "alpha"
    assert files_in(c.path) == [".keys", "_one/three", "_one/two", "alpha"]


def test_file_and_folder_of_the_same_name(make_chest):
    c = make_chest(available_memory=0, key_to_filename=lambda k: "/".join(k))
    c[("a",)] = "file a"
    c[("a", "b")] = "file a/b needs folder a"
    assert c[("a",)] == "file a"
    assert c[("a", "b")] == "file a/b needs folder a"


def test_a_stray_file_in_the_folder_is_not_overwritten(make_chest, chest_path):
    os.makedirs(chest_path)
    with open(os.path.join(chest_path, "notes"), "w") as f:
        f.write("mine")
    c = make_chest(available_memory=0)
    c["notes"] = "chest's"
    with open(os.path.join(chest_path, "notes")) as f:
        assert f.read() == "mine"
    assert c["notes"] == "chest's"


# -- the budget and eviction ----------
def test_budget_holds_after_every_call(make_chest):
    c = make_chest(available_memory=10_000)
    rng = np.random.default_rng(0)
    for i in range(200):
        c[i % 37] = rng.random(int(rng.integers(1, 400)))
        assert c.memory_usage <= c.available_memory
        key = int(rng.integers(0, 37))
        if key in c:
            c[key]
        assert c.memory_usage <= c.available_memory
        assert c.memory_usage == sum(nbytes(v) for v in c.inmem.values())


def test_largest_leaves_first_ties_to_least_recently_used(make_chest):
    c = make_chest(available_memory=1000, policy="largest")
    c["small"] = np.zeros(10)      # 80 bytes
    c["big1"] = np.zeros(50)       # 400
    c["big2"] = np.zeros(50)       # 400
    c["big1"]                      # big2 is now the least recently used
    c["more"] = np.zeros(20)       # 160: 1040 > 1000, one big one goes
    assert set(c.inmem) == {"small", "big1", "more"}


def test_lru_policy(make_chest):
    c = make_chest(available_memory=900, policy="lru")
    c["small"] = np.zeros(10)      # 80 bytes
    c["big"] = np.zeros(100)       # 800
    c["big"]
    c["more"] = np.zeros(10)       # 960 > 900: the least recently used goes
    assert set(c.inmem) == {"big", "more"}
    with pytest.raises(ValueError, match="unknown eviction policy 'nope'"):
        make_chest("other", policy="nope")


def test_value_larger_than_the_budget_goes_straight_to_disk(make_chest):
    c = make_chest(available_memory=1000)
    c["small"] = np.zeros(10)
    c["huge"] = np.zeros(1000)
    assert set(c.inmem) == {"small"}
    assert os.path.exists(c.key_to_filename("huge"))
    assert c["huge"].shape == (1000,)
    assert set(c.inmem) == {"small"}  # read back, too big to keep


def test_budget_accepts_strings(make_chest):
    c = make_chest(available_memory="1kB")
    assert c.available_memory == 1000
    c["x"] = np.zeros(100)
    c.available_memory = "512B"
    assert not c.inmem
    assert Chest().available_memory > 0


# -- values ----------
def test_value_files_are_pickle_protocol_5(make_chest):
    c = make_chest(available_memory=0)
    c["x"] = np.arange(1000)
    with open(c.key_to_filename("x"), "rb") as f:
        assert f.read(2) == b"\x80\x05"
    with open(c.key_to_filename("x"), "rb") as f:
        assert np.array_equal(pickle.load(f), np.arange(1000))


def test_cloudpickle_for_what_pickle_refuses(make_chest, chest_path):
    class Local:
        y = 2

    c = make_chest(available_memory=0)
    c["f"] = lambda x: x + 1
    c["cls"] = Local
    c.flush()
    again = Chest(path=chest_path)
    assert again["f"](1) == 2
    assert again["cls"].y == 2
    again.close()


def test_cloudpickle_fallback_with_a_gzip_open(make_chest, chest_path):
    # The fallback used to seek back and truncate, which gzip cannot: the
    # value was refused and lost at reopen.
    import gzip
    c = make_chest(available_memory=0, open=gzip.open)
    c["f"] = lambda x: x + 10
    c.close()
    again = make_chest(open=gzip.open)
    assert again["f"](1) == 11


class Handle:
    """Frees a resource when collected, as partd's File removes its folder."""

    removed: list = []

    def __init__(self, name):
        self.name = name

    def __del__(self):
        Handle.removed.append(self.name)


@pytest.mark.filterwarnings("ignore:.*could not be written:chest.ChestWarning")
def test_values_whose_identity_matters_stay_in_memory(make_chest):
    c = make_chest(available_memory=200)
    c["handle"] = {"h": Handle("a"), "pad": "x" * 100}
    c["big"] = "y" * 150  # over the budget: something must leave
    assert "handle" in c.inmem and Handle.removed == []
    assert c.evict() == -1  # nothing else can go: it stays, evict never raises
    assert "handle" in c.inmem and Handle.removed == []
    assert "1 cannot be written" in repr(c)
    with pytest.raises(UnwritableValuesError, match="'handle'.*__del__"):
        c.flush()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # kept in memory on purpose: no warning
        c["h0"] = Handle("b")
        tiny = make_chest("tiny", available_memory=0)
        tiny["h"] = Handle("c")
    assert tiny["h"].name == "c" and Handle.removed == []


class Unpicklable:
    def __reduce__(self):
        raise TypeError("cannot pickle this")


@pytest.mark.filterwarnings("ignore:.*could not be written:chest.ChestWarning")
def test_value_that_cannot_be_dumped_stays_in_memory(make_chest):
    c = make_chest(available_memory=100)
    c["bad"] = Unpicklable()
    for i in range(20):
        c[i] = i
    assert "bad" in c.inmem
    assert isinstance(c["bad"], Unpicklable)
    assert not os.path.exists(c.key_to_filename("bad"))
    assert not any(".tmp." in f for f in files_in(c.path))
    assert all(c[i] == i for i in range(20))
    assert "1 cannot be written" in repr(c)
    with pytest.raises(TypeError, match="cannot pickle"):
        c.move_to_disk("bad")
    with pytest.raises(UnwritableValuesError, match="'bad'"):
        c.flush()
    assert all(i in c.store.files for i in range(20))
    assert "bad" in c.inmem


@pytest.mark.filterwarnings("ignore:.*could not be written:chest.ChestWarning")
def test_dump_failure_of_any_kind_moves_eviction_on(make_chest):
    def dump(value, f):
        if value == "boom":
            raise RuntimeError("disk on fire")
        pickle.dump(value, f)

    c = make_chest(available_memory=200, dump=dump, load=pickle.load)
    c["boom"] = "boom"
    for i in range(30):
        c[i] = i
    assert c["boom"] == "boom" and "boom" in c.inmem
    assert c.memory_usage <= c.available_memory + nbytes("boom")


@pytest.mark.filterwarnings("ignore:.*could not be written:chest.ChestWarning")
def test_huge_unwritable_value_warns_and_stays(make_chest):
    c = make_chest(available_memory=10)
    with pytest.warns(ChestWarning, match="'bad'"):
        c["bad"] = Unpicklable()
    assert "bad" in c.inmem


# -- files on disk ----------
def test_overwrite_keeps_the_flushed_file_until_the_next_flush(make_chest, tmp_path):
    c = make_chest(available_memory=10**6)
    c["k"] = "old"
    c.flush()
    c["k"] = "new"
    # A user reading the key's file never sees the old value ...
    assert not os.path.exists(c.key_to_filename("k"))
    # ... yet a crash now (a copy of the folder, as a kill -9 would leave it)
    # still finds the flushed value.
    shutil.copytree(c.path, tmp_path / "crashed")
    crashed = Chest(path=str(tmp_path / "crashed"))
    assert crashed["k"] == "old"
    assert files_in(crashed.path) == [".keys", "k"]
    crashed.close()
    c.flush()
    assert files_in(c.path) == [".keys", "k"]
    with open(c.key_to_filename("k"), "rb") as f:
        assert pickle.load(f) == "new"


def test_an_overwrite_on_disk_replaces_the_file_atomically(make_chest, monkeypatch):
    c = make_chest(available_memory=0)
    c["k"] = "v1"
    c.flush()
    replaced = []
    real_replace = os.replace

    def spy(src, dst):
        replaced.append((os.path.basename(src), os.path.exists(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(chest.store.os, "replace", spy)
    c["k"] = "v2"
    assert c["k"] == "v2"
    assert any(src.startswith(".tmp.k.") for src, _ in replaced)


def test_flush_writes_only_what_disk_lacks(make_chest):
    c = make_chest(available_memory=10**6)
    c["a"] = 1
    c["b"] = 2
    c.flush()
    assert c.stats.spills == 2 and not c.inmem
    c["a"], c["b"]             # read back: unchanged values are not rewritten
    c.flush()
    assert c.stats.spills == 2
    c["a"] = 3
    c.flush()
    assert c.stats.spills == 3
    assert c.memory_usage == 0


def test_array_changed_in_place_after_reload_is_written_again(make_chest, chest_path):
    c = make_chest(available_memory=1000)
    c["x"] = np.zeros(100)     # 800 bytes
    c["y"] = np.zeros(100)     # pushes x out
    x = c["x"]                 # x back in memory, y out
    assert "x" in c.inmem
    spills = c.stats.spills
    x[0] = 42                  # changed in place
    c["y"]                     # x goes out again: changed, so written
    assert c.stats.spills == spills + 1
    c["x"]
    spills = c.stats.spills
    c["y"]                     # x goes out unchanged: not written
    assert c.stats.spills == spills
    c.flush()
    again = Chest(path=chest_path)
    assert again["x"][0] == 42
    again.close()


def test_mutable_values_without_fingerprint_are_rewritten(make_chest):
    c = make_chest(available_memory=1000)   # holds one of the two lists
    c["l"] = [0] * 20
    c["m"] = [1] * 20
    lst = c["l"]
    lst.append(99)
    c["m"]
    c.flush()
    assert c["l"][-1] == 99


def test_missing_or_corrupt_file_names_key_and_file(make_chest):
    c = make_chest(available_memory=0)
    c["gone"] = 1
    c["bad"] = 2
    c["fine"] = 3
    os.remove(c.key_to_filename("gone"))
    with open(c.key_to_filename("bad"), "wb") as f:
        f.write(b"\x80\x05garbage")
    with pytest.raises(ValueFileError, match="'gone'.*missing") as e:
        c["gone"]
    assert e.value.filename == c.key_to_filename("gone")
    with pytest.raises(ValueFileError, match="'bad'") as e:
        c["bad"]
    assert c.key_to_filename("bad") in str(e.value)
    assert "gone" in c and "bad" in c
    assert c["fine"] == 3
    with pytest.raises(ValueFileError):
        c.get("gone")  # not a KeyError: .get must not say "missing"


@pytest.mark.parametrize("damage", ["file is a folder", "folder is a file"])
def test_a_file_or_folder_replaced_by_the_other_names_key_and_file(make_chest, damage):
    c = make_chest(available_memory=0)
    key = ("t", "small") if damage == "folder is a file" else "small"
    c[key] = 1
    c["fine"] = 2
    filename = c.key_to_filename(key)
    os.remove(filename)
    if damage == "file is a folder":
        os.mkdir(filename)
    else:
        os.rmdir(os.path.dirname(filename))
        with open(os.path.dirname(filename), "w") as f:
            f.write("a file")
    with pytest.raises(ValueFileError, match=repr(key).replace("(", r"\(").replace(
            ")", r"\)")) as e:
        c[key]
    assert e.value.filename == filename and "Error" in e.value.reason
    assert c["fine"] == 2


def test_values_read_from_a_json_chest_and_unchanged_are_not_written_again(
        make_chest, chest_path):
    kwargs = {"dump": json.dump, "load": json.load, "mode": "t"}
    with Chest(path=chest_path, available_memory=0, **kwargs) as c:
        for i in range(50):
            c[f"k{i}"] = {"i": i, "items": list(range(i))}
    inodes = {name: os.stat(os.path.join(chest_path, name)).st_ino
              for name in files_in(chest_path) if name.startswith("k")}
    c = make_chest(**kwargs)
    assert all(c[f"k{i}"]["i"] == i for i in range(50))
    c["k7"]["items"].append("changed in place")
    c.close()
    assert c.stats.spills == 1  # k7 only
    after = {name: os.stat(os.path.join(chest_path, name)).st_ino for name in inodes}
    assert [name for name in inodes if after[name] != inodes[name]] == ["k7"]
    again = make_chest("chest", **kwargs)
    assert again["k7"]["items"][-1] == "changed in place"


def test_json_chest_with_tuple_keys_reopens_whole(make_chest, chest_path):
    c = make_chest(dump=json.dump, load=json.load, mode="t", available_memory=0)
    c[("a", 1)] = [1, 2]
    c[(("nested",), 2.5)] = {"x": "y"}
    c[7] = "seven"
    c.flush()
    with open(c.key_to_filename(7)) as f:
        assert json.load(f) == "seven"
    again = Chest(path=chest_path, dump=json.dump, load=json.load, mode="t")
    assert dict(again.items()) == {("a", 1): [1, 2], (("nested",), 2.5): {"x": "y"},
                                   7: "seven"}
    again.close()


def test_index_is_the_chests_own_versioned_format(make_chest):
    c = make_chest(dump=json.dump, load=json.load, mode="t")
    c["x"] = 1
    c.flush()
    with open(os.path.join(c.path, ".keys"), "rb") as f:
        assert f.read(12) == b"chest-index\n"


def test_the_original_chests_other_names(make_chest):
    # chest 0.2.3's own tests read these (and import chest.utils).
    from chest.utils import raise_KeyError, raises

    c = make_chest(available_memory=10**6)
    assert c._explicitly_given_path
    before = c.counter
    c["x"] = 1
    c["x"]
    assert c.counter > before
    assert raises(KeyError, lambda: raise_KeyError("x"))
    from chest import Chest
    assert not Chest()._explicitly_given_path


def test_a_chest_of_the_original_chest_reopens(chest_path):
    # chest 0.2.3 wrote its index with the user's dump (pickle protocol 1).
    os.makedirs(os.path.join(chest_path, "_spam"))
    with open(os.path.join(chest_path, "x"), "wb") as f:
        pickle.dump([1, 2, 3], f, protocol=1)
    with open(os.path.join(chest_path, "_spam", "eggs"), "wb") as f:
        pickle.dump("spam and eggs", f, protocol=1)
    with open(os.path.join(chest_path, ".keys"), "wb") as f:
        pickle.dump([("x", "x"), (("spam", "eggs"), "_spam/eggs")], f, protocol=1)
    c = Chest(path=chest_path)
    assert dict(c.items()) == {"x": [1, 2, 3], ("spam", "eggs"): "spam and eggs"}
    c["y"] = 4
    c.close()
    again = Chest(path=chest_path)
    assert len(again) == 3
    again.close()


def test_names_the_original_chest_made_that_this_one_would_not(chest_path):
    # One name over 200 bytes (chest 0.2.3 named an identifier key by itself),
    # starting with a dot, or written './x' or 'd//x' refused the whole chest
    # (IndexFileError: unsafe file name). Now each key is kept (the first two
    # get a name of their own on opening); a name outside the folder leaves
    # its key out, with a warning, and its file alone.
    long = "p" * 230
    names = {long: long, "dot": ".dot", "here": "./here", "deep": "d//deep",
             "out": "../outside"}
    os.makedirs(os.path.join(chest_path, "d"))
    for key, name in names.items():
        with open(os.path.join(chest_path, name), "wb") as f:
            pickle.dump(f"value of {key}", f, protocol=1)
    with open(os.path.join(chest_path, ".keys"), "wb") as f:
        pickle.dump(list(names.items()), f, protocol=1)
    kept = {key: f"value of {key}" for key in names if key != "out"}
    with pytest.warns(ChestWarning, match="'../outside' for key 'out'"):
        reader = Chest(path=chest_path, readonly=True)
    assert dict(reader.items()) == kept
    reader.close()
    with pytest.warns(ChestWarning, match="left out"):
        c = Chest(path=chest_path)
    assert dict(c.items()) == kept
    assert not os.path.exists(os.path.join(chest_path, long))  # renamed
    assert not os.path.exists(os.path.join(chest_path, ".dot"))
    c[long] = "set again"
    c.close()
    again = Chest(path=chest_path)
    assert again[long] == "set again" and again["dot"] == "value of dot"
    again.close()
    assert os.path.exists(os.path.join(os.path.dirname(chest_path), "outside"))


def test_a_long_original_name_on_a_full_disk_opens_for_reading(chest_path, monkeypatch):
    import errno

    import chest.store

    long = "p" * 230
    os.makedirs(chest_path)
    with open(os.path.join(chest_path, long), "wb") as f:
        pickle.dump("long", f, protocol=1)
    with open(os.path.join(chest_path, ".keys"), "wb") as f:
        pickle.dump([(long, long)], f, protocol=1)

    def full(self, source, filename):
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr(chest.store.Store, "link_temp", full)
    with pytest.raises(OSError, match="No space"):
        Chest(path=chest_path)
    reader = Chest(path=chest_path, readonly=True)
    assert reader[long] == "long"
    reader.close()
    monkeypatch.undo()
    again = Chest(path=chest_path)
    assert again[long] == "long" and not os.path.exists(os.path.join(chest_path, long))
    again.close()


def test_keys_sharing_a_file_in_a_chest_of_the_original_get_their_own(chest_path):
    # chest 0.2.3 gave 1 and '1' one file; setting one then left the other
    # (or itself) with the wrong value, also after reopening.
    os.makedirs(chest_path)
    with open(os.path.join(chest_path, "1"), "wb") as f:
        pickle.dump("shared", f, protocol=1)
    with open(os.path.join(chest_path, ".keys"), "wb") as f:
        pickle.dump([(1, "1"), ("1", "1")], f, protocol=1)
    reader = Chest(path=chest_path, readonly=True)
    assert dict(reader) == {1: "shared", "1": "shared"}  # as 0.2.3 read it
    reader.close()
    c = Chest(path=chest_path, available_memory=0)
    assert c.key_to_filename(1) != c.key_to_filename("1")
    c[1] = "NEW"
    c.flush()
    assert c[1] == "NEW" and c["1"] == "shared"
    c.close()
    again = Chest(path=chest_path)
    assert dict(again) == {1: "NEW", "1": "shared"}
    again.close()


# -- opening and closing ----------
def modes(path):
    """Permission bits of every file and folder below ``path``, by kind."""
    found = {"files": set(), "folders": set()}
    for folder, dirs, names in os.walk(path):
        for d in dirs:
            found["folders"].add(os.stat(os.path.join(folder, d)).st_mode & 0o777)
        for n in names:
            found["files"].add(os.stat(os.path.join(folder, n)).st_mode & 0o777)
    found["folders"].add(os.stat(path).st_mode & 0o777)
    return found


def fill(c):
    c["small"] = 1
    c["large"] = list(range(20_000))  # over 64 KiB: written by another path
    c["a", "b", "c"] = "nested"
    c.flush()
    c["journaled"] = 2
    c.move_to_disk("journaled")


@pytest.mark.parametrize("kwargs", [{}, {"dump": json.dump, "load": json.load,
                                         "mode": "t"}])
def test_a_chest_is_private_to_its_user_by_default(tmp_path, kwargs):
    old = os.umask(0o022)
    try:
        c = Chest(path=str(tmp_path / "nested" / "chest"), available_memory=0, **kwargs)
        fill(c)
        assert os.path.exists(os.path.join(c.path, ".journal"))
        assert modes(c.path) == {"files": {0o600}, "folders": {0o700}}
        assert os.stat(tmp_path / "nested").st_mode & 0o777 == 0o755  # not the chest's
        c.close()
    finally:
        os.umask(old)


def test_a_chest_shared_with_a_group(tmp_path):
    old = os.umask(0o022)
    try:
        c = Chest(path=str(tmp_path / "chest"), available_memory=0, file_mode=0o660)
        fill(c)
        other = Chest(path=str(tmp_path / "other"), available_memory=0)
        other["x"] = 1
        c.update(other)  # linked, or copied: the same mode either way
        assert modes(c.path) == {"files": {0o660}, "folders": {0o770}}
        other.close()
        c.close()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # group-writable as asked: no warning
            Chest(path=c.path, file_mode=0o660).close()
    finally:
        os.umask(old)
    with pytest.raises(ValueError, match="file_mode"):
        Chest(file_mode=0o777)


@pytest.mark.parametrize("what", ["", ".keys"])
def test_opening_a_chest_others_could_change_warns(tmp_path, what):
    path = str(tmp_path / "chest")
    Chest(path=path, data={"x": 1}).close()
    os.chmod(os.path.join(path, what) if what else path, 0o777 if not what else 0o666)
    target = os.path.join(path, what) if what else path
    with pytest.warns(ChestWarning, match=f"could change {target} .*anyone may write.*"
                                          f"pickle.load"):
        Chest(path=path, readonly=True).close()
    with pytest.warns(ChestWarning, match="anyone may write"):
        Chest(path=path).close()


def test_readonly_on_a_folder_that_is_not_a_chest_raises(tmp_path):
    from chest import FolderError
    typo = str(tmp_path / "typo")
    with pytest.raises(FolderError, match="typo: no such folder"):
        Chest(path=typo, readonly=True)
    assert not os.path.exists(typo)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("not a chest")
    with pytest.raises(FolderError, match="not a chest folder"):
        Chest(path=str(tmp_path / "notes"), readonly=True)


@pytest.mark.parametrize("bad", [
    {"available_memory": "lots"}, {"available_memory": -1}, {"max_disk": "x"},
    {"policy": "random"}, {"mode": "x"}, {"mmap": True, "mode": "t"},
    {"dump": json.dump, "mmap": True}])
def test_a_bad_argument_leaves_no_temporary_folder(tmp_path, bad):
    with pytest.raises((ValueError, TypeError)):
        Chest(worker_local_directory=str(tmp_path), **bad)
    assert os.listdir(tmp_path) == []


def test_temporary_chest_is_removed_when_closed_collected_or_left():
    c = Chest(available_memory=0)
    c["x"] = 1
    path = c.path
    c.close()
    assert not os.path.exists(path)

    c = Chest(available_memory=0)
    c["x"] = 1
    path = c.path
    del c
    gc.collect()
    assert not os.path.exists(path)

    with Chest(available_memory=0) as c:
        c["x"] = 1
    assert not os.path.exists(c.path)


def test_chest_with_path_flushes_on_close_and_collection(chest_path):
    c = Chest(path=chest_path)
    c["x"] = 1
    del c
    gc.collect()
    again = Chest(path=chest_path)
    assert again["x"] == 1
    again["y"] = 2
    again.close()
    with Chest(path=chest_path) as c:
        assert dict(c) == {"x": 1, "y": 2}


def test_flush_on_interpreter_shutdown_without_tracebacks(chest_path):
    code = (
        "from chest import Chest\n"
        "import numpy as np\n"
        f"c = Chest(path={chest_path!r}, available_memory=1000)\n"
        "c['x'] = np.arange(1000)\n"
        "c['y'] = 'why'\n"
        "class Holder:\n"
        "    def __del__(self):\n"
        "        self.c['late'] = 1\n"
        "h = Holder()\n"
        "h.c = c\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    assert result.stderr == ""
    c = Chest(path=chest_path)
    assert c["y"] == "why" and np.array_equal(c["x"], np.arange(1000))
    c.close()


def test_closed_chest_whose_folder_was_removed_is_not_recreated(chest_path):
    c = Chest(path=chest_path)
    c["x"] = 1
    c.drop()
    c.close()
    assert not os.path.exists(chest_path)


@pytest.mark.parametrize("packed", [None, "sqlite", "lmdb"])
@pytest.mark.parametrize("how", ["close", "drop"])
def test_a_chest_used_after_close_does_not_write_over_another_writers_changes(
        tmp_path, packed, how):
    # A chest closed (or dropped) takes the writer's lock again to write:
    # another chest that wrote the folder meanwhile must not lose its keys
    # to this one's old index, nor its files to a drop().
    path = str(tmp_path / "c")
    c = Chest(path=path, packed=packed)
    c["a"], c["kept"] = 1, np.arange(5)
    if how == "close":
        c.close()
    else:
        c.flush()
        c.drop()
    other = Chest(path=path, packed=packed)
    other["x"] = "from the other"
    other.pop("a", None)
    other.close()
    with pytest.raises(chest.FolderChangedError, match="changed by another chest") as e:
        c["b"] = 2
    assert path in str(e.value) and "set a key" in str(e.value)
    assert "b" not in c  # nothing changed
    with pytest.raises(chest.FolderChangedError):
        c.drop()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c.close()  # nothing of its own to save: quiet
    again = Chest(path=path)
    assert sorted(again, key=str) == ["x"] if how == "drop" else sorted(again) == ["kept", "x"]
    assert again["x"] == "from the other"
    again.close()
    # A chest used after close() with no other writer meanwhile writes, as before.
    again["y"] = 3
    again.close()
    assert sorted(Chest(path=path, readonly=True), key=str)[-1] == "y"


def test_a_chest_closed_whose_folder_was_removed_is_not_made_again_but_drops(tmp_path):
    path = str(tmp_path / "c")
    c = Chest(path=path)
    c["a"] = 1
    c.close()
    shutil.rmtree(path)
    with pytest.raises(chest.FolderChangedError, match="or removed"):
        c["b"] = 2
    assert not os.path.exists(path)  # (not made again, empty)
    c.drop()  # nothing left to remove: no error
    assert not os.path.exists(path) and len(c) == 0
    c["c"] = 3  # dropped: a new chest there, as before
    c.close()
    with Chest(path=path, readonly=True) as again:
        assert dict(again) == {"c": 3}


def test_a_chest_changed_after_close_while_another_wrote_warns_at_close(tmp_path):
    path = str(tmp_path / "c")
    c = Chest(path=path)
    c["a"] = [1]
    c.close()
    value = c["a"]  # read after close: in memory, maybe changed in place
    other = Chest(path=path)
    other["a"] = "the other's"
    other.close()
    value.append(2)
    with pytest.warns(ChestWarning, match="changed by another chest") as w:
        c.close()
    assert "Not saved: the values of 'a', changed since" in str(w[0].message)
    assert Chest(path=path, readonly=True)["a"] == "the other's"


class _KeyHoldingALock:
    def __init__(self):
        self.lock = threading.Lock()

    def __hash__(self):
        return 1

    def __eq__(self, other):
        return isinstance(other, _KeyHoldingALock)


@pytest.mark.parametrize("packed", [None, "sqlite", "lmdb"])
@pytest.mark.parametrize("write_through", [False, True])
def test_a_key_that_cannot_be_pickled_is_named_as_the_cause(tmp_path, packed,
                                                            write_through):
    # The error blamed the value ("its value cannot be written through",
    # "1 value(s) could not be written") when the key was what would not
    # pickle.
    path = str(tmp_path / "c")
    c = Chest(path=path, packed=packed, write_through=write_through,
              available_memory=0)
    c["fine"] = "v"
    key = _KeyHoldingALock()
    if write_through:
        with pytest.raises(TypeError, match="the key .* cannot be pickled"):
            c[key] = "v"
        assert key not in c
    else:
        with pytest.warns(ChestWarning, match="the key .* cannot be pickled"):
            c[key] = "v"  # stays in memory: it cannot be written
        with pytest.raises(UnwritableValuesError, match="the key .* cannot be pickled"):
            c.flush()
        assert c[key] == "v"
        del c[key]
    c.close()
    with Chest(path=path, readonly=True) as again:
        assert dict(again) == {"fine": "v"}
    from chest.verify import find_problems
    assert find_problems(path, deep=True, quiet=True).problems == []


@pytest.mark.parametrize("kind", ["sqlite", "lmdb", "write_through"])
def test_a_folder_with_packed_values_or_written_through_is_not_shared(tmp_path, kind):
    # Two chests on one folder share its lock in one process (as chest 0.2
    # allowed): with packed values each gave out the same slots, and one key
    # read another's value; with write_through, one's flush emptied the
    # journal that held the other's acknowledged values. Neither shares it,
    # also when one is closed and used again while the other is open.
    path = str(tmp_path / "c")
    made = {"write_through": True} if kind == "write_through" else {"packed": kind}
    a = Chest(path=path, **made)
    a["a"] = b"A" * 300
    a.flush()
    for kwargs in (made, {}, {"packed": None}):
        with pytest.raises(ValueError, match="open for writing in this process"):
            Chest(path=path, **kwargs)
    with Chest(path=path, readonly=True) as reader:  # (a reader may)
        assert reader["a"] == b"A" * 300
    a.close()
    b = Chest(path=path, **made)  # (closed: opened again)
    with pytest.raises(ValueError, match="open for writing in this process"):
        a["y"] = 2  # (closed, used again while b is open)
    b["b"] = b"B" * 300
    b.close()
    with Chest(path=path) as again:
        assert again["a"] == b"A" * 300 and again["b"] == b"B" * 300 and "y" not in again
    files = str(tmp_path / "files")  # (files only: shared, as before)
    with Chest(path=files, packed=None) as one, Chest(path=files, packed=None) as two:
        one["x"], two["y"] = 1, 2
    first = Chest(path=files, packed=None)
    with pytest.raises(ValueError, match="open for writing in this process"):
        Chest(path=files, packed=None, write_through=True)  # (not beside one)
    first.close()


@pytest.mark.parametrize("packed", [None, "sqlite"])
def test_a_chest_holding_a_value_that_cannot_be_written_goes_when_dropped(tmp_path, packed):
    # The error kept for the value held its traceback, whose frames held the
    # chest: dropped without close(), the chest (and its folder's lock, and
    # its unsaved changes) lived until the garbage collector ran.
    from chest.lock import held_here
    path = str(tmp_path / "c")
    c = Chest(path=path, packed=packed, available_memory=100)
    c["a"] = 1
    with pytest.warns(ChestWarning, match="cannot be written"):
        c["b"] = [Unpicklable()] * 1000  # over the budget, and not written
    assert isinstance(c.ledger.unwritable["b"], TypeError)
    assert c.ledger.unwritable["b"].__traceback__ is None
    gc.disable()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ChestWarning)  # ('b' is not saved)
            del c
        assert not held_here(path)
    finally:
        gc.enable()
    with Chest(path=path, packed=packed) as again:
        assert dict(again) == {"a": 1}


@pytest.mark.parametrize("packed", [None, "sqlite"])
def test_a_closed_chest_reads_and_closes_while_its_folder_is_open_again(tmp_path, packed):
    # Reading a closed chest evicts values its files hold, which needs no
    # write: it took the writer's lock again all the same, and was refused
    # (a chest that holds it alone; or FolderChangedError, once another
    # wrote); close() after a read flushed, and was refused too.
    path = str(tmp_path / "c")
    c = Chest(path=path, packed=packed, available_memory=1000)
    for i in range(50):
        c[i] = b"x" * 100
    c.close()
    other = Chest(path=path, packed=packed)
    other["new"] = 1
    other.flush()
    try:
        assert sum(len(c[i]) for i in range(50)) == 5000
        c.close()  # (only read since it was closed: nothing to write)
        with pytest.raises((ValueError, chest.FolderChangedError)):
            c["changed"] = 1  # (a write is refused, as before)
    finally:
        other.close()
    with Chest(path=path, readonly=True) as again:
        assert again["new"] == 1 and len(again) == 51


def test_threads_opening_one_packed_chest_at_once_one_gets_it(tmp_path, monkeypatch):
    # Both took the folder's lock, shared, then each was refused holding it
    # alone: neither opened it.
    path = str(tmp_path / "c")
    Chest(path=path, packed="sqlite").close()
    real_store = chest.core.Store

    class SlowStore(real_store):  # (a large index takes this long to read)
        def __init__(self, *args, **kwargs):
            time.sleep(0.2)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(chest.core, "Store", SlowStore)
    opened, refused = open_at_once(lambda: Chest(path=path), 2)
    assert (len(opened), refused) == (1, 1)
    opened[0].close()


@pytest.mark.parametrize("packed", [None, "sqlite"])
def test_threads_writing_a_closed_chest_at_once_take_its_lock_once(tmp_path, packed):
    # Each set asked to write before taking the chest's lock: two threads
    # both took the writer's lock again, one was refused (or told another
    # chest had written), and the other's was left held by no one: the
    # chest could not write again, and a set was lost.
    from chest.lock import held_here
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for attempt in range(5):
            path = str(tmp_path / f"c{attempt}")
            c = Chest(path=path, packed=packed)
            c["x"] = 0
            c.close()
            errors = []
            start = threading.Barrier(4)

            def write(t):
                start.wait()
                try:
                    c[f"t{t}"] = t
                except Exception as e:  # pragma: no cover (the defect)
                    errors.append(e)

            threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            c.close()
            assert errors == [] and not held_here(path)
            with Chest(path=path, readonly=True) as again:
                assert dict(again) == {"x": 0, "t0": 0, "t1": 1, "t2": 2, "t3": 3}
    finally:
        sys.setswitchinterval(interval)


def test_a_closed_chest_reading_a_key_another_chest_rewrote_changed_nothing(tmp_path):
    # The value read kept the token of the bytes this chest had known: it
    # looked changed in place, a close() warned it was "not saved", and
    # reads under a small budget raised (it had to be written to leave).
    path = str(tmp_path / "c")
    c = Chest(path=path, available_memory=200)
    for i in range(5):
        c[i] = ("v", i)
    c.close()
    with Chest(path=path) as other:
        other[0] = ("new", 0)
    assert [c[i] for i in range(5)] == [("new", 0)] + [("v", i) for i in range(1, 5)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c.close()


def test_repr(make_chest):
    c = make_chest(available_memory=1000)
    c["a"] = np.zeros(100)
    c["b"] = np.zeros(100)
    text = repr(c)
    assert c.path in text
    assert "2 keys, 1 in memory (800 B of 1.0 kB), 1 on disk only" in text
    assert c.path in str(c)


def test_repr_shows_sizes_in_the_units_of_the_budget(make_chest):
    # A budget of "64MiB" was shown as "67.1 MB of 67.1 MB".
    c = make_chest(available_memory="64MiB")
    c["a"] = b"x" * 2000
    assert "(2.0 KiB of 64.0 MiB)" in repr(c)
    c.available_memory = "1GB"
    assert "of 1.0 GB)" in repr(c)
    c.available_memory = float("inf")
    assert "of unlimited)" in repr(c)


def test_budget_errors_name_the_parameter(tmp_path):
    with pytest.raises(ValueError, match="max_disk must be >= 0"):
        Chest(max_disk=-1)
    with pytest.raises(ValueError, match="packed_limit must be at most"):
        Chest(packed="sqlite", packed_limit="1MB")
    c = Chest(available_memory="1e400")  # no limit, not an OverflowError
    assert c.available_memory >= 2**62
    c.close()


# -- update ----------
def test_update_links_files_of_another_chest(make_chest):
    a = make_chest("a", available_memory=0)
    b = make_chest("b", available_memory=0)
    a["x"] = np.arange(10)
    a["in memory"] = 1
    a.move_to_disk("x")
    b.update(a)
    assert os.stat(a.key_to_filename("x")).st_ino == \
        os.stat(b.key_to_filename("x")).st_ino
    a["x"] = "changed"
    assert np.array_equal(b["x"], np.arange(10))
    assert b["in memory"] == 1


def test_update_copies_across_file_systems(make_chest, monkeypatch):
    a = make_chest("a", available_memory=0)
    b = make_chest("b", available_memory=0)
    a["x"] = "value"
    b["x"] = "old"

    def no_link(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(chest.store.os, "link", no_link)
    b.update(a)
    assert b["x"] == "value"
    assert os.stat(a.key_to_filename("x")).st_ino != \
        os.stat(b.key_to_filename("x")).st_ino


def test_update_never_leaves_a_key_without_data(make_chest, monkeypatch):
    a = make_chest("a", available_memory=0)
    b = make_chest("b", available_memory=0)
    a["x"] = "value"
    b["y"] = "kept"

    def broken(src, dst):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(chest.store.os, "link", broken)
    monkeypatch.setattr(chest.store.shutil, "copyfile", broken)
    with pytest.raises(OSError):
        b.update(a)
    assert "x" not in b
    assert b["y"] == "kept"
    assert not any(".tmp." in f for f in files_in(b.path))


def test_update_no_overwrite_and_other_mappings(make_chest):
    a = make_chest("a")
    a.update({"x": 1}, y=2)
    a.update([("x", 10), ("z", 3)], overwrite=False)
    assert dict(a) == {"x": 1, "y": 2, "z": 3}
    b = make_chest("b", dump=json.dump, load=json.load, mode="t", available_memory=0)
    b["x"] = 5
    a.update(b)  # other format: values are loaded and stored again
    assert a["x"] == 5


def test_update_from_keys_and_getitem_and_with_ior(make_chest):
    class Pairs:  # what dict.update accepts besides mappings and pairs
        def keys(self):
            return ["p", "q"]

        def __getitem__(self, key):
            return key * 2

    c = make_chest(available_memory=0)
    c.update(Pairs())
    c |= {"r": 1}
    assert dict(c) == {"p": "pp", "q": "qq", "r": 1}


def test_reversed_is_the_reverse_insertion_order(make_chest):
    c = make_chest(available_memory=50)
    for key in "abcd":
        c[key] = key * 40  # some of them spilled
    del c["b"]
    c["b"] = "again"
    assert list(reversed(c)) == list(reversed(list(c))) == ["b", "d", "c", "a"]


# -- callbacks and the original's methods ----------
def test_on_miss_and_on_overflow(make_chest):
    events = []
    c = make_chest(available_memory=100, on_miss=lambda k: events.append(("miss", k)),
                   on_overflow=lambda k: events.append(("overflow", k)))
    c["a"] = np.zeros(10)
    c["b"] = np.zeros(10)
    c["a"]
    assert events == [("overflow", "a"), ("miss", "a"), ("overflow", "b")]


def test_on_overflow_that_raises_for_a_large_value_changes_nothing(make_chest):
    refusing = [True]

    def refuse(key):
        if refusing:
            raise RuntimeError("no spilling now")

    c = make_chest(available_memory=1000, on_overflow=refuse)
    c["a"] = b"old"
    with pytest.raises(RuntimeError, match="no spilling"):
        c["a"] = bytes(5000)  # larger than the budget: would go straight to disk
    assert c["a"] == b"old" and list(c) == ["a"]
    refusing.clear()  # so that closing the chest can write it


@pytest.mark.parametrize("change", ["delete", "set"])
def test_on_overflow_that_changes_the_evicted_key(make_chest, change):
    def on_overflow(key):
        if key == "x" and not done:
            done.append(key)
            if change == "delete":
                del c["x"]
            else:
                c["x"] = b"new"

    done: list = []
    c = make_chest(available_memory=250, on_overflow=on_overflow)
    c["x"] = bytes(200)
    c["y"] = bytes(200)  # evicts x, whose callback changes x
    if change == "delete":
        assert "x" not in c and list(c) == ["y"]
    else:
        assert c["x"] == b"new"
        c.flush()
        assert c["x"] == b"new"
    assert c.memory_usage == sum(c._sizes.values()) <= c.available_memory


def test_on_overflow_deleting_keys_during_flush_and_move_to_disk(make_chest):
    # A key the callback deleted while flush() wrote the others was reported
    # as unwritten ("stay in memory only": KeyError); move_to_disk of a key
    # the callback deleted raised KeyError.
    def on_overflow(key):
        if key == "a" and "b" in c:
            del c["b"]
        if key == "self":
            del c["self"]

    c = make_chest(available_memory=10**6, on_overflow=on_overflow)
    c["a"], c["b"], c["z"] = [1], [2], [3]
    c.flush()
    assert sorted(c) == ["a", "z"] and not c.inmem
    c["self"] = [4]
    c.move_to_disk("self")
    assert "self" not in c
    c.close()


def test_prefetch_and_get_from_disk(make_chest):
    c = make_chest(available_memory=10**6)
    for i in range(5):
        c[i] = i
    c.flush()
    c.prefetch([0, 1])
    c.prefetch(2)
    c.get_from_disk(3)
    assert set(c.inmem) == {0, 1, 2, 3}
    assert c.stats.misses == 0
    with pytest.raises(KeyError):
        c.prefetch(["nope"])


def test_prefetch_with_a_user_open_many(make_chest):
    opened = []

    def open_many(names, mode):
        from chest.codec import open_many as _open_many
        opened.extend(names)
        return _open_many(names, mode)

    c = make_chest(available_memory=10**6, open_many=open_many)
    c[1], c[2] = "one", "two"
    c.flush()
    c.prefetch([1, 2])
    assert len(opened) == 2 and set(c.inmem) == {1, 2}


@pytest.mark.parametrize("user_open_many", [False, True])
def test_a_value_prefetched_after_close_and_changed_in_place_is_saved(
        tmp_path, user_open_many):
    # (With a user's open_many, close() did not write it: a read took the
    # chest out of its closed state, a prefetch did not.)
    from chest.codec import open_many

    kwargs = {"open_many": lambda names, mode: open_many(names, mode)} \
        if user_open_many else {}
    path = str(tmp_path / "c")
    c = Chest(path=path, **kwargs)
    c["k"] = [1]
    c.close()
    c.prefetch(["k"])
    c.inmem["k"].append(2)
    c.close()
    again = Chest(path=path)
    assert again["k"] == [1, 2]
    again.close()


def test_a_value_read_after_close_that_cannot_leave_is_saved_if_changed(tmp_path):
    # A value read after close() and changed in place must be written to
    # leave memory; while another process holds the writer's lock it cannot:
    # it stays (passed over: the read that made room raised before), and the
    # next close writes it (the chest stayed "closed" once, and did not).
    path = str(tmp_path / "c")
    c = Chest(path=path, available_memory=10_000, lock_timeout=0.2)
    c["a"], c["b"] = list(range(50)), list(range(50))
    c.close()
    c["a"].append("changed")  # read back, changed in place: to be written
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from chest import Chest\n"
         f"c = Chest(path={path!r})\nprint('held', flush=True)\n"
         "sys.stdin.readline(); c.close()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(chest.__file__))))
    try:
        assert holder.stdout.readline().strip() == "held"
        c.available_memory = nbytes(c["a"]) + 40  # one of the two fits
        assert c["b"] == list(range(50))  # "a" must leave, and cannot be written
        assert "a" in c.inmem and isinstance(c.ledger.unwritable["a"],
                                              chest.ChestLockedError)
    finally:
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait()
        holder.stdout.close()
    c.close()
    again = Chest(path=path, readonly=True)
    assert again["a"][-1] == "changed"
    again.close()


def test_prefetch_with_a_user_open_many_keeps_the_budget_as_it_goes(make_chest):
    # A batch of up to 512 values was loaded before any left (116 MB held
    # through a 20 MB budget); chest 0.2.3 shrank after each value.
    import pickle

    most = [0]

    def load(f):
        most[0] = max(most[0], c.memory_usage)
        return pickle.load(f)

    def open_many(names, mode):
        from chest.codec import open_many as _open_many
        return _open_many(names, mode)

    c = make_chest(available_memory=2_000_000, open_many=open_many, load=load)
    for i in range(10):
        c[i] = np.zeros(50_000)  # 400 kB each: 4 MB in all
    c.flush()
    c.prefetch(list(range(10)))
    assert most[0] <= 2_000_000 and c.memory_usage <= 2_000_000
    assert c.inmem and all(float(c[i][0]) == 0.0 for i in range(10))


def test_prefetch_with_a_user_open_many_names_the_missing_key_and_file(make_chest):
    def open_many(names, mode):
        from chest.codec import open_many as _open_many
        return _open_many(names, mode)

    c = make_chest(available_memory=10**6, open_many=open_many)
    c[1], c[2] = "one", "two"
    c.flush()
    os.remove(c.key_to_filename(2))
    with pytest.raises(ValueFileError, match="key 2 from .*No such file") as e:
        c.prefetch([1, 2])
    assert e.value.filename == c.key_to_filename(2)


# -- threads ----------
def test_hits_do_not_wait_for_a_slow_write(make_chest):
    started, release = threading.Event(), threading.Event()

    def slow_dump(value, f):
        if isinstance(value, str) and value.startswith("slow"):
            started.set()
            release.wait(10)
        pickle.dump(value, f)

    c = make_chest(available_memory=1000, dump=slow_dump, load=pickle.load,
                   policy="largest")
    c["resident"] = 1
    c["slow"] = "slow" + "x" * 500
    # Setting "trigger" pushes the largest value, "slow", out in this thread.
    writer = threading.Thread(target=c.__setitem__, args=("trigger", "t" * 400))
    writer.start()
    assert started.wait(10)
    # The writer is inside dump; reads and writes of other keys go on.
    assert c["resident"] == 1
    c["other"] = 2
    # Still readable while being written; read, it is back in memory (a
    # use, and a change made in place to it must be kept): the write under
    # way is dropped when it ends.
    assert c["slow"].startswith("slow")
    release.set()
    writer.join(10)
    assert "slow" in c.inmem and "slow" not in c.store.files
    assert c["trigger"] == "t" * 400 and c["slow"] == "slow" + "x" * 500


# -- memory-mapped arrays ------------------------------------------------------
def test_mmap_loads_read_only_maps_and_evicts_them_for_free(make_chest, chest_path):
    c = make_chest(available_memory=10**6, mmap=True)
    c["x"] = np.arange(100_000.0)   # 800 kB
    c["y"] = np.arange(100_000.0)   # x goes to disk
    x = c["x"]                      # mapped, not read; y goes to disk
    assert not x.flags.writeable
    assert float(x[-1]) == 99_999.0
    spills = c.stats.spills
    c["y"]                          # x leaves memory: nothing written
    assert c.stats.spills == spills
    c["x"] = np.zeros(3)            # the old file goes; the map stays valid
    c.flush()
    assert float(x[-1]) == 99_999.0
    copy = x.copy()
    copy[0] = 1.0                   # to change one, copy it
    del x
    with pytest.raises(ValueError, match="mmap=True needs the default"):
        make_chest("other", mmap=True, dump=json.dump, load=json.load, mode="t")


def test_a_mapped_array_reshaped_in_place_is_written(make_chest, chest_path):
    # A read-only map's data cannot change, but its shape and dtype can:
    # taken for unchanged, the change was lost.
    c = make_chest(available_memory=10**6, mmap=True)
    c["x"] = np.arange(100_000.0)
    c["y"] = np.arange(100_000.0)   # x goes to disk
    x = c["x"]                      # mapped
    x.shape = (100, 1000)
    del x
    c["y"]                          # x leaves memory: written
    c.close()
    again = make_chest(path=chest_path)
    assert again["x"].shape == (100, 1000)


# -- values evicted while something else holds them ------------------------
def test_an_evicted_value_still_held_elsewhere_comes_back_without_a_read(make_chest):
    c = make_chest(available_memory=10**6)
    x = np.arange(100_000.0)        # 800 kB, held here too (a running task's input)
    c["x"] = x
    c["y"] = np.ones(100_000)       # x goes to disk
    assert "x" not in c.inmem and c.stats.spills == 1
    assert c["x"] is x              # the same object: no second copy from disk
    assert c.stats.reloads == 0 and "y" not in c.inmem
    y = c["y"]                      # nothing else held y: read from disk
    assert c.stats.reloads == 1 and float(y[0]) == 1.0
    del x, y
    c["z"] = np.zeros(100_000)      # y goes: nothing holds it, nothing written
    c["y"]
    assert c.stats.reloads == 2


def test_eviction_passes_over_values_held_elsewhere(make_chest):
    # Evicting a value a running task (or the caller) still holds frees no
    # memory: another leaves first, if one may.
    c = make_chest(available_memory=1_300_000)
    x = np.arange(100_000.0)        # 800 kB, least recently used, held here
    c["x"] = x
    c["a"] = np.zeros(50_000)       # 400 kB, held by the chest only
    c["b"] = np.ones(50_000)        # over budget: "a" leaves, not "x"
    assert "x" in c.inmem and "a" not in c.inmem and "b" in c.inmem
    size_b = c.memory.sizes["b"]
    assert c.evict() == size_b and "b" not in c.inmem
    assert "x" in c.inmem           # held: "b" left before it
    assert c.evict() > 0 and not c.inmem  # only held values left: they go too
    assert c["x"] is x and c.stats.reloads == 0


def test_an_evicted_value_changed_after_it_left_is_not_taken_back(
        make_chest, chest_path):
    # Changed after the chest let go of it, an object is no longer the key's
    # value (as without the weak memory): the file's value is read. Taking
    # it back would show a change that reverts once the object is gone.
    c = make_chest(available_memory=10**6)
    x = np.arange(100_000.0)
    c["x"] = x
    c["y"] = np.ones(100_000)       # x goes to disk
    x[0] = -1.0                     # changed after it left
    back = c["x"]
    assert back is not x and float(back[0]) == 0.0 and c.stats.reloads == 1
    back[1] = -2.0                  # changed while the chest holds it: kept
    c["y"]                          # x leaves again, and is written
    c.close()
    again = make_chest(path=chest_path)
    assert float(again["x"][0]) == 0.0 and float(again["x"][1]) == -2.0


@pytest.mark.parametrize("engine", ["sqlite", "lmdb"])
@pytest.mark.parametrize("flush", [False, True])
def test_a_small_value_changed_after_its_pickle_was_queued_is_not_taken_back(
        tmp_path, engine, flush):
    # A small value that left memory waits, pickled, for one commit of the
    # packed engine with others. Changed in place meanwhile by a caller who
    # kept it, it was read back changed (and a flush wrote the change);
    # after the commit, the value as it left was read. Now: as it left.
    if engine == "lmdb":
        pytest.importorskip("lmdb")
    c = Chest(path=str(tmp_path / "c"), available_memory=600_000, packed=engine)
    a = np.full(1000, 1.0)          # 8 kB: packed
    c["a"] = a
    for i in range(10):
        c[i] = np.full(10_000, float(i))  # 80 kB each: "a" leaves
    assert "a" not in c.inmem and "a" in c.flight.queued
    a[0] = 99.0                     # changed after it left
    if flush:
        c.flush()
    else:
        assert float(c["a"][0]) == 1.0
    c["a"][1] = 5.0                 # changed while the chest holds it: kept
    c.close()
    again = Chest(path=str(tmp_path / "c"))
    try:
        assert float(again["a"][0]) == 1.0
        assert float(again["a"][1]) == 5.0
    finally:
        again.close()


def test_an_evicted_value_held_elsewhere_is_not_brought_back_once_the_key_changes(
        make_chest):
    c = make_chest(available_memory=10**6)
    x = np.arange(100_000.0)
    c["x"] = x
    c["y"] = np.ones(100_000)       # x goes to disk
    c["x"] = np.zeros(10)           # set again: the old object is not the value
    assert c["x"] is not x and c["x"].shape == (10,)
    c["w"] = x
    c["y"]                          # w goes to disk
    del c["w"]
    with pytest.raises(KeyError):
        c["w"]
    c["w"] = np.zeros(5)
    assert c["w"] is not x


def test_a_value_read_after_close_and_changed_is_written_on_close(chest_path):
    c = Chest(path=chest_path, available_memory=10**6)
    c["x"] = np.zeros(3)
    c.close()
    x = c["x"]
    x[0] = 5
    c.close()
    again = Chest(path=chest_path)
    assert again["x"][0] == 5
    again.close()


def test_a_large_read_makes_room_in_another_thread(make_chest, monkeypatch):
    monkeypatch.setattr(chest.valueio, "LARGE_VALUE", 10_000)
    evicted_by: list = []
    make_room = Eviction._make_room

    def record(self, incoming):
        evicted_by.append(threading.current_thread().name)
        make_room(self, incoming)

    monkeypatch.setattr(Eviction, "_make_room", record)
    c = make_chest(available_memory=50_000)
    arrays = {i: np.full(2_000, i, dtype="f8") for i in range(20)}  # 16 kB each
    c.update(arrays)
    for i in [3, 17, 0, 9, 3, 12]:
        assert (c[i] == arrays[i]).all()
        assert c.memory_usage == sum(c._sizes.values()) <= c.available_memory
    assert evicted_by and set(evicted_by) == {"chest-make-room"}
    c[0][:] = -1  # changed in place after a read: written again when evicted
    for i in range(1, 20):
        c[i]
    assert (c[0] == -1).all()
    c.close()


def test_a_user_on_overflow_is_called_by_the_reading_thread(make_chest, monkeypatch):
    monkeypatch.setattr(chest.valueio, "LARGE_VALUE", 10_000)
    threads = set()
    c = make_chest(available_memory=50_000,
                   on_overflow=lambda key: threads.add(threading.current_thread()))
    for i in range(10):
        c[i] = np.full(2_000, i, dtype="f8")
    for i in range(10):
        assert c[i][0] == i
    assert threads == {threading.current_thread()}


def test_a_large_read_whose_room_cannot_be_made_keeps_every_value(make_chest,
                                                                  monkeypatch):
    monkeypatch.setattr(chest.valueio, "LARGE_VALUE", 10_000)
    c = make_chest(available_memory=50_000, max_disk=100_000)
    for i in range(8):  # 6 files of 16 kB fit under max_disk, then nothing more
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ChestWarning)
            c[i] = np.full(2_000, i, dtype="f8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ChestWarning)
        for i in range(8):
            assert c[i][0] == i
    assert c.memory_usage == sum(c._sizes.values())
    with pytest.warns(ChestWarning, match="could not be written"):
        c.close()


def test_large_values_are_fingerprinted_while_written(make_chest, monkeypatch):
    monkeypatch.setattr(chest.valueio, "LARGE_VALUE", 10_000)
    c = make_chest(available_memory=20_000)  # one 16 kB array fits
    c["a"] = np.zeros(2_000)
    c["b"] = np.ones(2_000)  # a is written (behind the caller)
    c.shrink()  # (waits for that write)
    assert c.stats.spills == 1
    assert c["a"][0] == 0  # b is written
    assert c["b"][0] == 1  # a is unchanged since it was written: not again
    assert c.stats.spills == 2
    c["a"][:] = -1  # b leaves unchanged; a is changed in place
    assert c["b"][0] == 1  # a is written again
    assert c.stats.spills == 3
    c.flush()
    assert (Chest(path=c.path, readonly=True)["a"] == -1).all()


def test_a_large_value_that_cannot_be_written_stays_in_memory(make_chest, monkeypatch):
    monkeypatch.setattr(chest.valueio, "LARGE_VALUE", 10_000)
    # No fingerprint left running on another thread for it. (Counting the
    # threads of that name failed when an earlier test had left one idle:
    # they are kept for the next job.)
    jobs = []
    fingerprints = chest.valueio._FINGERPRINTS
    run = fingerprints.run
    monkeypatch.setattr(fingerprints, "run", lambda *args: jobs.append(run(*args)) or jobs[-1])
    c = make_chest(available_memory=20_000, max_disk=1_000)
    with pytest.warns(ChestWarning, match="cannot be written"):
        c["big"] = np.ones(5_000)  # 40 kB: larger than the budget and max_disk
    assert (c["big"] == 1).all() and "big" in c.inmem
    assert all(job.wait(0) for job in jobs)
    with pytest.warns(ChestWarning, match="could not be written"):
        c.close()


def test_a_large_read_under_the_callers_lock_does_not_wait_for_itself(tmp_path):
    # In a child process: a deadlock must fail the test, not hang the suite.
    script = f"""
import numpy as np
import chest.valueio
from chest import Chest
chest.valueio.LARGE_VALUE = 10_000
c = Chest(path={str(tmp_path / "c")!r}, available_memory=20_000)
c["a"] = np.zeros(2_000)
c["b"] = np.ones(2_000)
with c.lock:
    assert c["a"][0] == 0
assert c.popitem()[0] == "b"
c.close()
print("done")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.strip() == "done", done.stderr


def test_reading_a_value_over_the_whole_budget_evicts_nothing(make_chest, monkeypatch):
    monkeypatch.setattr(chest.valueio, "LARGE_VALUE", 10_000)
    c = make_chest(available_memory=50_000)
    c["huge"] = np.ones(10_000)  # 80 kB: straight to disk
    for i in range(5):
        c[i] = np.full(1_000, i, dtype="f8")  # 8 kB each: all fit
    spills, in_memory = c.stats.spills, dict(c.inmem)
    assert (c["huge"] == 1).all()  # read from disk, not kept
    assert c.inmem.keys() == in_memory.keys() and c.stats.spills == spills


def test_a_users_functions_are_called_by_the_users_thread(make_chest, monkeypatch):
    monkeypatch.setattr(chest.valueio, "LARGE_VALUE", 10_000)
    threads = set()

    def dump(value, f):
        threads.add(threading.current_thread())
        pickle.dump(value, f)

    def name(key):
        threads.add(threading.current_thread())
        return key_to_filename(key)

    for kwargs in ({"dump": dump}, {"key_to_filename": name}):
        c = make_chest(f"c{len(kwargs)}{list(kwargs)[0]}", available_memory=20_000,
                       **kwargs)
        for i in range(4):
            c[i] = np.full(2_000, i, dtype="f8")
        for i in range(4):
            assert c[i][0] == i
        c.close()
    assert threads == {threading.current_thread()}


# -- write-through ----------
def test_write_through_keeps_small_values_in_the_journal(make_chest, chest_path):
    c = make_chest(write_through=True, available_memory=300, packed=None)
    c["a"] = {"n": 1}
    # One append, nothing else (the index of a new chest is written at once).
    assert files_in(chest_path) == [".journal", ".keys"]
    for i in range(10):
        c[i] = "v" * 50  # over the budget: evicted, clean, nothing written
    assert c.stats.spills == 0 and c["a"] == {"n": 1}  # read back from the journal
    assert "a" in c.store.journaled
    c.flush()  # folded into files, the index written, the journal emptied
    assert ".journal" not in files_in(chest_path) and "a" in files_in(chest_path)
    c.close()
    again = make_chest()
    assert again["a"] == {"n": 1} and again[9] == "v" * 50


def test_a_new_chest_written_through_packs_its_small_values(tmp_path):
    # Folding its journal into a file a value made a close slow (a file
    # each); a dump of the user's keeps a file each, an existing chest what
    # its index says, and packed= is followed.
    json_codec = {"dump": json.dump, "load": json.load, "mode": "t"}
    cases = [({}, "sqlite", []), (json_codec, None, ["a"]),
             ({"packed": None}, None, ["a"]), ({"packed": "sqlite"}, "sqlite", [])]
    for i, (kwargs, engine, files) in enumerate(cases):
        path = str(tmp_path / f"c{i}")
        with Chest(path=path, write_through=True, **kwargs) as c:
            c["a"] = {"n": 1}
            assert c.store.packed == engine
        assert [f for f in os.listdir(path) if not f.startswith(".")] == files
        codec = {k: v for k, v in kwargs.items() if k != "packed"}
        with Chest(path=path, write_through=True, **codec) as again:
            assert again.store.packed == engine and again["a"] == {"n": 1}
    with Chest(path=str(tmp_path / "files")) as c:
        c["a"] = 1
    with Chest(path=str(tmp_path / "files"), write_through=True) as again:
        assert again.store.packed is None


def test_write_through_a_value_that_cannot_be_written_raises_and_keeps_the_old(
        make_chest):
    c = make_chest(write_through=True)
    c["k"] = "old"
    with pytest.raises(TypeError):
        c["k"] = Unpicklable()
    assert c["k"] == "old" and "k" not in c.ledger.unwritable
    from chest import BoundToMemoryError
    with pytest.raises(BoundToMemoryError):
        c["k"] = Handle("held")
    assert c["k"] == "old"
    c.close()
    assert make_chest("chest")["k"] == "old"


@pytest.mark.parametrize("packed", [None, "sqlite", "lmdb"])
def test_write_puts_one_value_on_disk_at_once_in_a_chest_not_written_through(
        tmp_path, packed):
    path = str(tmp_path / "c")
    c = Chest(path=path, packed=packed)
    c["flushed"], c["big"] = "old", np.arange(10)
    c.flush()
    c.write("flushed", "new")
    c.write("added", {"a": 1})
    c.write("big", np.arange(20_000))  # (a large one: its file, at once)
    c["memory only"] = 1
    crashed = str(tmp_path / "crashed")
    shutil.copytree(path, crashed)  # the folder as a kill -9 now leaves it
    with Chest(path=crashed) as again:
        assert sorted(again) == ["added", "big", "flushed"]
        assert again["flushed"] == "new" and again["added"] == {"a": 1}
        assert (again["big"] == np.arange(20_000)).all()
    with pytest.raises(TypeError):
        c.write("flushed", Unpicklable())
    assert c["flushed"] == "new"  # unchanged
    # A large one (written to its file, not the journal) that cannot be
    # written: the old value was dropped first, and only in memory it was
    # lost ("the chest holds no data for it").
    c["in memory"] = "old"
    with pytest.raises(TypeError):
        c.write("in memory", [Unpicklable(), *range(20_000)])
    assert c["in memory"] == "old"
    c.close()
    with Chest(path=path, readonly=True) as reader:
        with pytest.raises(chest.ReadOnlyError):
            reader.write("flushed", 1)
        assert reader["flushed"] == "new"
    temporary = Chest()
    temporary.write("k", 1)  # (keeps nothing: a set)
    assert temporary["k"] == 1
    temporary.close()


def test_write_through_needs_a_path_and_folds_a_long_journal(make_chest, monkeypatch):
    with pytest.raises(ValueError, match="write_through"):
        Chest(write_through=True)
    monkeypatch.setattr(chest.core, "JOURNAL_FOLD", 1000)
    c = make_chest(write_through=True)
    for i in range(200):
        c["counter"] = i * 1000  # ~15 bytes a value: folded every ~70 sets
        assert c.store.unindexed_bytes <= 1000 + 40
    assert c["counter"] == 199000 and os.path.exists(c.store.index_path)


def test_write_through_from_many_threads_keeps_every_change(make_chest, chest_path):
    c = make_chest(write_through=True, available_memory=2000)

    def work(t):
        for i in range(200):
            c[(t, i % 20)] = (t, i)
            if i % 7 == 0:
                c.pop((t, (i + 3) % 20), None)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = dict(c.items())
    assert len(expected) > 40
    shutil.copytree(chest_path, chest_path + "-killed")  # as kill -9 would leave it
    reopened = make_chest("chest-killed")
    assert dict(reopened.items()) == expected


# -- copy, fromkeys, |, items ----------
@pytest.mark.parametrize("packed", [None, "sqlite"])
def test_copy_is_a_new_independent_chest(make_chest, tmp_path, packed):
    import copy
    c = make_chest(available_memory=1000, packed=packed)
    c["small"], c["big"] = {"n": 1}, np.arange(10_000)
    c["gone"] = 3
    c.flush()
    d = c.copy()
    assert d.path != c.path and dict(d) .keys() == dict(c).keys()
    assert d.available_memory == 1000 and d.store.packed == packed
    d["small"]["n"] = 2
    d["big"] = np.zeros(3)
    del d["gone"]
    d.flush()
    assert c["small"] == {"n": 1} and (c["big"] == np.arange(10_000)).all()
    assert c["gone"] == 3
    kept = c.copy(path=str(tmp_path / "kept"))
    kept.close()
    again = make_chest("kept")
    assert again["small"] == {"n": 1}
    shallow = copy.copy(c)
    assert isinstance(shallow, Chest) and dict(shallow.items()).keys() == c.keys()
    for x in (d, shallow):
        x.close()
    assert not os.path.exists(d.path)  # temporary: removed on close


def test_fromkeys_or_and_items_contains(make_chest, tmp_path):
    c = Chest.fromkeys(["a", "b"], 0, path=str(tmp_path / "f"), available_memory=0)
    assert dict(c) == {"a": 0, "b": 0} and c.available_memory == 0
    merged = c | {"b": 1, "c": 2}
    assert isinstance(merged, Chest) and dict(merged) == {"a": 0, "b": 1, "c": 2}
    assert list(merged) == ["a", "b", "c"] and dict(c) == {"a": 0, "b": 0}
    left = {"z": 9, "a": 5} | c
    assert isinstance(left, Chest) and dict(left) == {"z": 9, "a": 0, "b": 0}
    with pytest.raises(TypeError):
        c | [("x", 1)]
    items = c.items()
    assert ("a", 0) in items and ("a", 1) not in items
    assert "a" not in items and ("a",) not in items and 5 not in items
    for x in (c, merged, left):
        x.close()


def test_probe_fixes_bad_packed_a_file_path_and_write_through_errors(tmp_path):
    from chest import FolderError
    target = tmp_path / "new" / "a" / "b"
    with pytest.raises(ValueError, match="packed must be one of"):
        Chest(path=str(target), packed="redis")
    assert not (tmp_path / "new").exists()  # refused before any folder was made
    (tmp_path / "file").write_text("a file")
    with pytest.raises(FolderError, match="is a file, not a folder"):
        Chest(path=str(tmp_path / "file"))
    with pytest.raises(ValueError, match="not 0o777"):
        Chest(file_mode=0o777)
    c = Chest(path=str(tmp_path / "wt"), write_through=True)
    try:
        with pytest.raises(TypeError) as e:
            c["lock"] = threading.Lock()
        if sys.version_info >= (3, 11):
            assert "key 'lock' was not set" in "".join(e.value.__notes__)
        assert "lock" not in c
    finally:
        c.close()


def test_a_reader_reads_values_a_writer_keeps_in_its_journal(tmp_path):
    path = str(tmp_path / "c")
    w = Chest(path=path, write_through=True, packed="sqlite")
    try:
        w["a"], w["b"] = {"x": 1}, "bee"
        r = Chest(path=path, readonly=True)
        try:
            assert r["a"] == {"x": 1} and r["b"] == "bee"
            w["a"] = "changed"
            w.flush()  # the journal is emptied, then refilled:
            w["c"] = "c" * 30
            assert r["a"] == {"x": 1}  # what it held when the reader opened
        finally:
            r.close()
    finally:
        w.close()


def test_write_through_keeps_max_disk_with_the_journal(tmp_path):
    # (Files: a packed database's own pages and SQLite's WAL are not
    # counted, as README's max_disk says.)
    c = Chest(path=str(tmp_path / "c"), write_through=True, max_disk="1MB", packed=None)
    try:
        peak = 0
        for i in range(200):
            c["v"] = os.urandom(20_000)  # every version stays in the journal
            peak = max(peak, sum(os.path.getsize(os.path.join(d, f)) for d, _, names
                                 in os.walk(c.path) for f in names))
        assert peak <= 10**6 + 30_000
    finally:
        c.close()


@pytest.mark.parametrize("make", ["frame", "series"])
def test_a_pandas_value_read_back_unchanged_is_not_written_again(make_chest, chest_path,
                                                                 make):
    pd = pytest.importorskip("pandas")

    def value(seed):
        # 200 KB: above the small values compared by their pickle.
        frame = pd.DataFrame({"a": np.arange(12_500, dtype="f8") + seed,
                              "b": np.arange(12_500) * seed})
        return frame if make == "frame" else frame["a"].copy()

    c = make_chest(available_memory=2 * nbytes(value(1)) - 1)  # holds one
    c["x"] = value(1)
    c["y"] = value(2)                          # pushes x out
    x = c["x"]                                 # x back in, y out
    assert list(c.inmem) == ["x"]
    spills = c.stats.spills
    c["y"]                                     # x out unchanged: not written
    assert c.stats.spills == spills
    x = c["x"]
    assert list(c.inmem) == ["x"]
    if make == "frame":
        x.iloc[3, 0] = -1.0                    # changed in place
    else:
        x.iloc[3] = -1.0
    c["y"]                                     # x out changed: written
    assert c.stats.spills == spills + 1
    c.flush()
    again = Chest(path=chest_path)
    got = again["x"]
    assert (got.iloc[3, 0] if make == "frame" else got.iloc[3]) == -1.0
    expected = value(1)
    if make == "frame":
        expected.iloc[3, 0] = -1.0
    else:
        expected.iloc[3] = -1.0
    assert got.equals(expected)
    again.close()


class _Sized:
    """A small value that counts how often chest sizes it."""

    calls = 0

    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Sized) and other.n == self.n


@nbytes.register(_Sized)
def _size_sized(value: _Sized) -> int:
    _Sized.calls += 1
    return 1000 + value.n


def test_a_value_taken_back_from_flight_is_not_sized_again(make_chest):
    # Evicted to the packing queue (not committed yet), then read: the same
    # object comes back, counted with the size it left with. A value read
    # from disk is sized again (a list unpickled holds more room than the
    # one that was set: the size it left with would undercount it).
    _Sized.calls = 0
    c = make_chest(available_memory=2500, packed="sqlite")
    for i in range(3):
        c[i] = _Sized(i)
    assert _Sized.calls == 3 and len(c.inmem) == 2 and len(c.flight) == 1
    evicted = next(k for k in range(3) if k not in c.inmem)
    assert c[evicted] == _Sized(evicted)
    assert _Sized.calls == 3 and c.memory.sizes[evicted] == 1000 + evicted
    c.close()
    reopened = make_chest(available_memory=2500)
    assert reopened[evicted] == _Sized(evicted)
    assert _Sized.calls == 4  # read from disk: sized


@pytest.mark.parametrize("packed", [None, "sqlite"])
def test_a_value_read_again_is_sized_once_per_version_of_its_file(make_chest, packed):
    # Sized as it is read back (not with the size it was set with: a list or
    # a dict unpickled may hold more room), then not again while its file
    # holds the same bytes; set again, its next read from disk sizes it.
    _Sized.calls = 0
    c = make_chest(available_memory=1500, packed=packed)
    c["a"], c["b"] = _Sized(1), _Sized(2)
    c.flush()
    base = _Sized.calls
    for _ in range(10):  # each read evicts the other key
        assert c["a"] == _Sized(1) and c["b"] == _Sized(2)
    assert c.stats.reloads >= 18
    assert _Sized.calls - base <= 2
    assert c.memory_usage == c.memory.sizes[next(iter(c.inmem))] in (1001, 1002)
    c["a"] = _Sized(3)
    c.flush()
    base = _Sized.calls
    for _ in range(5):
        assert c["b"] == _Sized(2) and c["a"] == _Sized(3)
    assert _Sized.calls - base <= 1  # a, once
    c.close()
    reopened = make_chest(available_memory=1500)
    base = _Sized.calls
    for _ in range(5):
        assert reopened["a"] == _Sized(3) and reopened["b"] == _Sized(2)
    assert _Sized.calls - base == 2  # read from disk: sized, once each


class _Blob:
    """A value sized by default until a test registers its size."""

    def __init__(self, n: int) -> None:
        self.data = b"x" * n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Blob) and other.data == self.data


def test_a_size_registered_after_a_values_first_read_is_used(make_chest):
    c = make_chest(available_memory=10**6)
    c["a"] = _Blob(5000)
    c.flush()
    c.move_to_disk("a")
    assert c["a"] == _Blob(5000)
    before = c.memory.sizes["a"]
    nbytes.register(_Blob)(lambda blob: 100 + len(blob.data))
    c.move_to_disk("a")
    assert c["a"] == _Blob(5000)
    assert c.memory.sizes["a"] == 5100 != before


def test_pickling_or_deep_copying_a_chest_is_a_clear_error(make_chest):
    import copy
    c = make_chest()
    c["a"] = [1]
    for action in (pickle.dumps, copy.deepcopy):
        with pytest.raises(TypeError, match="owns its folder .*Chest\\(path="):
            action(c)
    assert pickle.loads(pickle.dumps(dict(c))) == {"a": [1]}
    assert copy.copy(c)["a"] == [1]  # a new chest


# -- a probe of Chest as a dict (stop 22) ---------------------------------------------
def test_views_are_reversible_and_name_their_mapping(make_chest):
    c = make_chest()
    c.update({"a": 1, "b": 2, "c": 3})
    d = dict(c)
    assert list(reversed(c.keys())) == list(reversed(d.keys()))
    assert list(reversed(c.values())) == list(reversed(d.values()))
    assert list(reversed(c.items())) == list(reversed(d.items()))
    for view in (c.keys(), c.values(), c.items()):
        assert view.mapping["b"] == 2
        with pytest.raises(TypeError):
            view.mapping["z"] = 1  # read-only, as a dict view's


def test_update_takes_keys_named_other_and_self(make_chest):
    c = make_chest()
    c.update(other={"x": 1}, self=2)
    c.update({"k": 3}, other=5)
    assert dict(c) == {"other": 5, "self": 2, "k": 3}


def test_pop_and_setdefault_are_one_step_each_for_threads(make_chest):
    c = make_chest(available_memory=10**4)
    keys = range(2000)
    errors, popped = [], []
    for k in keys:
        c[k] = k

    def pop():
        try:
            popped.extend(k for k in keys if c.pop(k, None) is not None)
        except Exception as e:  # KeyError, before: the key gone between its steps
            errors.append(e)

    def append(t):
        for k in keys:
            c.setdefault(("list", k), []).append(t)

    threads = [threading.Thread(target=pop) for _ in range(4)]
    threads += [threading.Thread(target=append, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and sorted(popped) == list(keys)
    assert all(sorted(c[("list", k)]) == [0, 1, 2, 3] for k in keys)


@pytest.mark.parametrize("view", ["chest", "keys", "values", "items"])
def test_a_loop_passes_over_keys_deleted_meanwhile(make_chest, view):
    c = make_chest(available_memory=0)
    c.update({k: [k] for k in range(6)})
    seen = []
    loop = {"chest": lambda: iter(c), "keys": c.keys, "values": c.values,
            "items": c.items}[view]()
    for x in loop:
        seen.append(x)
        if len(seen) == 2:
            del c[3]
            c[9] = [9]  # new keys are not visited
    expected = [0, 1, 2, 4, 5]
    assert seen == {"chest": expected, "keys": expected,
                    "values": [[k] for k in expected],
                    "items": [(k, [k]) for k in expected]}[view]


def test_a_relative_path_names_the_same_folder_after_a_chdir(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    c = Chest(path="data")
    c["x"] = 1
    c.close()
    monkeypatch.chdir(tmp_path / "b")
    c["y"] = 2  # takes the writer's lock again: on a/data
    try:
        assert not (tmp_path / "b" / "data").exists()
        script = ("from chest import Chest, ChestLockedError\n"
                  f"try: Chest(path={str(tmp_path / 'a' / 'data')!r})\n"
                  "except ChestLockedError: print('locked')\n")
        result = subprocess.run([sys.executable, "-c", script], capture_output=True,
                                text=True)
        assert result.stdout.strip() == "locked", result.stderr
    finally:
        c.close()
    assert Chest(path=str(tmp_path / "a" / "data"), readonly=True)["y"] == 2


@pytest.mark.parametrize("bad", [{"path": b"chest"}, {"lock_timeout": "x"}])
def test_a_bad_keyword_leaves_no_folder_behind(tmp_path, bad):
    path = str(tmp_path / "chest")
    kwargs = {"path": path, **bad}
    if isinstance(kwargs["path"], bytes):
        kwargs["path"] = path.encode()
    with pytest.raises(TypeError, match="path|lock_timeout"):
        Chest(**kwargs)
    assert not os.path.exists(path)


def test_data_may_be_a_series_or_an_array_of_pairs(make_chest):
    pd = pytest.importorskip("pandas")
    assert dict(make_chest("s", data=pd.Series({"a": 1, "b": 2}))) == {"a": 1, "b": 2}
    assert dict(make_chest("a", data=np.array([[1, 2], [3, 4]]))) == {1: 2, 3: 4}


def test_or_from_either_side_gives_values_of_their_own(make_chest):
    c = make_chest(available_memory=100)
    c["l"] = [1]
    c["x"] = np.zeros(100)  # on disk (linked)
    for new in ({} | c, c | {}):
        new["l"].append(2)
        new["x"][0] = 5
        assert c["l"] == [1] and c["x"][0] == 0
        new.close()
    assert ({"l": 0, "k": 1} | c)["l"] == [1]  # the chest's value wins, as for dicts


def test_a_copy_shares_a_value_that_cannot_be_copied(make_chest):
    c = make_chest(path=None)  # (temporary: nothing written at close)
    lock = threading.Lock()
    c["lock"] = lock        # cannot be written: it stays in memory
    c["l"] = [1]
    new = c.copy()          # was TypeError: cannot pickle '_thread.lock'
    assert new["lock"] is lock and new["l"] == [1] and new["l"] is not c["l"]
    new.close()


def test_prefetch_through_open_many_passes_over_a_value_larger_than_the_budget(
        make_chest):
    import contextlib

    @contextlib.contextmanager
    def my_open_many(names, mode="rb"):
        files = [open(n, mode) for n in names]
        try:
            yield files
        finally:
            for f in files:
                f.close()

    c = make_chest(available_memory=2000, open_many=my_open_many)
    c["a"], c["b"], c["big"] = np.zeros(100), np.ones(100), np.zeros(1000)
    c.flush()
    c.prefetch(["a", "b", "big"])
    assert sorted(c.inmem) == ["a", "b"]


def test_a_loop_holds_its_temporary_chest():
    # A loop over a temporary chest nothing else holds (s - t looped over at
    # once) must not see it closed and emptied under it.
    assert list(iter(Chest(data={1: "a", 2: "b"}))) == [1, 2]
    assert list(Chest(data={1: "a"}).items()) == [(1, "a")]
    assert list(reversed(Chest(data={1: "a", 2: "b"}).values())) == ["b", "a"]


def test_drop_removes_the_chests_files_and_no_others(tmp_path):
    # drop() was rmtree: a chest at "." removed the user's own files.
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "sub").mkdir()
    (folder / "sub" / "data.csv").write_text("1,2")
    inner = Chest(path=str(folder / "inner"))  # another chest inside
    inner["k"] = 1
    inner.close()
    c = Chest(path=str(folder), available_memory=0, packed="sqlite")
    c["small"], c[("a", "b")], c["big"] = 1, 2, np.zeros(10_000)
    c.flush()
    c["small"] = 3          # the flushed copy retired, a journal appended
    c.drop()
    assert len(c) == 0
    left = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    assert left == ["inner", "inner/.keys", "inner/k", "notes.txt", "sub",
                    "sub/data.csv"], left
    assert Chest(path=str(folder / "inner"), readonly=True)["k"] == 1
    alone = Chest(path=str(tmp_path / "alone"), available_memory=0)
    alone[("x", "y")] = 1
    alone.flush()
    alone.drop()
    assert not (tmp_path / "alone").exists()  # nothing else in it: gone


def test_an_empty_path_is_a_temporary_chest_as_in_chest_0_2_3():
    c = Chest(path="")  # was FileNotFoundError: ''
    c["a"] = 1
    folder = c.path
    assert os.path.isdir(folder) and c["a"] == 1
    c.close()
    assert not os.path.exists(folder)


def _hold_writes(c, monkeypatch):
    """Make ``c``'s file writes wait until the returned event is set; the
    names of the threads that wrote are collected in the returned list."""
    release, writers = threading.Event(), []

    def hold(write):
        def held(filename, value):
            writers.append(threading.current_thread().name)
            assert release.wait(30), "never released"
            return write(filename, value)
        return held

    for name in ("write_temp", "write_bytes_temp"):
        monkeypatch.setattr(c.store, name, hold(getattr(c.store, name)))
    return release, writers


def test_a_large_value_set_over_the_budget_is_written_behind_the_caller(
        make_chest, monkeypatch):
    monkeypatch.setattr(chest.valueio, "LARGE_VALUE", 10_000)
    c = make_chest(available_memory=20_000)  # one 16 kB array fits
    c["a"] = np.zeros(2_000)
    release, writers = _hold_writes(c, monkeypatch)
    setter = threading.Thread(target=c.__setitem__, args=("b", np.ones(2_000)))
    setter.start()
    setter.join(10)
    # The set returned while "a" was still being written, "a" already out
    # of memory (in flight: counted in neither memory_usage nor the files).
    assert not setter.is_alive(), "the set waited for the write"
    assert sorted(c.inmem) == ["b"] and c.memory_usage <= 20_000
    assert c.stats.spills == 0 and not os.path.exists(os.path.join(c.path, "a"))
    for _ in range(1000):
        if writers:
            break
        time.sleep(0.01)
    assert writers == ["chest-make-room"]
    release.set()
    assert c["a"][0] == 0  # in flight or written: read back either way
    c.shrink()  # waits for the write
    c["a"][:] = 7  # changed in memory: must be written again
    c.flush()
    reopened = Chest(path=c.path, readonly=True)
    assert (reopened["a"] == 7).all() and (reopened["b"] == 1).all()


@pytest.mark.parametrize("then", ["set", "flush", "close", "shrink", "drop"])
def test_what_waits_for_a_write_behind(make_chest, monkeypatch, then):
    monkeypatch.setattr(chest.valueio, "LARGE_VALUE", 10_000)
    c = make_chest(available_memory=20_000)
    c["a"] = np.zeros(2_000)
    release, _ = _hold_writes(c, monkeypatch)
    c["b"] = np.ones(2_000)  # "a" is being written behind
    action = {"set": lambda: c.__setitem__("c", 5), "flush": c.flush,
              "close": c.close, "shrink": c.shrink, "drop": c.drop}[then]
    waiter = threading.Thread(target=action)
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive(), f"{then} did not wait for the write behind"
    release.set()
    waiter.join(10)
    assert not waiter.is_alive()
    if then in ("set", "shrink"):
        assert c.stats.spills == 1 and "a" not in c.inmem
        assert c["a"][0] == 0


def test_a_value_written_behind_that_cannot_be_written_stays_in_memory(
        make_chest, monkeypatch):
    monkeypatch.setattr(chest.valueio, "LARGE_VALUE", 10_000)
    c = make_chest(available_memory=20_000, max_disk=1_000)  # no room on disk
    c["a"] = np.zeros(2_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c["b"] = np.ones(2_000)
        c.shrink()
    assert (c["a"] == 0).all() and "a" in c.inmem and "b" in c.inmem
    with pytest.warns(ChestWarning, match="could not be written"):
        c.close()


def test_small_values_and_a_callers_lock_are_evicted_before_the_set_returns(
        make_chest, monkeypatch):
    monkeypatch.setattr(chest.valueio, "LARGE_VALUE", 10_000)
    c = make_chest(available_memory=20_000)
    c["a"] = np.zeros(2_000)
    release, writers = _hold_writes(c, monkeypatch)
    release.set()
    c["b"] = np.ones(1_000)  # 8 kB: under LARGE_VALUE, written by the caller
    c["c"] = np.ones(1_000)
    assert writers == ["MainThread"] and c.stats.spills == 1
    with c.lock:
        c["d"] = np.ones(2_000)  # the thread would wait for the caller's lock
    assert writers[1:] == ["MainThread", "MainThread"]


def test_a_value_the_caller_still_holds_is_written_before_the_set_returns(
        make_chest, monkeypatch):
    # Written behind, an array the caller changed right after the set was
    # pickled half before and half after the change: a torn value, for good.
    monkeypatch.setattr(chest.valueio, "LARGE_VALUE", 10_000)
    c = make_chest(available_memory=20_000)
    x = np.zeros(2_000)
    c["a"] = x
    release, writers = _hold_writes(c, monkeypatch)
    release.set()
    c["b"] = np.ones(2_000)  # "a" leaves: x still refers to it
    assert writers == ["MainThread"] and c.stats.spills == 1
    x[:] = 5
    c.flush()
    assert (Chest(path=c.path, readonly=True)["a"] == 0).all()


def test_a_disk_full_met_behind_the_caller_is_warned_on_the_callers_thread(
        make_chest, monkeypatch):
    monkeypatch.setattr(chest.valueio, "LARGE_VALUE", 10_000)
    c = make_chest(available_memory=20_000)
    c["a"] = np.zeros(2_000)

    def full(filename, value):
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr(c.store, "write_bytes_temp", full)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        c["b"] = np.ones(2_000)  # "a" is written behind, and fails
        c.shrink()  # the warning comes with the next call that waits
    assert [w for w in seen if w.category is ChestWarning and w.filename == __file__
            and "no space to write key 'a'" in str(w.message)]
    assert "a" in c.inmem


WRITE_BEHIND_SCRIPT = r"""
import gc, os, sys, numpy as np
import chest.valueio
from chest import Chest
chest.valueio.LARGE_VALUE = 10_000
case, path = sys.argv[1], sys.argv[2]


def reopened_whole(collect=False):
    # The chest reopened once the index its collected close writes is there.
    import time
    for _ in range(200):
        if collect:
            gc.collect()
        reopened = Chest(path=path, readonly=True)
        if len(reopened) == 2:
            break
        reopened.close()
        time.sleep(0.05)
    assert (reopened["a"] == 0).all() and (reopened["b"] == 1).all()


if case == "gc":
    # The thread writing behind held the last reference: __del__ ran on it,
    # and close() waited for that thread's own job, for ever.
    c = Chest(path=path, available_memory=20_000)
    c["a"] = np.zeros(2_000)
    c["b"] = np.ones(2_000)
    del c
    gc.collect()
    reopened_whole()
elif case == "fork":
    # A child forked while the thread writing behind held the chest's lock
    # inherited it held, and hung at its first read.
    c = Chest(path=path, available_memory=200_000)
    for i in range(30):
        for j in range(20):
            c[("small", j)] = np.full(1_000, j)  # 8 kB each
        c[i] = np.full(10_000, i)  # 80 kB: the small ones go behind
        pid = os.fork()
        if pid == 0:
            ok = (c[i] == i).all() and (c[("small", 3)] == 3).all()
            os._exit(0 if ok else 1)
        assert os.waitpid(pid, 0)[1] == 0
    c.close()
elif case == "cycle":
    # A chest in a reference cycle (on_miss a method of its owner), dropped
    # while a thread writes behind it, and collected on that thread: its
    # close waited there for the very job that was running (the thread
    # hung, nothing was flushed) when the job held the eviction but not
    # the chest.
    import threading, time

    class Owner:
        def __init__(self):
            self.c = Chest(path=path, available_memory=20_000, on_miss=self.miss)

        def miss(self, key):
            pass

    owner = Owner()
    c = owner.c
    c["a"] = np.zeros(2_000)
    go, entered = threading.Event(), threading.Event()
    real = c.store.write_bytes_temp

    def held(filename, data):
        entered.set()
        assert go.wait(30)
        gc.collect()  # the collector runs on the writing thread
        return real(filename, data)

    c.store.write_bytes_temp = held
    c["b"] = np.ones(2_000)  # "a" is written behind
    assert entered.wait(10), "not written behind"
    del c, owner  # only the cycle holds the chest now
    go.set()
    time.sleep(1)  # (the writing thread collects it first)
    reopened_whole(collect=True)
elif case == "exit":
    # At exit, a temporary chest with a write behind: the interpreter hung
    # (its __del__ waited for a thread that no longer ran) or left a
    # partial file and the folder.
    c = Chest(available_memory=40_000)
    for i in range(3):
        c[i] = np.full(4_000, i)
    print(c.path)
"""


@pytest.mark.parametrize("case", ["gc", "cycle", "fork", "exit"])
def test_writes_behind_end_well_at_gc_fork_and_exit(tmp_path, case):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(chest.__file__)))
    for _ in range(3 if case == "exit" else 1):
        done = subprocess.run(
            [sys.executable, "-c", WRITE_BEHIND_SCRIPT, case, str(tmp_path / "c")],
            capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        if case == "exit":
            assert not os.path.exists(done.stdout.strip())
        shutil.rmtree(tmp_path / "c", ignore_errors=True)


def test_copy_passes_over_keys_another_thread_deletes(make_chest):
    # copy() read a key deleted after it listed the keys: ValueFileError
    # naming no file ("cannot read key 'k0' from : the file is missing").
    c = make_chest(available_memory=0)  # every value on disk
    for i in range(20):
        c[f"k{i}"] = i
    stop, errors = threading.Event(), []

    def churn():
        while not stop.is_set():
            for i in range(20):
                c.pop(f"k{i}", None)
                c[f"k{i}"] = i

    churner = threading.Thread(target=churn)
    churner.start()
    try:
        for _ in range(50):
            try:
                copied = c.copy()
            except Exception as e:
                errors.append(e)
                break
            assert all(copied[k] == int(k[1:]) for k in copied)
            copied.close()
    finally:
        stop.set()
        churner.join()
    assert not errors, errors


FORKED_CHILD_SCRIPT = r"""
import os, sys, numpy as np
from chest import Chest, ReadOnlyError
path = sys.argv[1]
n = 1_000_000 // 8  # 1 MB arrays, 2.2 MB budget
for c in (Chest(path=path, available_memory=int(2.2e6)),
          Chest(available_memory=int(2.2e6))):  # and a temporary one
    c["a"], c["b"], c["c"] = np.zeros(n), np.ones(n), np.full(n, 2.0)
    c.flush()
    c["d"] = np.full(n, 3.0)  # only in memory
    files = sorted(os.listdir(c.path))
    pid = os.fork()
    if pid == 0:
        refused = 0
        for change in (lambda: c.__setitem__("a", np.full(n, 9.0)),
                       lambda: c.__delitem__("b"), c.flush):
            try:
                change()
            except ReadOnlyError as e:
                refused += "forked child" in str(e)
        # Reads make room: "d" cannot be written here, so it stays.
        ok = [float(c[k][0]) for k in "abcd"] == [0, 1, 2, 3] and "d" in c.inmem
        os._exit(0 if refused == 3 and ok else 1)
    assert os.waitpid(pid, 0)[1] == 0, "the child"
    # The child wrote, renamed and removed nothing of the parent's.
    assert sorted(os.listdir(c.path)) == files, (files, os.listdir(c.path))
    assert [float(c[k][0]) for k in "abcd"] == [0, 1, 2, 3]
    c.close()
"""


def test_a_forked_child_changes_nothing_of_its_parents_chest(tmp_path):
    # A child that set keys evicted into the parent's folder under the
    # parent's names: the parent then read the child's values, and another
    # of its flushed keys was missing.
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(chest.__file__)))
    done = subprocess.run([sys.executable, "-c", FORKED_CHILD_SCRIPT, str(tmp_path / "c")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name", ["on_miss", "on_overflow"])
def test_a_callback_that_is_not_callable_is_refused_at_once(tmp_path, name):
    # (on_overflow=None was called, and raised, only once a value left memory)
    with pytest.raises(TypeError, match=f"{name} must be callable"):
        Chest(path=str(tmp_path / "c"), **{name: None})
    assert not os.path.exists(tmp_path / "c")


@pytest.mark.parametrize("write_through", [False, True])
@pytest.mark.parametrize("count", [1_000, 10_000])  # 8 kB (journaled), 80 kB
def test_on_overflow_may_raise_the_budget_for_the_value_it_was_called_for(
        make_chest, write_through, count):
    c = None
    called = []

    def grow(key):
        called.append(key)
        c.available_memory = 200_000

    c = make_chest(available_memory=1000, on_overflow=grow, write_through=write_through)
    c["big"] = np.zeros(count)  # over the budget, which on_overflow raises
    assert called == ["big"] and "big" in c.inmem


def test_messages_of_eviction_name_the_chest_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = Chest(path="rel", available_memory=1000)
    c["a"] = b"x" * 600

    def full(filename, data):
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr(c.store, "write_bytes_temp", full)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        c["b"] = b"y" * 600  # "a" cannot leave: the disk is full
        c.evict()  # (dask's path)
    found = [w for w in seen if w.category is ChestWarning]
    assert len(found) == 2 and all(str(w.message).startswith("chest at rel: no space")
                                   for w in found)
    # Each names the caller's line, not one of chest's own.
    assert {w.filename for w in found} == {__file__}
    monkeypatch.undo()
    c.drop()


def test_packed_limit_changed_after_opening_holds_for_every_write(make_chest):
    c = make_chest(available_memory=1000, packed="sqlite")
    c.packed_limit = 0  # pack nothing from now on
    c["a"] = b"x" * 600
    c["b"] = b"y" * 600  # evicts "a"
    c.flush()
    assert not c.store.slots and sorted(c.store.files) == ["a", "b"]
    c.packed_limit = "1KiB"
    assert c.packed_limit == c.io.packed_limit == c.store.packed_limit == 1024
    with pytest.raises(ValueError, match="packed_limit must be at most"):
        c.packed_limit = "1MiB"
    assert c.packed_limit == 1024


def test_a_chest_closed_again_after_use_stays_closed(tmp_path):
    # Used after close(), its next close took the writer's lock again inside
    # flush, which marked it open: garbage collection and exit then flushed
    # it once more, warning again of the value that cannot be written.
    c = Chest(path=str(tmp_path / "c"))
    c["x"] = [1]
    c["lock"] = threading.Lock()  # cannot be written: stays in memory
    with pytest.warns(ChestWarning, match="could not be written"):
        c.close()
    assert c["x"] == [1]  # read back: open again (it may be changed in place)
    with pytest.warns(ChestWarning, match="could not be written"):
        c.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c.close()  # closed: nothing more
        del c
        gc.collect()
