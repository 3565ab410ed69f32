"""One writer process per chest folder: an advisory ``flock`` on the folder.

The lock is held while a chest with a path is open for writing. A second
process gets :class:`~chest.errors.ChestLockedError` naming the folder and
the process that holds it (read from ``/proc/locks`` where there is one).
Within one process, chests opened on the same folder share the lock (as the
original chest allowed). Locking the folder itself leaves no extra file in
it.

Examples
--------
>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> lock = WriterLock(folder)
>>> again = WriterLock(folder)     # same process: shared
>>> lock.release(); again.release()
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from typing import Any, Dict, Iterator, List, Tuple

from .errors import ChestLockedError

__all__ = ["WriterLock", "lock_holder", "who_holds", "held_here", "hold_alone", "opening",
           "refuse_if_held_here"]

# (device, inode) -> [fd, users, not to be shared (see hold_alone)]
_held: Dict[Tuple[int, int], List[int]] = {}
_held_lock = threading.Lock()
_opening: Dict[str, "threading.RLock"] = {}  # folder -> one opening at a time


class WriterLock:
    """Hold the writer's lock of ``folder``, waiting up to ``timeout`` seconds."""

    def __init__(self, folder: str, timeout: float = 0.0) -> None:
        self.folder = folder
        self._id: Tuple[int, int] = (0, 0)
        self._released = False
        #: Did another chest in this process hold the lock already (this one
        #: shares it)?
        self.shared = False
        deadline = time.monotonic() + timeout
        while True:
            with _held_lock:
                if self._try_acquire():
                    return
            if time.monotonic() >= deadline:
                raise ChestLockedError(folder, who_holds(folder), timeout)
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def _try_acquire(self) -> bool:
        fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        info = os.fstat(fd)
        self._id = (info.st_dev, info.st_ino)
        held = _held.get(self._id)
        if held is not None:
            os.close(fd)
            if held[2]:
                raise ValueError(f"{self.folder} is open for writing in this process "
                                 f"by a chest that does not share it (one with packed "
                                 f"values or write_through, or a List or Set): close "
                                 f"that one first, or open this one with readonly=True")
            held[1] += 1
            self.shared = True
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        _held[self._id] = [fd, 1, 0]
        return True

    def release(self) -> None:
        """Let go (the last user in this process unlocks the folder)."""
        with _held_lock:
            if self._released:
                return
            self._released = True
            held = _held.get(self._id)
            if held is None:
                return
            held[1] -= 1
            if held[1] == 0:
                del _held[self._id]
                os.close(held[0])  # closing the descriptor drops the flock


def held_here(folder: str) -> bool:
    """Does this process hold the writer's lock of ``folder`` (a chest open
    for writing on it)?"""
    info = os.stat(folder)
    with _held_lock:
        return (info.st_dev, info.st_ino) in _held


@contextlib.contextmanager
def opening(folder: str) -> Iterator[None]:
    """Open a chest at ``folder`` while no other thread of this process
    opens one there (re-entrant: a container opens its chest inside)."""
    name = os.path.realpath(folder)
    with _held_lock:
        lock = _opening.setdefault(name, threading.RLock())
    with lock:
        yield


def hold_alone(folder: str) -> None:
    """Let no other chest in this process share the writer's lock of
    ``folder``, which this process holds for one chest only (ValueError if
    it holds it for more): until that chest gives it back. (Chests with
    packed values each gave out the same slots; one with write_through lost
    its journal's values to the other's flush.)"""
    info = os.stat(folder)
    with _held_lock:
        held = _held.get((info.st_dev, info.st_ino))
        if held is None:
            raise ValueError(f"{folder}: its writer's lock is not held here")
        if held[1] > 1:
            raise ValueError(f"{folder} is open for writing in this process "
                             f"already: close it first")
        held[2] = 1


def refuse_if_held_here(folder: Any, action: str) -> None:
    """ValueError if ``folder`` (a path, or None for a new temporary folder)
    is a chest open for writing in this process: a new container made there
    would share its folder (the lock is shared within a process), and the
    one closed last would undo what the other wrote."""
    if folder is None:
        return
    path = os.fspath(folder)
    if os.path.isdir(path) and held_here(path):
        raise ValueError(f"{action}: {path} is a chest open in this process; "
                         f"give a new path")


def _forget_inherited_locks() -> None:
    """A forked child shares its parent's locks, but does not hold them: its
    copies of their descriptors are closed (while one was open, the flock
    stayed held after the parent let it go, and the parent could not open
    its own chest again for as long as the child lived)."""
    for fd, *_ in _held.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_inherited_locks)


def who_holds(folder: str) -> str:
    """:func:`lock_holder`, for a refusal's message: "this process (PID: ...)"
    when it is this one ("close it there" then means here: a State opened
    again by a notebook cell run twice, say)."""
    holder = lock_holder(folder)
    if holder == f"process {os.getpid()}":
        return f"this process ({os.getpid()}: another State or chest on it, not closed)"
    return holder


def lock_holder(folder: str) -> str:
    """Who holds the flock of ``folder``: "process PID", or "another process"."""
    try:
        info = os.stat(folder)
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return "another process"
    device = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}"
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF": major:minor:inode
        if len(fields) >= 6 and fields[1] == "FLOCK":
            where, _, inode = fields[5].rpartition(":")
            if inode == str(info.st_ino) and where == device:
                return f"process {fields[4]}"
    return "another process"
