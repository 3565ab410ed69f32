"""Eviction policies: which in-memory key leaves for disk first.

Every policy keeps a cache hit O(1) and takes no lock for it: a hit records
a tick in a dict, and the order is brought up to date when eviction looks at
the key, so it stays exact.

- :class:`CleanFirst` (the default) evicts first the values whose file
  already holds them (read back and unchanged: evicting them writes
  nothing), then the others, each group least recently used first.
- :class:`LRU` evicts the least recently used value first.
- :class:`LargestFirst` evicts the largest value first, ties going to the
  least recently used: it frees the budget with the fewest files written.

``LRU`` and ``CleanFirst`` keep keys in the order they came
(:class:`QueuePolicy`), so that a value that is spilled or reloaded and not
hit in between costs O(1); ``LargestFirst`` keeps a ``heapdict`` of
priorities (:class:`Policy`). Adding and evicting a key among 2,600
costs about 4.3 us with the heap and 1.2 us with the queues; the heap was a
quarter of chest's own work per small value spilled or reloaded.

The default was chosen by replaying the cache operations of a dask array
computation (``benchmarks/peers.py``, workload ``policy``) with a budget of a
quarter of its peak: clean-first wrote 665 MiB and read back 909 MiB, LRU 780
and 963 MiB, largest-first 862 and 1,053 MiB. Reading back arrays that were
written once, clean-first never writes an array again that is already on
disk: 2.7 GB/s against 1.2 for LRU here.

The chest never evicts the value a read has just loaded while another can go
(see ``keep`` in :meth:`Policy.pop`): a clean value read again and again would
otherwise be loaded each time. It also asks every policy to pass over values
something else still holds (``spare``): evicting those frees no memory. In
one dask.distributed run on 400 MB workers, clean-first had chosen such a
value (mostly a task's input just read back) in 50 of 405 evictions.

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
>>> list(q.priorities())
['b', 'c', 'a']
>>> [q.pop() for _ in range(3)]
['b', 'c', 'a']
"""
from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from typing import Any, Callable, Dict, Hashable, List, Optional, Tuple, Union

from heapdict import heapdict

__all__ = ["Policy", "QueuePolicy", "LargestFirst", "LRU", "CleanFirst",
           "make_policy", "POLICIES"]

_NO_KEY = object()

#: How many keys one eviction looks at past a key it is asked to spare (see
#: :meth:`Policy.pop`): a bound on its work when most values are spared.
LOOK = 8


def _same(key: Hashable, keep: Any) -> bool:
    """Is ``key`` the key ``keep``, as a dict finds keys (the same object,
    or an equal hash and ``==``)? Never raises: a user's key whose ``__eq__``
    assumes the other is of its own class (``self.name == other.name``)
    raised AttributeError out of every eviction, and the key taken stayed
    in memory for good."""
    if key is keep:
        return True
    if keep is _NO_KEY:
        return False
    try:
        return hash(key) == hash(keep) and bool(key == keep)
    except Exception:
        return False


