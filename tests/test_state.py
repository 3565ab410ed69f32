"""State: persistedstate's small state, with every change on disk on return."""
from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import copy
import pickle
import sys
import threading
import time

import warnings

import pytest
from conftest import kill_when_busy

yaml = pytest.importorskip("yaml")

from chest.errors import ChestLockedError, ChestWarning, FolderError, ReadOnlyError  # noqa: E402
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


def test_ints_over_pythons_digit_limit_round_trip(tmp_path):
    # str() of an int of more than 4,300 digits raises: setting one raised
    # ValueError (the state unchanged, but the value refused).
    path = str(tmp_path / "s.yaml")
    big = 7 ** 10_000
    with State(path) as s:
        s.big = big
        s.items = [1]
        s["items"].append(-big)
        s.n = 5
    copy = copy_of(path, tmp_path)
    for p in (path, copy):
        s = State(p)
        assert s.big == big and s["items"] == [1, -big] and s.n == 5
        s.close()


def test_a_line_cut_by_a_crash_is_dropped(tmp_path):
    path = str(tmp_path / "s.yaml")
    with State(path, kept=1) as s:
        pass
    with open(path, "a") as f:
        f.write("kept: 2\nhalf: [1, 2")  # the last line, cut short
    with pytest.warns(ChestWarning, match="is left out"):
        s = State(path)
    assert dict(s) == {"kept": 2}
    assert open(path + ".dropped").read() == "half: [1, 2\n"  # nothing is lost
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


def test_what_is_appended_reads_back_as_it_was_set(tmp_path):
    # The file is the state while open: a copy reads every appended line
    # back as it was set (floats YAML reads as text without a point, text
    # outside the BMP, line breaks in lists, keys YAML reads as true/null,
    # keys too long for a line, a lone surrogate).
    path = str(tmp_path / "s.yaml")
    values = {"small": 1e-05, "big": 1e16, "neg": -2.5e-300, "emoji": "ok \U0001F600",
              "escaped": "\\ud83d\\ude00", "lines": ["line 1\nline 2", "\n", "a\n\nb"],
              "nested": {"t": ("x\ny",), "e": "\U0001F600\u2028\x85\x00"},
              "Yes": 1, "NO": 2, "True": 3, "Null": 4, "~": 5, "k" * 1500: 6,
              "lone": "\ud800 alone"}
    s = State(path)
    for key, value in values.items():
        s[key] = value
    copied = State(copy_of(path, tmp_path))
    assert dict(copied) == values and type(copied.small) is float
    copied.close()
    s.close()
    again = State(path)
    assert dict(again) == values
    again.close()
    with pytest.raises(ValueError, match="lone surrogate"):
        State(str(tmp_path / "t.yaml"))["\ud800"] = 1


def test_a_state_used_after_close_keeps_every_change(tmp_path):
    path = str(tmp_path / "s.yaml")
    s = State(path, a=1, items=[1])
    items = s.items
    s.close()
    s.b = 2                       # takes the file again
    items.append(2)               # a view taken before close()
    s.close()
    assert yaml.safe_load(open(path)) == {"a": 1, "b": 2, "items": [1, 2]}
    items = s.items
    s.close()
    with open(path, "w") as f:    # changed by a person while closed
        f.write("a: 10\nitems: [5]\n")
    s.c = 3                       # read again, then changed
    assert dict(s) == {"a": 10, "items": [5], "c": 3}
    with pytest.raises(RuntimeError, match="read 'items' again"):
        items.append(6)           # shows the file as it was: refused
    s.items.append(6)
    s.items = ["new"]
    with pytest.raises(RuntimeError):
        items.append(7)
    s.close()
    assert yaml.safe_load(open(path)) == {"a": 10, "c": 3, "items": ["new"]}


