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
  the worker's ``memory_limit`` times its spill target, as SpillBuffer's.

>>> import threading
>>> keys, inmem = {"a": 0, "b": 1, "c": 2}, {"a": "in memory"}
>>> on_disk = OnDiskKeys(keys, inmem, threading.RLock())
>>> len(on_disk), sorted(on_disk), "a" in on_disk
(2, ['b', 'c'], False)
>>> worker_budget("/nowhere") is None
True
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, Dict, Hashable, Iterator, Mapping, NamedTuple, Optional, Tuple

from .stats import Stats

__all__ = ["OnDiskKeys", "SpilledSize", "disk_metrics", "worker_budget"]

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