class Policy:
    """Priorities ``(weight(size, clean), last use)`` in a ``heapdict``,
    lowest out first; subclasses define :meth:`weight` (or, as
    :class:`QueuePolicy` does, every method).

    The chest calls :meth:`add`, :meth:`remove`, :meth:`pop` and
    :meth:`clear` with its lock held, and :meth:`touch` (a cache hit)
    without it: a hit records a tick in ``_last_use``, one atomic dict
    write, and may name a key that another thread has just removed.
    """

    name = "policy"

    def __init__(self) -> None:
        self._last_use: Dict[Hashable, int] = {}
        self._ticks = itertools.count()
        self.heap: heapdict = heapdict()

    def touch(self, key: Hashable) -> None:
        """Record a use of ``key``: O(1), lock-free."""
        self._last_use[key] = next(self._ticks)

    def _forget_old_uses(self) -> None:
        """Drop the uses of keys no longer tracked, once they pile up: a hit
        that races the key's removal records its use after it is gone."""
        if len(self._last_use) > 2 * len(self) + 64:
            # list() copies in one step: a hit may add a key at any time.
            for key in list(self._last_use):
                if key not in self:
                    self._last_use.pop(key, None)

    @staticmethod
    def weight(size: int, clean: bool) -> float:
        """The part of the priority that does not change with use."""
        raise NotImplementedError

    def add(self, key: Hashable, size: int, clean: bool = False) -> None:
        """Track ``key`` as just used (new, or set again with a value of
        ``size`` bytes; ``clean`` if its file holds it, so that evicting it
        writes nothing)."""
        tick = next(self._ticks)
        self._last_use[key] = tick
        weight = self.weight(size, clean)
        old = self.heap.d.get(key)
        if old is None or old[0][0] != weight:
            self.heap[key] = (weight, tick)

    def remove(self, key: Hashable) -> None:
        """Stop tracking ``key``; no error if it is not tracked."""
        if key in self.heap.d:
            del self.heap[key]
        self._last_use.pop(key, None)
        self._forget_old_uses()

    def clear(self) -> None:
        """Forget every key."""
        self.heap.clear()
        self._last_use.clear()

    def clock(self) -> int:
        """A number that grows with every use of a key (chest 0.2.3's
        ``counter``)."""
        return next(self._ticks)

    def pop(self, keep: Any = _NO_KEY,
            spare: Optional[Callable[[Hashable], bool]] = None) -> Hashable:
        """Remove and return the key to evict next; KeyError if there is none.

        ``keep`` is returned only if it is the last key left. A key for which
        ``spare(key)`` is true is passed over if one of the next ``LOOK``
        keys is not; if none is, the first key (other than ``keep``) leaves
        all the same. Keys passed over stay where they were.
        """
        key, where = self._take()
        if not _same(key, keep) and (spare is None or not spare(key)):
            return key  # (the common case: nothing passed over, nothing to put back)
        passed = [(key, where)]
        choice: Any = _NO_KEY
        try:
            while len(passed) <= LOOK:
                try:
                    key, where = self._take()
                except KeyError:
                    break
                if _same(key, keep) or (spare is not None and spare(key)):
                    passed.append((key, where))
                else:
                    choice = key
                    break
            if choice is _NO_KEY:  # all passed over: the first but keep leaves
                first = next((i for i, (k, _) in enumerate(passed)
                              if not _same(k, keep)), 0)
                choice = passed.pop(first)[0]
        finally:
            for key, where in reversed(passed):
                self._put_back(key, where)
        return choice

    def _take(self) -> Tuple[Hashable, Any]:
        """Remove the key to evict next: ``(key, where it was)``; KeyError
        if there is none."""
        return self._pop()

    def _put_back(self, key: Hashable, where: Any) -> None:
        """Track ``key`` again where :meth:`_take` took it from."""
        self.heap[key] = where
        # (A hit since the take recorded a later use: it stands.)
        self._last_use.setdefault(key, where[1])

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

    def priorities(self) -> Dict[Hashable, Tuple]:
        """Every key and its priority, in the order they would be evicted
        (a snapshot)."""
        current = {}
        for key, entry in self.heap.d.items():
            weight, tick = entry[0]  # heapdict keeps [priority, key, index]
            current[key] = (weight, self._last_use.get(key, tick))
        return dict(sorted(current.items(), key=lambda item: item[1]))

    def __len__(self) -> int:
        return len(self.heap)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.heap.d