def test_readonly_beside_a_writer_and_waiting_for_the_lock(tmp_path):
    path = str(tmp_path / "s.yaml")
    writer = State(path, n=1)
    reader = State(path, readonly=True, missing=0)
    assert dict(reader) == {"n": 1, "missing": 0}
    with pytest.raises(ReadOnlyError):
        reader.n = 2
    with pytest.raises(ReadOnlyError):
        del reader.n
    assert "readonly" not in writer and "missing" not in writer
    with pytest.raises(ChestLockedError):
        State(path)
    closer = threading.Timer(0.3, writer.close)
    closer.start()
    waited = State(path, lock_timeout=10)  # until the writer lets go
    assert waited.n == 1
    waited.close()
    closer.join()
    with pytest.raises(ValueError, match="write_through"):
        State(path, write_through=False)
    with pytest.raises(FolderError, match="no state"):
        State(str(tmp_path / "none.yaml"), readonly=True)


def test_a_rewritten_file_is_never_held_by_two_writers(tmp_path):
    # Each deletion renames a new file into place: an opener that locked
    # the old one must not take it for the state.
    path = str(tmp_path / "s.yaml")
    s = State(path)
    stop = time.monotonic() + 1.5
    opened, locked = [], 0

    def churn():
        while time.monotonic() < stop:
            s.tmp = 1
            del s.tmp

    thread = threading.Thread(target=churn)
    thread.start()
    while time.monotonic() < stop:
        try:
            opened.append(State(path))
        except ChestLockedError:
            locked += 1
    thread.join()
    for other in opened:
        other.close()
    s.close()
    assert not opened and locked > 0


def test_names_of_states_methods(tmp_path):
    path = str(tmp_path / "s.yaml")
    s = State(path)
    s["keys"], s.items, s["path"] = ["k"], [1, 2], "/srv/data"
    expected = {"keys": ["k"], "items": [1, 2], "path": "/srv/data"}
    assert dict(s) == expected and {**s} == expected and s == expected
    assert s.items == [1, 2] and callable(s.keys) and s.path == path
    with pytest.raises(AttributeError, match="state\\['path'\\] = value"):
        s.path = "elsewhere"
    with pytest.raises(AttributeError, match="state\\['close'\\]"):
        s.close = "tonight"
    s.clear()
    assert dict(s) == {} and yaml.safe_load(open(path)) is None
    with pytest.raises(TypeError, match="cannot be copied"):
        copy.copy(s)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(s)
    s.close()


def test_a_person_may_indent_the_mapping_or_leave_it_null(tmp_path):
    for i, text in enumerate(["  a: 1\n  c: 3\n", "~\n", "null\n", "--- \na: 1\n",
                              "a: 1\n...\n"]):
        path = str(tmp_path / f"s{i}.yaml")
        with open(path, "w") as f:
            f.write(text)
        s = State(path)
        before = dict(s)
        s.b = 2
        copied = State(copy_of(path, tmp_path, f"copy{i}.yaml"))
        assert dict(copied) == {**before, "b": 2}
        copied.close()
        s.close()


def test_shared_objects_anchors_and_aliases(tmp_path):
    # An object held twice is written twice (an anchor repeated in two
    # appended lines made the file unreadable); a person's alias gives each
    # key its own list.
    path = str(tmp_path / "s.yaml")
    t = (1, 2)
    s = State(path)
    s.a, s.b = [t, t], [t, t]
    copied = State(copy_of(path, tmp_path))
    assert dict(copied) == {"a": [t, t], "b": [t, t]}
    copied.close()
    s.close()
    with open(path, "w") as f:
        f.write("base: &b [1, 2]\nother: *b\n")
    s = State(path)
    s.base.append(3)
    assert s.other == [1, 2]
    assert yaml.safe_load(open(copy_of(path, tmp_path, "c2.yaml")))["other"] == [1, 2]
    s.close()


