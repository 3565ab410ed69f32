"""Work handed to long-lived background threads instead of a new thread each.

A chest overlaps some work with file I/O: the fingerprint of a large array
is taken while it is written, and room is made in memory while a large file
is read. Each used to start a thread of its own; starting one took 0.5-2 ms
on this VM (``Thread.start`` waits until the new thread runs), a sixth of
writing a 32 MiB array (py-spy: 19% of the write phase of
``benchmarks/peers.py``'s arrays in ``Thread.start``). :class:`Workers`
keeps the threads it started, idle, for the next job: a thread is started
only when every one of them is busy (so jobs never wait for each other),
and none is shared with a forked child (its threads do not exist there).
The threads are daemons: a job never keeps the interpreter from exiting.

>>> workers = Workers("example")
>>> job = workers.run(sum, [1, 2, 3])
>>> job.wait(), job.result, job.error
(True, 6, None)
>>> failed = workers.run(int, "x")
>>> failed.wait(), type(failed.error).__name__
(True, 'ValueError')
"""
from __future__ import annotations

import os
import queue
import threading
from typing import Any, Callable, List, Optional

__all__ = ["Job", "Workers"]


class Job:
    """One function call on a background thread: wait for it, then read its
    ``result`` or the ``error`` it raised."""

    def __init__(self, func: Callable[..., Any], args: tuple) -> None:
        self._func, self._args = func, args
        self._done = threading.Event()
        self.result: Any = None
        self.error: Optional[BaseException] = None

    def execute(self) -> None:
        try:
            self.result = self._func(*self._args)
        except BaseException as e:  # (kept for the caller: never raised here)
            self.error = e
        finally:
            # Done first: letting go of the function may drop the last
            # reference to its object, whose __del__ (on this thread) may
            # wait for this very job.
            self._done.set()
            self._func = self._args = None  # type: ignore[assignment]

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until the call is done (True), or ``timeout`` seconds (False)."""
        return self._done.wait(timeout)

    join = wait  # (as a thread is waited for)


class Workers:
    """Daemon threads named ``name`` that run :class:`Job`\\ s, kept idle
    between jobs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._idle: List["queue.SimpleQueue[Job]"] = []
        self._pid = os.getpid()

    def run(self, func: Callable[..., Any], *args: Any) -> Job:
        """Call ``func(*args)`` on an idle thread (a new one if none is)."""
        job = Job(func, args)
        with self._lock:
            if self._pid != os.getpid():  # a forked child: none of the threads
                self._idle, self._pid = [], os.getpid()
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(inbox, self._pid),
                             name=self.name, daemon=True).start()
        inbox.put(job)
        return job

    def _serve(self, inbox: "queue.SimpleQueue[Job]", pid: int) -> None:
        while True:
            inbox.get().execute()
            with self._lock:
                if self._pid != pid:
                    return  # (only in a fork's copy of this thread: never runs)
                self._idle.append(inbox)
