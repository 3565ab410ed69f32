"""State: persistedstate's small state, with every change on disk on return."""
from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
import threading

import pytest
from conftest import kill_when_busy

yaml = pytest.importorskip("yaml")

from chest.errors import ChestLockedError, FolderError  # noqa: E402
from chest.state import State  # noqa: E402


class Point:
    def __init__(self, x):
        self.x = x

    def __eq__(self, other):
        return isinstance(other, Point) and other.x == self.x


def copy_of(path, tmp_path, name="copy.yaml"):
    """The file as a kill -9 (or a copy while open) would leave it."""
    target = str(tmp_path / name)
    shutil.copyfile(path, target)
    return target


def test_attributes_defaults_and_the_mapping(tmp_path):
    path = str(tmp_path / "s.yaml")
    s = State(path, last_id=0, name="first")
    s.last_id = 5
    s._private = "not stored"
    assert s.last_id == 5 and s["name"] == "first" and s._private == "not stored"
    with pytest.raises(AttributeError, match="no 'missing'"):
        s.missing
    with pytest.raises(TypeError):
        s[1] = "keys are names"
    assert sorted(s) == ["last_id", "name"] and len(s) == 2 and "name" in s
    del s.name
    assert "name" not in s
    s.close()
    again = State(path, last_id=100, other=1)  # defaults fill missing keys only
    assert again.last_id == 5 and again.other == 1 and "_private" not in again
    again.close()


def test_every_change_is_in_the_file_when_the_call_returns(tmp_path):
    path = str(tmp_path / "s.yaml")
    s = State(path, counter=0, items=[], cfg={"n": 1})
    for _ in range(100):
        s.counter += 1
    s.items.append("a")
    s.items.insert(0, "first")
    s.cfg["n"] += 1
    s.cfg.setdefault("m", [1])
    s["cfg"]["m"].append(2)
    del s.items[1]
    copy = copy_of(path, tmp_path)  # while open: the file is the state
    assert yaml.safe_load(open(copy)) == {"counter": 100, "items": ["first"],
                                          "cfg": {"n": 2, "m": [1, 2]}}
    copied = State(copy)
    assert dict(copied) == {"counter": 100, "items": ["first"],
                            "cfg": {"n": 2, "m": [1, 2]}}
    copied.close()
    s.close()


def test_closed_the_file_is_a_plain_sorted_mapping(tmp_path):
    path = str(tmp_path / "s.yaml")
    with State(path) as s:
        s.string = "Ahoi"
        s.bool = True
        for i in range(10):
            s.n = i
    assert open(path).read() == "bool: true\nn: 9\nstring: Ahoi\n"


def test_values_yaml_cannot_carry_round_trip(tmp_path):
    path = str(tmp_path / "s.yaml")
    values = {"t": (1, "a"), "s": {1, 2}, "f": frozenset({3}), "b": b"\x00\xff",
              "d": datetime.datetime(2026, 11, 30, 4, 0), "p": Point(7),
              "nested": {"t": (1, (2,)), "l": [b"x"]}, "text": "multi\nline: 'q'",
              "weird key: yes": 1, "nan": float("inf")}
    with State(path) as s:
        s.update(values)
    copy = copy_of(path, tmp_path)
    for p in (path, copy):
        s = State(p)
        assert dict(s) == values
        s.close()


def test_a_line_cut_by_a_crash_is_dropped(tmp_path):
    path = str(tmp_path / "s.yaml")
    with State(path, kept=1) as s:
        pass
    with open(path, "a") as f:
        f.write("kept: 2\nhalf: [1, 2")  # the last line, cut short
    s = State(path)
    assert dict(s) == {"kept": 2}
    s.half = "whole"
    s.close()
    assert State(path).half == "whole"


def test_a_file_a_person_edited(tmp_path):
    path = str(tmp_path / "s.yaml")
    with open(path, "w") as f:
        f.write("{a: 1, b: [x, y]}")  # flow style, no final newline
    with State(path) as s:
        s.c = 3
        assert dict(s) == {"a": 1, "b": ["x", "y"], "c": 3}
    with open(path, "w") as f:
        f.write("- not a mapping\n")
    with pytest.raises(FolderError, match="not a mapping"):
        State(path)
    with pytest.raises(FolderError, match="no such folder"):
        State(str(tmp_path / "missing" / "s.yaml"))


def test_threads_keep_every_change(tmp_path):
    path = str(tmp_path / "s.yaml")
    s = State(path)

    def work(t):
        for i in range(200):
            s[f"t{t}"] = i

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert State(copy_of(path, tmp_path)) == {f"t{t}": 199 for t in range(4)}
    s.close()


def test_one_process_at_a_time(tmp_path):
    path = str(tmp_path / "s.yaml")
    s = State(path, x=1)
    try:
        code = f"from chest.state import State; State({path!r})"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                text=True)
        assert "ChestLockedError" in result.stderr
        s.x = 2
        code = f"import yaml; print(yaml.safe_load(open({path!r}))['x'])"
        reader = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                text=True)
        assert reader.stdout.strip() == "2"  # any YAML reader sees the state
    finally:
        s.close()
    assert ChestLockedError


COUNTING_CHILD = '''
import sys
from chest.state import State
s = State(sys.argv[1], counter=0, log=[])
print("ready", flush=True)
for i in range(1, 10**9):
    s.counter = i
    if i % 10 == 0:
        s.log.append(i)
    print(i, flush=True)
'''


def test_kill_9_loses_no_change_whose_call_returned(tmp_path):
    for attempt, delay in enumerate([0.1, 0.4, 0.8]):
        path = str(tmp_path / f"s{attempt}.yaml")
        out = kill_when_busy([COUNTING_CHILD, path], delay)
        last = max([int(x) for x in out.split()] or [0])
        s = State(path)
        try:
            # Every change of the calls that returned; the one under way
            # (the counter, then the log's append) may be there.
            assert s.counter in (last, last + 1)
            assert s.log in (list(range(10, last + 1, 10)),
                             list(range(10, last + 2, 10)))
            if s.counter == last:
                assert s.log == list(range(10, last + 1, 10))
        finally:
            s.close()
        assert last > 50