def test_what_a_crash_or_a_full_disk_leaves_in_a_rewrite(tmp_path, monkeypatch):
    path = str(tmp_path / "s.yaml")
    s = State(path, keep="x" * 3000, other=1)
    left = tmp_path / ".tmp.s.yaml.0123456789ab"  # a rewrite a crash stopped
    left.write_text("keep: partial\n")
    mine = tmp_path / ".tmp.s.yaml.not-ours"
    mine.write_text("a user's file\n")
    s.close()
    write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: write(fd, bytes(data)[:100]))
    s = State(path)               # opening removes the rewrite's leftover only
    assert not left.exists() and mine.exists()
    s.tmp = 1
    del s.tmp                     # a rewrite with short writes: written whole
    monkeypatch.setattr(os, "write", write)
    assert yaml.safe_load(open(path)) == {"keep": "x" * 3000, "other": 1}
    s.close()


def test_a_file_that_cannot_be_read_keeps_nothing_aside(tmp_path):
    path = str(tmp_path / "s.yaml")
    with open(path, "w") as f:
        f.write("a: [\nb: 2")
    for _ in range(2):
        with pytest.raises(FolderError):
            State(path)
    assert not os.path.exists(path + ".dropped")
    assert open(path).read() == "a: [\nb: 2"


def test_setdefault_and_copies_of_what_the_state_holds(tmp_path):
    path = str(tmp_path / "s.yaml")
    s = State(path, cfg={})
    s.setdefault("seen", []).append("a")
    s.cfg.setdefault("ids", []).append(1)
    assert s.setdefault("seen", ["other"]) == ["a"]
    assert yaml.safe_load(open(path)) == {"cfg": {"ids": [1]}, "seen": ["a"]}
    mine = copy.copy(s.seen)
    mine.append("not the state's")
    deep = copy.deepcopy(s.cfg)
    deep["ids"].append(2)
    assert s.seen == ["a"] and s.cfg == {"ids": [1]}
    with pytest.raises(TypeError, match="cannot be copied"):
        copy.deepcopy(s)
    s.close()


def test_a_reader_waits_for_a_line_being_appended(tmp_path):
    # A reader beside a writer may find half a line ("n: 12" of "n: 1234"):
    # it reads again until the line ends.
    path = str(tmp_path / "s.yaml")
    with open(path, "w") as f:
        f.write("n: 1\nn: 12")
    finish = threading.Timer(0.01, lambda: open(path, "a").write("34\n"))
    finish.start()
    reader = State(path, readonly=True)
    finish.join()
    assert reader.n == 1234


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    path = str(tmp_path / "s.yaml")
    with open(path, "wb") as f:
        f.write(b"a: \xff\xfe\n")
    for readonly in (False, True):
        with pytest.raises(FolderError, match="not UTF-8"):
            State(path, readonly=readonly)


def test_a_nested_change_that_cannot_be_written_changes_nothing(tmp_path):
    # It stayed in memory: every later write of the key (and each rewrite,
    # close() too) raised again.
    path = str(tmp_path / "s.yaml")
    s = State(path, cfg={"n": 1}, items=[2, 1], other=0)
    failing = [lambda: s.cfg.__setitem__("bad", threading.Lock()),
               lambda: s.cfg.update({"m": 2, "bad": threading.Lock()}),
               lambda: s.cfg.setdefault("bad", threading.Lock()),
               lambda: s.items.append(threading.Lock()),
               lambda: s.items.extend([2, threading.Lock()]),
               lambda: s.items.insert(0, threading.Lock()),
               lambda: s.items.__setitem__(slice(0, 1), [threading.Lock()])]
    for change in failing:
        with pytest.raises(TypeError):
            change()
        assert s.cfg == {"n": 1} and s.items == [2, 1]
    with pytest.raises(TypeError):
        s.items.sort(key=lambda x: "a" if x == 1 else 0)  # cannot be compared
    assert s.items == [2, 1]
    s.cfg["n"] = 2
    s.items.append(3)
    del s.other
    s.close()
    assert yaml.safe_load(open(path)) == {"cfg": {"n": 2}, "items": [2, 1, 3]}


