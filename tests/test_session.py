"""chest.session: a chest's folder, its writer's lock and how it ends."""
from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap

import pytest

from chest.errors import ChestLockedError, ChestWarning, FolderError
from chest.session import Session


class Owner:
    """Something a session can watch (a chest stands here)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_a_temporary_folder_is_made_and_removed_at_the_end(tmp_path):
    s = Session(None, parent=tmp_path)
    assert s.temporary and os.path.dirname(s.path) == str(tmp_path)
    assert os.path.isdir(s.path)
    s.lock()  # a temporary folder needs no writer's lock
    assert not s.locked
    s.end()
    assert not os.path.exists(s.path)


def test_a_temporary_folder_goes_with_the_object_it_is_watched_for(tmp_path):
    s = Session(None, parent=tmp_path)
    owner = Owner(s.path)
    s.watch(owner)
    del owner
    gc.collect()
    assert not os.path.exists(s.path)


def test_unwatched_a_temporary_folder_stays(tmp_path):
    s = Session(None, parent=tmp_path)
    owner = Owner(s.path)
    s.watch(owner)
    s.unwatch(owner)
    del owner
    gc.collect()
    assert os.path.isdir(s.path)


def test_a_writer_makes_its_folder_private_and_takes_the_lock(tmp_path):
    path = tmp_path / "c"
    s = Session(path)
    assert not path.exists()  # nothing is made before lock()
    s.lock()
    assert s.locked and path.is_dir()
    assert path.stat().st_mode & 0o777 == 0o700
    another_writer = [sys.executable, "-c",
                      f"from chest.session import Session; Session({str(path)!r}).lock()"]
    refused = subprocess.run(another_writer, capture_output=True, text=True)
    assert refused.returncode != 0 and ChestLockedError.__name__ in refused.stderr
    s.unlock()
    assert not s.locked
    subprocess.run(another_writer, check=True)
    s.end()
    assert path.is_dir()  # the user's folder is never removed


def test_a_file_where_the_folder_should_be_is_named(tmp_path):
    path = tmp_path / "c"
    path.write_text("not a folder")
    with pytest.raises(FolderError, match=str(path)):
        Session(path).lock()


def test_a_reader_needs_the_folder_and_never_locks(tmp_path):
    with pytest.raises(FolderError, match="typo"):
        Session(tmp_path / "typo", readonly=True)
    s = Session(tmp_path, readonly=True)
    s.lock()
    assert not s.locked


def test_a_folder_others_can_write_is_warned_of_by_name(tmp_path):
    path = tmp_path / "c"
    s = Session(path)
    s.lock()
    s.warn_if_others_can_write([".keys"])  # private: no warning
    os.chmod(path, 0o777)
    with pytest.warns(ChestWarning, match="another user could change"):
        s.warn_if_others_can_write([".keys"])
    s.end()


def test_watched_writers_are_closed_at_exit_and_not_by_a_forked_child(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys
        from chest.session import Session

        class Owner:
            def __init__(self, path):
                self.path = path
            def close(self):
                with open(os.path.join(self.path, "closed-by"), "a") as f:
                    f.write(str(os.getpid()) + "\\n")

        s = Session({str(tmp_path)!r})
        s.lock()
        owner = Owner(s.path)
        s.watch(owner)
        if hasattr(os, "fork"):
            pid = os.fork()
            if pid == 0:
                sys.exit(0)  # the child exits normally: atexit hooks run
            os.waitpid(pid, 0)
        print(os.getpid())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True,
                         text=True, check=True).stdout
    closed_by = (tmp_path / "closed-by").read_text().split()
    assert closed_by == [out.strip()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="libc fork() by ctypes")
def test_a_child_forked_from_c_is_no_owner_either(tmp_path):
    # fork() called from C (uWSGI's prefork does) runs none of Python's
    # at-fork hooks: the child must still know it is not the owner. (A pid
    # kept and set again by os.register_at_fork did not: the child's set
    # went into its parent's folder, and its exit removed its parent's
    # temporary folder.)
    script = textwrap.dedent(f"""
        import ctypes, os, sys
        from chest import Chest, ReadOnlyError
        c = Chest(path={str(tmp_path / "c")!r}, available_memory="1MB")
        w = Chest(path={str(tmp_path / "w")!r}, write_through=True)
        c["a"] = w["a"] = 1
        c["b"] = w["b"] = 2
        c.flush()
        t = Chest(available_memory=1)
        t["x"] = list(range(100))  # on disk only
        pid = ctypes.CDLL(None).fork()
        if pid == 0:
            refused = 0
            for action in (lambda: w.__setitem__("child", 2),
                           lambda: w.__delitem__("b"), lambda: c.__delitem__("b"),
                           lambda: c.update({{"child": 2}}), lambda: c.flush(),
                           lambda: c.__setitem__("a", 5),  # (retired its file)
                           lambda: c.__setitem__("big", list(range(10**6))),
                           lambda: c.drop(), lambda: t.drop()):
                try:
                    action()
                except ReadOnlyError:
                    refused += 1
            sys.exit(10 + refused)  # a normal exit: atexit hooks, finalizers
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), os.path.isdir(t.path),
              t["x"] == list(range(100)))
        t.close()
        os._exit(0)  # (no close: what the child did, if anything, is on disk)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["19", "True", "True"]
    from chest import Chest
    for name in ("c", "w"):
        with Chest(path=str(tmp_path / name), readonly=True) as again:
            assert dict(again) == {"a": 1, "b": 2}, name


def test_a_forked_child_cannot_drop_its_parents_chest(tmp_path):
    script = textwrap.dedent(f"""
        import os
        from chest import Chest, ReadOnlyError
        c = Chest(path={str(tmp_path / "c")!r})
        c["a"] = b"x" * 1000
        c.flush()
        pid = os.fork()
        if pid == 0:
            try:
                c.drop()
            except ReadOnlyError:
                os._exit(0)
            os._exit(1)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), c["a"] == b"x" * 1000)
        c.close()
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["0", "True"]
