"""Eviction policies: which in-memory key leaves for disk first.

A policy keeps a ``heapdict`` of priorities, lowest first out. A cache hit
only records a tick in a dict (O(1), no heap operation); a stale priority is
refreshed when it reaches the top of the heap, so the order is exact and a
hit stays cheap.

- :class:`LRU` (the default) evicts the least recently used value first.
- :class:`LargestFirst` evicts the largest value first, ties going to the
  least recently used: it frees the budget with the fewest files written.

The default was chosen by replaying the cache operations of a dask array
computation (``benchmarks/peers.py``, workload ``policy``): with a budget of
a quarter of the peak, LRU wrote 780 MiB and read back 963 MiB, largest-first
862 MiB and 1,053 MiB.

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
from typing import Dict, Hashable, Union

from heapdict import heapdict

__all__ = ["Policy", "LargestFirst", "LRU", "make_policy", "POLICIES"]


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
    def weight(size: int) -> float:
        """The part of the priority that depends on the value's size."""
        raise NotImplementedError

    def add(self, key: Hashable, size: int) -> None:
        """Track ``key`` (new, or set again with a value of ``size`` bytes)."""
        tick = next(self._ticks)
        self._last_use[key] = tick
        weight = self.weight(size)
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

    def pop(self) -> Hashable:
        """Remove and return the key to evict next; KeyError if there is none."""
        heap = self.heap
        if not heap:
            raise KeyError("pop(): no key to evict")
        while True:
            key, (weight, tick) = heap.peekitem()
            last = self._last_use.get(key, tick)
            if last == tick:
                heap.popitem()
                del self._last_use[key]
                return key
            heap[key] = (weight, last)

    def __len__(self) -> int:
        return len(self.heap)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.heap.d


class LargestFirst(Policy):
    """Evict the largest value first; among equals, the least recently used."""

    name = "largest"

    @staticmethod
    def weight(size: int) -> float:
        return -size


class LRU(Policy):
    """Evict the least recently used value first."""

    name = "lru"

    @staticmethod
    def weight(size: int) -> float:
        return 0


POLICIES: Dict[str, type] = {cls.name: cls for cls in (LargestFirst, LRU)}


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