def test_a_copy_taken_while_a_line_is_appended_leaves_it_out(tmp_path):
    # "counter: 12" of "counter: 1234" was read as 12, "flag: tr" as "tr".
    path = str(tmp_path / "s.yaml")
    s = State(path, counter=1000, flag=False)
    s.counter = 1234
    s.flag = True
    data = open(path, "rb").read()
    s.close()
    for cut in (3, 6, 9):  # '..1234\n"flag": tr', '.."flag":', '..1234\n"fla'
        copied = str(tmp_path / f"copy{cut}.yaml")
        open(copied, "wb").write(data[:-cut])
        for readonly in (True, False):
            with pytest.warns(ChestWarning, match="no line break"):
                c = State(copied, readonly=readonly)
            assert dict(c) == {"counter": 1234, "flag": False}
            c.close()
    first = str(tmp_path / "first.yaml")  # the first line of a new file
    open(first, "w").write('"counter": 12')
    with pytest.warns(ChestWarning, match="no line break"):
        assert dict(State(first, readonly=True)) == {}
    edited = str(tmp_path / "edited.yaml")  # a person's last line, no break
    open(edited, "w").write("a: 1\ncounter: 12")
    for readonly in (True, False):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            c = State(edited, readonly=readonly)
        assert dict(c) == {"a": 1, "counter": 12}
        c.close()
    other = str(tmp_path / "flow.yaml")  # what a person writes stays read
    open(other, "w").write("a: [1,\nb]")
    assert dict(State(other, readonly=True)) == {"a": [1, "b"]}


def test_to_dict_is_a_plain_copy_of_the_state(tmp_path):
    # The advice was dict(state): it holds the state's views, and a change
    # to it was written.
    path = str(tmp_path / "s.yaml")
    s = State(path, cfg={"n": 1, "l": [1]}, n=5)
    with pytest.raises(TypeError, match=r"state\.to_dict\(\)"):
        copy.copy(s)
    with pytest.raises(TypeError, match=r"state\.to_dict\(\)"):
        pickle.dumps(s)
    plain = s.to_dict()
    assert plain == {"cfg": {"n": 1, "l": [1]}, "n": 5}
    assert type(plain["cfg"]) is dict and type(plain["cfg"]["l"]) is list
    assert pickle.loads(pickle.dumps(plain)) == plain
    plain["cfg"]["n"] = 99
    plain["cfg"]["l"].append(2)
    assert s.cfg == {"n": 1, "l": [1]}
    assert State(path, readonly=True).cfg == {"n": 1, "l": [1]}
    assert pickle.loads(pickle.dumps(dict(s))) == {"cfg": {"n": 1, "l": [1]}, "n": 5}
    s["to_dict"] = "a key"  # a stored name wins, as for items, get...
    assert s.to_dict == "a key" and State.to_dict(s)["to_dict"] == "a key"
    s.close()


def test_views_behave_as_the_lists_and_dicts_they_show(tmp_path):
    path = str(tmp_path / "s.yaml")
    s = State(path, done=["a", ["b"]], cfg={"n": 1, "l": [1]})
    done, cfg = s.done, s.cfg
    made = [done + ["x"], ["x"] + done, done * 2, 2 * done, done.copy(),
            copy.copy(done), pickle.loads(pickle.dumps(done)), done[:1], done[::-1],
            cfg | {"m": 2}, {"m": 2} | cfg, cfg.copy(), copy.copy(cfg),
            pickle.loads(pickle.dumps(cfg)), copy.deepcopy(cfg)]
    assert made == [["a", ["b"], "x"], ["x", "a", ["b"]], ["a", ["b"]] * 2,
                    ["a", ["b"]] * 2, ["a", ["b"]], ["a", ["b"]], ["a", ["b"]], ["a"],
                    [["b"], "a"], {"n": 1, "l": [1], "m": 2},
                    {"m": 2, "n": 1, "l": [1]}, {"n": 1, "l": [1]}, {"n": 1, "l": [1]},
                    {"n": 1, "l": [1]}, {"n": 1, "l": [1]}]
    for value in made:  # plain, and none of it the state's
        assert type(value) in (list, dict)
        for item in (value.values() if type(value) is dict else value):
            if type(item) is list:
                item.append("not the state's")
    assert s.done == ["a", ["b"]] and s.cfg == {"n": 1, "l": [1]}
    assert done < ["b"] and done <= ["a", ["b"]] and done > ["a"] and done >= done
    assert not done < ["a"] and ["a"] < done and done == ["a", ["b"]] != ["a"]
    assert "a" in done and ["b"] in done and "n" in cfg and "x" not in cfg
    s.done += ["c"]
    s.done *= 2
    s.cfg |= {"m": 2}
    s.cfg["l"] += [2]
    assert yaml.safe_load(open(path)) == {"done": ["a", ["b"], "c"] * 2,
                                          "cfg": {"n": 1, "l": [1, 2], "m": 2}}
    s.close()


