"""Eviction policies: which in-memory key leaves for disk first.

A policy keeps a ``heapdict`` of priorities, lowest first out. A cache hit
only records a tick in a dict (O(1), no heap operation); a stale priority is
refreshed when it reaches the top of the heap, so the order is exact and a
hit stays cheap.

- :class:`CleanFirst` (the default) evicts first the values whose file
  already holds them (read back and unchanged: evicting them writes
  nothing), then the others, each group least recently used first.
- :class:`LRU` evicts the least recently used value first.
- :class:`LargestFirst` evicts the largest value first, ties going to the
  least recently used: it frees the budget with the fewest files written.

The default was chosen by replaying the cache operations of a dask array
computation (``benchmarks/peers.py``, workload ``policy``) with a budget of a
quarter of its peak: clean-first wrote 665 MiB and read back 909 MiB, LRU 780
and 963 MiB, largest-first 862 and 1,053 MiB. Reading back arrays that were
written once, clean-first never writes an array again that is already on
disk: 2.7 GB/s against 1.2 for LRU here.

The chest never evicts the value a read has just loaded while another can go
(see ``keep`` in :meth:`Policy.pop`): a clean value read again and again would
otherwise be loaded each time.

Examples
--------
>>> p = LargestFirst()
>>> p.add("small", 10)
>>> p.add("big", 1000)
>>> p.add("big too", 1000)
>>> p.touch("big")
>>> [p.pop(), p.pop(), p.pop()]
['big too', 'big', 'small']
>>> q = LRU()
>>> for key in "abc":
...     q.add(key, 1)
>>> q.touch("a")
>>> [q.pop() for _ in range(3)]
['b', 'c', 'a']
"""
from __future__ import annotations

import itertools
from typing import Any, Dict, Hashable, Tuple, Union

from heapdict import heapdict

__all__ = ["Policy", "LargestFirst", "LRU", "CleanFirst", "make_policy", "POLICIES"]

_NO_KEY = object()


class Policy:
    """Base class: priorities ``(weight(size), last use)``, lowest out first.

    Subclasses define :meth:`weight`.
    """

    name = "policy"

    def __init__(self) -> None:
        self.heap: heapdict = heapdict()
        self._last_use: Dict[Hashable, int] = {}
        self._ticks = itertools.count()

    @staticmethod
    def weight(size: int, clean: bool) -> float:
        """The part of the priority that does not change with use: from the
        value's size, and whether its file already holds it (``clean``)."""
        raise NotImplementedError

    def add(self, key: Hashable, size: int, clean: bool = False) -> None:
        """Track ``key`` (new, or set again with a value of ``size`` bytes;
        ``clean`` if its file holds it, so that evicting it writes nothing)."""
        tick = next(self._ticks)
        self._last_use[key] = tick
        weight = self.weight(size, clean)
        old = self.heap.d.get(key)
        if old is None or old[0][0] != weight:
            self.heap[key] = (weight, tick)

    def touch(self, key: Hashable) -> None:
        """Record a use of ``key``: O(1), the heap is refreshed lazily."""
        self._last_use[key] = next(self._ticks)

    def remove(self, key: Hashable) -> None:
        """Stop tracking ``key``; no error if it is not tracked."""
        if key in self.heap.d:
            del self.heap[key]
        self._last_use.pop(key, None)

    def clear(self) -> None:
        """Forget every key."""
        self.heap.clear()
        self._last_use.clear()

    def pop(self, keep: Any = _NO_KEY) -> Hashable:
        """Remove and return the key to evict next; KeyError if there is none.

        ``keep`` is returned only if it is the last key left.
        """
        key, priority = self._pop()
        if self.heap and (key is keep or key == keep):
            other, _ = self._pop()
            self.heap[key] = priority
            self._last_use[key] = priority[1]
            return other
        return key

    def _pop(self) -> Tuple[Hashable, Tuple[float, int]]:
        heap = self.heap
        if not heap:
            raise KeyError("pop(): no key to evict")
        while True:
            key, (weight, tick) = heap.peekitem()
            last = self._last_use.get(key, tick)
            if last == tick:
                heap.popitem()
                del self._last_use[key]
                return key, (weight, tick)
            heap[key] = (weight, last)

    def __len__(self) -> int:
        return len(self.heap)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.heap.d


class LargestFirst(Policy):
    """Evict the largest value first; among equals, the least recently used."""

    name = "largest"

    @staticmethod
    def weight(size: int, clean: bool) -> float:
        return -size


class LRU(Policy):
    """Evict the least recently used value first."""

    name = "lru"

    @staticmethod
    def weight(size: int, clean: bool) -> float:
        return 0


class CleanFirst(Policy):
    """Evict values whose file already holds them (free to evict) before
    values that must be written; least recently used first within each."""

    name = "clean-first"

    @staticmethod
    def weight(size: int, clean: bool) -> float:
        return 0 if clean else 1


POLICIES: Dict[str, type] = {cls.name: cls for cls in (LargestFirst, LRU, CleanFirst)}


def make_policy(policy: Union[str, Policy]) -> Policy:
    """A policy from its name (``"largest"``, ``"lru"``) or an instance."""
    if isinstance(policy, Policy):
        return policy
    try:
        return POLICIES[policy]()
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown eviction policy {policy!r}; choose one of {sorted(POLICIES)}"
        ) from None
