"""What a dask.distributed worker asks of its ``data=`` store besides a
mapping, and the budget it gives a chest.

A worker made with ``data=(Chest, {...})`` (or ``data=Chest``) calls
``Chest(local_directory, ...)`` and then, as it does with its own
``SpillBuffer``, reads ``fast`` (the values in memory), ``slow`` (the keys on
disk only), ``spilled_total`` and ``cumulative_metrics``, and calls
``evict()`` when its memory monitor wants room. :class:`Chest` answers from
this module's pieces:

- :class:`OnDiskKeys`: the keys whose values are not in memory, sized and
  iterable, without loading anything;
- :class:`SpilledSize`: ``(memory, disk)`` bytes of those values;
- :func:`disk_metrics`: chest's :class:`~chest.stats.Stats` in the
  worker's metric format;
- :func:`worker_budget`: the budget of a chest made in a worker's folder,
  the worker's ``memory_limit`` times its spill target, as SpillBuffer's;
- :class:`FreedMemory`: when ``evict()`` has nothing left to move, the
  memory that allocators keep after it was freed goes back to the system.

>>> import threading
>>> keys, inmem = {"a": 0, "b": 1, "c": 2}, {"a": "in memory"}
>>> on_disk = OnDiskKeys(keys, inmem, threading.RLock())
>>> len(on_disk), sorted(on_disk), "a" in on_disk
(2, ['b', 'c'], False)
>>> worker_budget("/nowhere") is None
True
>>> freed = FreedMemory(every=0.05)
>>> freed.release(), freed.release()   # the second: done 50 ms later
(True, False)
"""
from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys
import threading
import time
from typing import Any, Dict, Hashable, Iterator, Mapping, NamedTuple, Optional, Tuple

from .stats import Stats

__all__ = ["OnDiskKeys", "SpilledSize", "disk_metrics", "worker_budget", "FreedMemory",
           "FREED_MEMORY"]

logger = logging.getLogger(__name__)


class SpilledSize(NamedTuple):
    """Bytes of the values held on disk only: as in memory, and on disk."""

    memory: int
    disk: int


class OnDiskKeys:
    """The keys of ``keys`` whose values are not in ``inmem``: on disk, or
    on their way there (a live view, read under ``lock``)."""

    def __init__(self, keys: Mapping[Hashable, Any], inmem: Mapping[Hashable, Any],
                 lock: Any) -> None:
        self._keys = keys
        self._inmem = inmem
        self._lock = lock

    def __len__(self) -> int:
        return len(self._keys) - len(self._inmem)

    def __iter__(self) -> Iterator[Hashable]:
        with self._lock:
            return iter([k for k in self._keys if k not in self._inmem])

    def __contains__(self, key: object) -> bool:
        return key in self._keys and key not in self._inmem


def disk_metrics(stats: Stats) -> Dict[Tuple[str, str], float]:
    """Disk traffic in dask.distributed's metric format
    (``SpillBuffer.cumulative_metrics``)."""
    return {
        ("disk-write", "count"): stats.spills,
        ("disk-write", "bytes"): stats.bytes_written,
        ("disk-write", "seconds"): stats.write_seconds,
        ("disk-read", "count"): stats.reloads,
        ("disk-read", "bytes"): stats.bytes_read,
        ("disk-read", "seconds"): stats.read_seconds,
    }


def worker_budget(folder: str) -> Optional[int]:
    """The memory budget for a chest in ``folder``, if that is the local
    directory of a dask.distributed worker of this process with a memory
    limit: ``memory_limit`` times ``distributed.worker.memory.target`` (or
    ``.spill`` when target is off), as dask's own SpillBuffer takes it.
    None otherwise (no such worker, no limit, distributed not imported, or
    a distributed whose worker does not look as expected)."""
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return None
    try:
        for worker in list(distributed.Worker._instances):
            if os.path.abspath(worker.local_directory) != os.path.abspath(folder):
                continue
            manager = worker.memory_manager
            fraction = manager.memory_target_fraction or manager.memory_spill_fraction
            if manager.memory_limit and fraction:
                return int(manager.memory_limit * fraction)
            return None
    except Exception as e:  # another distributed: keep the default
        logger.info("no budget from the worker of %s: %r", folder, e)
    return None


class FreedMemory:
    """Gives back to the operating system the memory that allocators keep
    after the program freed it: pyarrow's pool (if pyarrow is imported) and
    glibc's ``malloc`` (``malloc_trim``), at most once every ``every``
    seconds (a request within that time is carried out when it is up).
    Never raises.

    Why: a dask.distributed worker pauses when its process memory passes 80%
    of its limit, and calls ``evict()`` until it is below its target. Once
    the chest has nothing left in memory, the worker stops asking; if what
    the process still holds is over the pause threshold, it stays paused and
    its tasks never run. Measured after a p2p shuffle on 400 MB workers,
    with nothing left in the store: pyarrow's pool held 30-38 MiB that
    ``release_unused()`` returned, ``malloc_trim`` 1-3 MiB; a worker stalled
    paused at 308 MiB against a threshold of 305 (one chest shuffle in 14).
    """

    def __init__(self, every: float = 1.0) -> None:
        self.every = every
        self._last = -float("inf")
        self._lock = threading.Lock()
        self._pending: Optional[threading.Timer] = None

    def release(self) -> bool:
        """Release now: whether it was done. Asked again less than
        ``every`` seconds after the last time, it is done once that time
        is up, in a thread (a worker stops calling ``evict()`` once its store
        is empty: a request dropped there was never made again, and a store
        emptied twice within a second gave nothing back the second time)."""
        with self._lock:
            wait = self._last + self.every - time.monotonic()
            if wait > 0:
                if self._pending is None:
                    self._defer(wait)
                return False
            self._last = time.monotonic()
        self._give_back()
        return True

    def _defer(self, wait: float) -> None:
        """Release in ``wait`` seconds (lock held)."""
        try:
            timer = threading.Timer(wait, self._deferred)
            timer.daemon = True
            timer.start()
        except Exception as e:  # no thread to be had: as before, dropped
            logger.debug("freed memory not given back later: %r", e)
            return
        self._pending = timer

    def _deferred(self) -> None:
        with self._lock:
            self._pending = None
            self._last = time.monotonic()
        self._give_back()

    @staticmethod
    def _give_back() -> None:
        pyarrow = sys.modules.get("pyarrow")
        if pyarrow is not None:
            try:
                pyarrow.default_memory_pool().release_unused()
            except Exception as e:  # an old or odd pyarrow: nothing to give back
                logger.debug("pyarrow's pool kept its memory: %r", e)
        trim = _malloc_trim()
        if trim is not None:
            try:
                trim(0)
            except Exception as e:
                logger.debug("malloc_trim failed: %r", e)


#: The one every chest uses: the allocators are the process's.
FREED_MEMORY = FreedMemory()


@functools.lru_cache(maxsize=None)
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None where there is none (macOS, musl,
    Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