def test_a_call_on_a_view_is_one_write(tmp_path, monkeypatch):
    # The mixins changed one item at a time, each a write of the whole
    # value: 1,000 items took seconds, and a kill left half of a call done.
    path = str(tmp_path / "s.yaml")
    s = State(path, items=[], cfg={}, n=0)
    writes = []
    write_key = State._write_key
    monkeypatch.setattr(State, "_write_key",
                        lambda self, key: (writes.append(key), write_key(self, key)))
    calls = [lambda: s.items.extend(range(1000)), lambda: s.items.reverse(),
             lambda: s.items.remove(500), lambda: s.items.pop(),
             lambda: s.items.sort(), lambda: s.items.clear(),
             lambda: s.__setattr__("items", s.items.__iadd__([1, 2, 3])),
             lambda: s.cfg.update({str(i): i for i in range(1000)}),
             lambda: s.cfg.pop("7"), lambda: s.cfg.popitem(),
             lambda: s.cfg.setdefault("new", []), lambda: s.cfg.clear(),
             lambda: s.cfg.__setitem__("l", [1]),
             lambda: s.cfg.__setitem__("l", s.cfg["l"].__iadd__([2]))]
    for call in calls:
        writes.clear()
        call()
        assert writes == [writes and writes[0]] and writes[0] in ("items", "cfg")
    s.close()
    assert yaml.safe_load(open(path)) == {"items": [1, 2, 3], "cfg": {"l": [1, 2]},
                                          "n": 0}


def test_a_value_that_holds_itself_is_refused_by_name(tmp_path):
    # A bare RecursionError, the state and the file not named.
    path = str(tmp_path / "s.yaml")
    s = State(path, cfg={})
    looped = [1]
    looped.append(looped)
    through_a_tuple = []
    through_a_tuple.append((through_a_tuple,))
    for value in (looped, through_a_tuple):
        with pytest.raises(ValueError, match="'x'.*holds itself"):
            s.x = value
        with pytest.raises(ValueError, match="'cfg'.*holds itself"):
            s.cfg["x"] = value
    assert dict(s) == {"cfg": {}}
    s.y = 1
    s.close()
    edited = str(tmp_path / "edited.yaml")
    with open(edited, "w") as f:
        f.write("a: &x [1, *x]\n")
    for readonly in (False, True):
        with pytest.raises(FolderError, match="edited.yaml: 'a' holds itself"):
            State(edited, readonly=readonly)


def test_nested_dicts_keep_their_order(tmp_path):
    path = str(tmp_path / "s.yaml")
    s = State(path, z=0)
    s.steps = {"fetch": 1, "build": {"b": 1, "a": 2}, "deploy": 3}
    order = ["fetch", "build", "deploy"]
    assert list(State(path, readonly=True).steps) == order
    s.close()
    again = State(path)
    assert list(again) == ["steps", "z"]  # the top level: sorted
    assert list(again.steps) == order and list(again.steps["build"]) == ["b", "a"]
    again.close()


