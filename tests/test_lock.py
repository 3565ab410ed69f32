"""WriterLock: one writer process per folder, shared within a process."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest

from chest import Chest
from chest.errors import ChestLockedError, ReadOnlyError
from chest.lock import WriterLock, lock_holder

TRY_LOCK = (
    "import sys\n"
    "from chest.lock import WriterLock\n"
    "from chest.errors import ChestLockedError\n"
    "try:\n"
    "    WriterLock(sys.argv[1], float(sys.argv[2])).release()\n"
    "except ChestLockedError as e:\n"
    "    print(e)\n"
    "    sys.exit(3)\n"
)


def try_lock_elsewhere(folder, timeout=0.0):
    return subprocess.run([sys.executable, "-c", TRY_LOCK, folder, str(timeout)],
                          capture_output=True, text=True, timeout=60)


def test_second_process_is_refused_and_told_who_holds_it(tmp_path):
    lock = WriterLock(str(tmp_path))
    result = try_lock_elsewhere(str(tmp_path))
    assert result.returncode == 3
    assert str(tmp_path) in result.stdout
    assert f"process {os.getpid()}" in result.stdout
    assert lock_holder(str(tmp_path)) == f"process {os.getpid()}"
    lock.release()
    assert try_lock_elsewhere(str(tmp_path)).returncode == 0


def test_shared_within_a_process_until_the_last_release(tmp_path):
    a = WriterLock(str(tmp_path))
    b = WriterLock(str(tmp_path))
    a.release()
    a.release()  # idempotent
    assert try_lock_elsewhere(str(tmp_path)).returncode == 3
    b.release()
    assert try_lock_elsewhere(str(tmp_path)).returncode == 0


def test_a_renamed_folder_is_the_same_lock(tmp_path):
    (tmp_path / "a").mkdir()
    lock = WriterLock(str(tmp_path / "a"))
    os.rename(tmp_path / "a", tmp_path / "b")
    WriterLock(str(tmp_path / "b")).release()  # same folder: shared, no wait
    lock.release()


def test_chest_holds_the_lock_while_open(chest_path):
    c = Chest(path=chest_path)
    c["x"] = 1
    assert try_lock_elsewhere(chest_path).returncode == 3
    c.close()
    assert try_lock_elsewhere(chest_path).returncode == 0
    c["y"] = 2          # used again after close: takes the lock again
    c.flush()
    assert try_lock_elsewhere(chest_path).returncode == 3
    c.close()
    assert sorted(os.listdir(chest_path)) == [".keys", "x", "y"]


def test_readonly_chest_takes_no_lock_and_refuses_changes(chest_path):
    writer = Chest(path=chest_path, available_memory=10**6)
    writer["x"] = "flushed"
    writer.flush()
    writer["x"] = "changed in memory"  # the flushed file is moved aside
    reader = Chest(path=chest_path, readonly=True)
    assert reader["x"] == "flushed"
    writer["y"] = "spilled"
    writer.move_to_disk("y")
    assert "y" not in reader  # the reader sees the chest as it opened it
    for change in (lambda: reader.__setitem__("y", 1),
                   lambda: reader.__delitem__("x"),
                   reader.flush, reader.drop, lambda: reader.update({"y": 1})):
        with pytest.raises(ReadOnlyError, match="read-only"):
            change()
    reader.close()
    writer.close()


def test_lock_timeout_waits_for_the_holder(chest_path):
    c = Chest(path=chest_path)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom chest import Chest\n"
         "c = Chest(path=sys.argv[1])\nprint('locked', flush=True)\n"
         "time.sleep(0.5)\nc.close()\n", chest_path + "-other"],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(ChestLockedError, match="pass lock_timeout= to wait"):
        Chest(path=chest_path + "-other")
    with pytest.raises(ChestLockedError, match="waited 0.01 s for it") as e:
        Chest(path=chest_path + "-other", lock_timeout=0.01)
    assert pickle.loads(pickle.dumps(e.value)).waited == 0.01
    waited = Chest(path=chest_path + "-other", lock_timeout=30)
    holder.wait(30)
    holder.stdout.close()
    waited.close()
    c.close()


def test_collecting_a_readonly_chest_keeps_the_folder(chest_path):
    import gc
    writer = Chest(path=chest_path)
    writer["x"] = 1
    writer.close()
    reader = Chest(path=chest_path, readonly=True)
    assert reader["x"] == 1
    del reader
    gc.collect()
    assert os.path.exists(os.path.join(chest_path, ".keys"))


FORKING_PARENT = """
import os, sys
from chest import Chest
path = sys.argv[1]
c = Chest(path=path)
c["a"] = 1
read, write = os.pipe()
pid = os.fork()
if pid == 0:  # the child: waits until the parent is done
    os.close(write)
    os.read(read, 1)
    os._exit(0)
os.close(read)
try:
    c.close()
    with Chest(path=path) as again:
        print("reopened", again["a"])
finally:
    os.write(write, b"x")
    os.close(write)
    os.waitpid(pid, 0)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_does_not_keep_its_parents_lock(tmp_path):
    # The child's copy of the lock's descriptor kept the flock held after
    # the parent closed the chest: the parent could not open its own chest
    # again while the child lived (ChestLockedError naming the parent).
    # (In a process of its own: one forked here inherits the suite's state.)
    result = subprocess.run([sys.executable, "-c", FORKING_PARENT, str(tmp_path / "c")],
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "reopened 1", result.stderr
