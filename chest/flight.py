"""Values in flight: evicted from memory, being written outside the chest's
lock, and the pickles of small ones queued for one commit of a packed
engine.

An eviction takes a value out of the memory tier (:mod:`chest.memory`),
puts it here, releases the lock, writes, then takes the lock again and
commits only if the value is still the one in flight for its key: a set, a
delete, a read that brought it back (:meth:`InFlight.take_back`) or a flush
meanwhile makes the write moot. :class:`InFlight` keeps those books and no
more: it never writes and takes no lock (the caller holds the chest's).

>>> flight = InFlight()
>>> value = {"a": 1}
>>> flight.start("k", value, 232)
>>> flight.is_current("k", value), "k" in flight
(True, True)
>>> flight.queue("k", value, 232, 7, b"pickle")
6
>>> flight.take_back("k") == (value, 232, b"pickle"), flight.queued, "k" in flight
(True, {}, False)
>>> flight.start("k", value, 232); flight.queue("k", value, 232, 8, b"pickle")
6
>>> [entry[3] for entry in flight.take_queue()], flight.queued_bytes
([8], 0)
"""
from __future__ import annotations

from typing import Any, Dict, Hashable, List, Optional, Tuple

__all__ = ["InFlight", "Queued"]

#: A queued pickle: ``(key, value, size in memory, the key's version, pickle)``.
Queued = Tuple[Hashable, Any, int, int, bytes]


class InFlight:
    """The values being written outside the lock, and the pickles queued
    for one packed commit."""

    def __init__(self) -> None:
        #: key -> the value being written for it.
        self.values: Dict[Hashable, Any] = {}
        #: key -> the size its value was counted with in memory.
        self.sizes: Dict[Hashable, int] = {}
        #: key -> its queued pickle (a read takes it out in O(1)).
        self.queued: Dict[Hashable, Queued] = {}
        #: The bytes of the queued pickles.
        self.queued_bytes = 0

    def __contains__(self, key: Hashable) -> bool:
        return key in self.values

    def __len__(self) -> int:
        return len(self.values)

    def start(self, key: Hashable, value: Any, size: int) -> None:
        """``key``'s ``value`` (of ``size`` bytes in memory) leaves memory,
        to be written."""
        self.values[key] = value
        self.sizes[key] = size

    def is_current(self, key: Hashable, value: Any) -> bool:
        """Is ``value`` still the one in flight for ``key`` (not set,
        deleted, read back or flushed meanwhile)?"""
        return self.values.get(key, self) is value

    def landed(self, key: Hashable) -> None:
        """``key``'s value is written and committed."""
        del self.values[key], self.sizes[key]

    def take_back(self, key: Hashable) -> Tuple[Any, int, Optional[bytes]]:
        """``key``'s value, no longer in flight (read back, or written by a
        flush), the size it left memory with, and its queued pickle, taken
        out of the queue (None if it was not queued: its write is under
        way). The pickle is the key's value as it left memory: the caller
        compares the value with it (a caller that kept the value may have
        changed it in place since). KeyError if it is not in flight."""
        value = self.values.pop(key)
        size = self.sizes.pop(key)
        entry = self.queued.pop(key, None) if self.queued else None
        if entry is None:
            return value, size, None
        self.queued_bytes -= len(entry[4])
        return value, size, entry[4]

    def discard(self, key: Hashable) -> None:
        """Forget ``key``'s value in flight, if any (set or deleted)."""
        if self.values:
            self.values.pop(key, None)
            self.sizes.pop(key, None)
            if self.queued:
                self._unqueue(key)

    def queue(self, key: Hashable, value: Any, size: int, version: int,
              data: bytes) -> int:
        """Queue ``key``'s pickle ``data`` (of ``value``, in flight) for the
        next packed commit, instead of an older one: the queued bytes."""
        self._unqueue(key)
        self.queued[key] = (key, value, size, version, data)
        self.queued_bytes += len(data)
        return self.queued_bytes

    def take_queue(self) -> List[Queued]:
        """The queued pickles, leaving the queue empty (their values stay
        in flight until they land)."""
        batch = list(self.queued.values())
        self.queued, self.queued_bytes = {}, 0
        return batch

    def clear(self) -> None:
        """Nothing in flight, nothing queued."""
        self.values.clear()
        self.sizes.clear()
        self.take_queue()

    def _unqueue(self, key: Hashable) -> None:
        entry = self.queued.pop(key, None)
        if entry is not None:
            self.queued_bytes -= len(entry[4])