def test_a_state_file_that_is_a_symlink_stays_one(tmp_path):
    (tmp_path / "real").mkdir()
    real = str(tmp_path / "real" / "state.yaml")
    with open(real, "w") as f:
        f.write("a: 1\nb: 2\n")
    link = str(tmp_path / "state.yaml")
    os.symlink(real, link)
    s = State(link)
    s.a = 2
    del s.b  # a rewrite
    assert os.path.islink(link) and yaml.safe_load(open(real)) == {"a": 2}
    s.close()
    assert os.path.islink(link) and open(real).read() == "a: 2\n"
    assert s.path == link


def test_pop_gives_the_plain_value(tmp_path):
    # It gave a view: a change to it raised RuntimeError (a key popped from
    # the state) or wrote the key it had left (a nested one).
    path = str(tmp_path / "s.yaml")
    s = State(path, first=[0], cfg={"n": 1}, jobs=[{"id": 1}, {"id": 2}],
              more={"x": [1], "y": {"z": 1}})
    popped = [State.popitem(s), s.pop("cfg"), s.jobs.pop(), s.more.pop("x"),
              s.more.popitem()]
    assert popped == [("first", [0]), {"n": 1}, {"id": 2}, [1], ("y", {"z": 1})]
    size = os.path.getsize(path)
    for value in popped:
        value = value[1] if type(value) is tuple else value
        if type(value) is dict:
            value["changed"] = True
        else:
            value.append("changed")
    assert os.path.getsize(path) == size
    assert dict(s) == {"jobs": [{"id": 1}], "more": {}}
    assert s.pop("missing", 0) == 0 and s.more.pop("missing", 0) == 0
    s.close()


# -- found by a probe as a user (2026-12-01) -------------------------------------
def test_a_change_whose_fold_fails_is_kept_as_the_file_has_it(tmp_path, monkeypatch):
    # Its line was appended, then the rewrite that folds the appended lines
    # failed (a full disk): the call raised and undid the change in memory
    # that the file held (a crash then brought back a change said to fail).
    import chest.state

    path = str(tmp_path / "s.yaml")
    s = State(path)
    s.a = "x" * 1000
    rewrite = State._rewrite

    def full(self):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(State, "_rewrite", full)
    for i in range(80):  # past FOLD_AFTER of appended lines: a fold each set
        s.a = "x" * 1000 + str(i)
    assert s._appended > chest.state.FOLD_AFTER
    assert s.a == "x" * 1000 + "79"
    assert State(path, readonly=True).a == "x" * 1000 + "79"
    monkeypatch.setattr(State, "_rewrite", rewrite)
    s.a = "done"  # folded now
    assert s._appended == 0
    s.close()
    assert State(path, readonly=True).to_dict() == {"a": "done"}


def test_a_failed_folder_sync_after_a_rewrite_loses_no_later_change(tmp_path,
                                                                    monkeypatch):
    import chest.state

    path = str(tmp_path / "s.yaml")
    s = State(path, durable=True, a=1, b=2)
    sync_dir = chest.state.sync_dir

    def failing_once(folder):
        monkeypatch.setattr(chest.state, "sync_dir", sync_dir)
        raise OSError(5, "injected I/O error")

    monkeypatch.setattr(chest.state, "sync_dir", failing_once)
    with pytest.warns(ChestWarning, match="could not be synced"):
        del s["a"]  # a rewrite: renamed into place, then the folder's sync failed
    assert s.to_dict() == {"b": 2}  # done: the file has it
    s.c = 3  # appended to the file at the path, not to the one replaced
    assert State(path, readonly=True).to_dict() == {"b": 2, "c": 3}
    s.close()