class QueuePolicy(Policy):
    """Keys in a few groups, each least recently used first; the first
    non-empty group gives the next key to evict. Subclasses define
    :meth:`group`.

    A group is a queue of keys in the order they were added (an
    ``OrderedDict`` of key -> tick of the add) and a heap of the keys used
    again since (``heapq`` of ``(last use, key)``). A hit only records a tick;
    a key whose tick moved on is passed from the front of the queue to the
    heap when eviction reaches it. The least recently used key is the front
    of the queue or the top of the heap, whichever was used last longer ago:
    adding and evicting a key that is never hit costs O(1), a key hit since
    it was added O(log n).
    """

    #: How many groups there are.
    groups = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "weight" in cls.__dict__:
            raise TypeError(f"{cls.__name__}: a QueuePolicy orders keys by group(), "
                            f"not weight(); subclass Policy to order them by weight")

    def __init__(self) -> None:  # no heap: Policy.__init__ is not called
        self._last_use: Dict[Hashable, int] = {}
        self._ticks = itertools.count()
        self._group_of: Dict[Hashable, int] = {}
        self._queues: List[OrderedDict] = [OrderedDict() for _ in range(self.groups)]
        self._heaps: List[List[Tuple[int, Hashable]]] = [[] for _ in range(self.groups)]
        # Key -> the last use its heap entry holds; other entries of the key
        # are left over from before and are dropped when they surface. Ticks
        # are unique, so heap entries never compare their keys.
        self._in_heap: Dict[Hashable, int] = {}

    @staticmethod
    def group(size: int, clean: bool) -> int:
        """Which group a value belongs to (0 leaves first)."""
        raise NotImplementedError

    def add(self, key: Hashable, size: int, clean: bool = False) -> None:
        group = self.group(size, clean)
        old = self._group_of.get(key)
        if old == group:
            # Set again in the same group (a counter): a use, as a hit is.
            self._last_use[key] = next(self._ticks)
            return
        if old is not None:
            self.remove(key)
        tick = next(self._ticks)
        self._last_use[key] = tick
        self._group_of[key] = group
        self._queues[group][key] = tick

    def remove(self, key: Hashable) -> None:
        group = self._group_of.pop(key, None)
        if group is not None:
            del self._last_use[key]
            if self._queues[group].pop(key, None) is None:
                del self._in_heap[key]
                if sum(map(len, self._heaps)) > 2 * len(self._in_heap) + 64:
                    self._drop_left_overs()
        self._forget_old_uses()

    def _drop_left_overs(self) -> None:
        for heap in self._heaps:
            heap[:] = [(last, key) for last, key in heap
                       if self._in_heap.get(key) == last]
            heapq.heapify(heap)

    def clear(self) -> None:
        self._last_use.clear()
        self._group_of.clear()
        self._in_heap.clear()
        for queue, heap in zip(self._queues, self._heaps):
            queue.clear()
            heap.clear()

    def _take(self) -> Tuple[Hashable, Any]:
        key, group, last = self._pop_queued()
        return key, (group, last)

    def _put_back(self, key: Hashable, where: Any) -> None:
        # Back where it was: in its group's heap, with its last use.
        group, last = where
        self._group_of[key] = group
        self._last_use.setdefault(key, last)  # (a hit since the take stands)
        self._in_heap[key] = last
        heapq.heappush(self._heaps[group], (last, key))

    def _pop_queued(self) -> Tuple[Hashable, int, int]:
        """Remove the least recently used key of the first non-empty group:
        ``(key, group, last use)``."""
        last_use, in_heap, heaps = self._last_use, self._in_heap, self._heaps
        for group, queue in enumerate(self._queues):
            heap = heaps[group]
            while queue:
                key, tick = next(iter(queue.items()))
                last = last_use[key]
                if last == tick:
                    break
                del queue[key]  # used since it was added: to the heap
                in_heap[key] = last
                heapq.heappush(heap, (last, key))
            while heap:
                last, key = heap[0]
                if in_heap.get(key) != last:
                    heapq.heappop(heap)  # a left-over entry
                    continue
                now = last_use[key]  # read once: a hit may change it any time
                if now == last:
                    break
                in_heap[key] = now
                heapq.heapreplace(heap, (now, key))
            if heap and (not queue or heap[0][0] < queue[next(iter(queue))]):
                last, key = heapq.heappop(heap)
                del in_heap[key]
            elif queue:
                key, last = queue.popitem(last=False)
            else:
                continue
            del self._group_of[key], last_use[key]
            return key, group, last
        raise KeyError("pop(): no key to evict")

    def priorities(self) -> Dict[Hashable, Tuple]:
        order = sorted((self._group_of[key], self._last_use[key], i)
                       for i, key in enumerate(self._group_of))
        keys = list(self._group_of)
        return {keys[i]: (group, last) for group, last, i in order}

    def __len__(self) -> int:
        return len(self._group_of)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._group_of


class LargestFirst(Policy):
    """Evict the largest value first; among equals, the least recently used."""

    name = "largest"

    @staticmethod
    def weight(size: int, clean: bool) -> float:
        return -size


class LRU(QueuePolicy):
    """Evict the least recently used value first."""

    name = "lru"

    @staticmethod
    def group(size: int, clean: bool) -> int:
        return 0


class CleanFirst(QueuePolicy):
    """Evict values whose file already holds them (free to evict) before
    values that must be written; least recently used first within each."""

    name = "clean-first"
    groups = 2

    @staticmethod
    def group(size: int, clean: bool) -> int:
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
