"""The memory tier of a chest: values held in memory, their sizes, the bytes
they add up to, the budget they should stay within, and the policy that
picks which value leaves first.

:class:`MemoryTier` only keeps the books: it never writes, never takes a
lock, and never sizes a value (the caller passes the size, from
:mod:`chest.sizeof`, and holds the chest's lock). What leaving memory costs
(a write, a check that the file already holds the value) is the
eviction's business (:mod:`chest.eviction`). Like zict's ``LRU``, it is a dict plus an
order; unlike it, a value may be *held*: in memory, counted, but never
chosen to leave (a value that could not be written).

>>> from chest.policy import LRU
>>> tier = MemoryTier(LRU())
>>> tier.keep("a", [1], 100)
>>> tier.keep("b", [2], 50)
>>> tier.used, tier.values
(150, {'a': [1], 'b': [2]})
>>> tier.touch("a")
>>> tier.pop_next()
('b', [2], 50)
>>> tier.hold("c", object(), 10)
>>> tier.pop_next()
('a', [1], 100)
>>> tier.pop_next() is None   # "c" is held: it never leaves
True
>>> tier.used, list(tier.values)
(10, ['c'])
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Dict, Hashable, Optional, Tuple

from .policy import Policy

__all__ = ["MemoryTier"]

#: ``keep`` of :meth:`MemoryTier.pop_next` when no key is to be kept.
_NONE = object()


#: Values smaller than this are never passed over as held elsewhere: evicting
#: one frees little either way, and small values are often shared (None, small
#: ints, interned strings; a Set's values are all None), where looking past
#: them would only cost time.
SPARE_FROM = 64 * 1024


def _in_use_check(values: Dict[Hashable, Any],
                  sizes: Dict[Hashable, int]) -> Callable[[Hashable], bool]:
    """``in_use(key)``: is ``values[key]``, of SPARE_FROM bytes or more,
    referred to from outside ``values``?"""
    getrefcount = sys.getrefcount
    return lambda key: sizes[key] >= SPARE_FROM and getrefcount(values[key]) > _ALONE


#: The references ``getrefcount`` counts, as called by :func:`_in_use_check`,
#: to a value nothing else refers to (measured here: it holds for this Python).
_ALONE = (lambda values, key: sys.getrefcount(values[key]))({0: object()}, 0)


class MemoryTier:
    """Values in memory with their sizes and their total, in the order a
    policy gives them to leave."""

    def __init__(self, policy: Policy, budget: int = 0) -> None:
        #: The bytes values may take in memory (a chest's ``available_memory``:
        #: what leaves when they go over is the eviction's business).
        self.budget = budget
        #: key -> value: what is in memory (a chest's ``inmem``).
        self.values: Dict[Hashable, Any] = {}
        #: key -> its size in bytes, as counted when it came in.
        self.sizes: Dict[Hashable, int] = {}
        #: The sum of ``sizes``.
        self.used = 0
        #: Which value leaves first; it knows the keys that may leave.
        self.policy = policy
        self._in_use = _in_use_check(self.values, self.sizes)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.values

    def __len__(self) -> int:
        return len(self.values)

    def keep(self, key: Hashable, value: Any, size: int, clean: bool = False) -> None:
        """Hold ``key``'s ``value`` (not in memory yet), free to leave;
        ``clean``: its file already holds it (the policy may prefer it)."""
        self.values[key] = value
        self.sizes[key] = size
        self.used += size
        self.policy.add(key, size, clean)

    def replace(self, key: Hashable, value: Any, size: int, clean: bool = False) -> bool:
        """If ``key`` is in memory: its new ``value``, a use of the key for
        the policy, and True; else False, and nothing changes."""
        old = self.sizes.get(key)
        if old is None:
            return False
        self.values[key] = value
        self.sizes[key] = size
        self.used += size - old
        self.policy.add(key, size, clean)
        return True

    def hold(self, key: Hashable, value: Any, size: int) -> None:
        """Hold ``key``'s ``value`` (not in memory yet), counted but never
        chosen to leave: until it is dropped, or kept again."""
        self.values[key] = value
        self.sizes[key] = size
        self.used += size

    def drop(self, key: Hashable) -> Optional[Tuple[Any, int]]:
        """Let ``key``'s value go: ``(value, size)``, or None if it was not
        in memory."""
        size = self.sizes.pop(key, None)
        if size is None:
            return None
        self.used -= size
        self.policy.remove(key)
        return self.values.pop(key), size

    def pop_next(self, keep: Any = _NONE,
                 spare_in_use: bool = False) -> Optional[Tuple[Hashable, Any, int]]:
        """Take out the value the policy picks to leave first (``keep``
        only if no other may): ``(key, value, size)``; None if none may
        leave. ``spare_in_use``: pass over values (of SPARE_FROM bytes or
        more) referenced outside the tier if one of the next few is not
        (evicting a value something else holds frees no memory). (Only the policy's "none" is caught: a key
        it gives that is not here is a bug, and raises.)"""
        try:
            key = self.policy.pop(keep, self._in_use if spare_in_use else None)
        except KeyError:
            return None
        size = self.sizes.pop(key)
        self.used -= size
        return key, self.values.pop(key), size

    def touch(self, key: Hashable) -> None:
        """A use of ``key`` (it stays longer)."""
        self.policy.touch(key)

    def clear(self) -> None:
        """Hold nothing."""
        self.values.clear()
        self.sizes.clear()
        self.used = 0
        self.policy.clear()