def test_a_read_after_close_sees_what_another_process_wrote(tmp_path):
    path = str(tmp_path / "s.yaml")
    s = State(path, n=10)
    s.close()
    subprocess.run([sys.executable, "-c", "from chest import State\n"
                    f"s = State({path!r})\ns.n += 1\ns.close()"], check=True,
                   env=dict(os.environ, PYTHONPATH=os.path.dirname(
                       os.path.dirname(sys.modules["chest"].__file__))))
    assert s.n == 11 and "n" in s and len(s) == 1 and s.to_dict() == {"n": 11}
    s.n += 1  # not a lost update
    s.close()
    assert State(path, readonly=True).n == 12


@pytest.mark.parametrize("text, why", [
    ("a: !pickle AAAA\n", "cannot be made"),
    ("a: !bytes 'abc'\n", "cannot be made"),
    ("a: !bytes '!!!'\n", "cannot be made"),  # (read as b'' before)
    ("a: !set [[1]]\n", "cannot be made"),
])
def test_a_bad_tagged_value_in_the_file_is_an_error_naming_it(tmp_path, text, why):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(FolderError, match=why) as info:
        State(str(path))
    assert str(path) in str(info.value)
    assert path.read_text() == text  # left as it was


def test_popitem_with_a_key_named_pop(tmp_path):
    s = State(str(tmp_path / "s.yaml"))
    s["pop"] = 1
    assert s.popitem() == ("pop", 1) and len(s) == 0
    s.close()


def test_a_value_that_cannot_be_written_names_its_key_and_file(tmp_path):
    path = str(tmp_path / "s.yaml")
    s = State(path)
    s.items_ = [1]
    with pytest.raises(TypeError) as info:
        s["lock"] = [1, threading.Lock()]
    assert "lock" not in s
    assert any("'lock' was not set" in note and path in note
               for note in getattr(info.value, "__notes__", []))
    with pytest.raises(TypeError) as info:
        s.items_.append(threading.Lock())
    assert s.items_ == [1]
    assert any("'items_' was not changed" in note
               for note in getattr(info.value, "__notes__", []))
    s.close()


class _ReadOnlyDict(dict):
    """Pickles, and does not unpickle (unpickling calls __setitem__)."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("read-only")

    __setitem__ = __delitem__ = update = _refuse


def test_a_value_that_does_not_unpickle_is_refused_not_written(tmp_path):
    # Written, it made the whole file one no State could open (FolderError).
    path = str(tmp_path / "s.yaml")
    s = State(path, n=1)
    with pytest.raises(ValueError, match="does not unpickle"):
        s.fd = _ReadOnlyDict(a=1)
    assert "fd" not in s
    s.close()
    assert State(path).to_dict() == {"n": 1}


def test_an_interrupt_in_the_fold_keeps_the_change_the_file_has(tmp_path, monkeypatch):
    import chest.state

    path = str(tmp_path / "s.yaml")
    s = State(path, n=0)
    monkeypatch.setattr(chest.state, "FOLD_AFTER", 0)  # a fold at the next change

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(State, "_rewrite", interrupted)
    with pytest.raises(KeyboardInterrupt):
        s.n = 5
    monkeypatch.undo()
    assert s.n == 5 == State(path, readonly=True).n
    s.close()


def test_a_file_removed_after_close_reads_as_an_empty_state(tmp_path):
    path = str(tmp_path / "s.yaml")
    s = State(path, n=1, keep="yes")
    s.close()
    os.remove(path)
    assert len(s) == 0 and "keep" not in s and s.to_dict() == {}
    s.n = 2  # made again, with what the reads showed
    assert State(path, readonly=True).to_dict() == {"n": 2}
    s.close()


def test_a_state_open_in_this_process_says_so_when_opened_again(tmp_path):
    # The refusal named this process's own id as "process PID; close it
    # there" (a notebook cell opening the state, run twice).
    path = str(tmp_path / "s.yaml")
    first = State(path, n=1)
    try:
        with pytest.raises(ChestLockedError, match=rf"by this process \({os.getpid()}: "
                                                   r"another State or chest on it"):
            State(path)
    finally:
        first.close()
