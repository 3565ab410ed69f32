"""The views of a mapping whose keys may go while a loop runs over them.

``keys()``, ``values()`` and ``items()`` of :class:`~chest.Chest` (and of
anything built the same way): collections.abc's views, plus what a dict's
views have and collections.abc's lack, and what a chest needs of a loop:

- ``.mapping``, a read-only proxy of the mapping, as a dict's views have;
- ``reversed()``, as the mapping reverses its keys;
- a loop over values or items passes over a key deleted since the loop
  began (another thread's, or a callback's), instead of raising KeyError
  half-way (a loop over a dict's items changed meanwhile raises
  RuntimeError; a chest's keys may leave at any time);
- ``x in items()`` is False for an ``x`` that is not a pair, as for a
  dict (collections.abc's unpacks it and raises).

>>> d = {"a": 1, "b": 2}
>>> values = ValuesView(d)
>>> list(values), list(reversed(ItemsView(d))), ("a",) in ItemsView(d)
([1, 2], [('b', 2), ('a', 1)], False)
>>> ItemsView(d).mapping["a"]
1
"""
from __future__ import annotations

import collections.abc
from types import MappingProxyType
from typing import Any, Hashable, Iterator, Mapping, Tuple

__all__ = ["KeysView", "ValuesView", "ItemsView"]


class _View:
    """``.mapping``, as a dict's views have (read-only)."""

    _mapping: Mapping[Hashable, Any]

    @property
    def mapping(self) -> "MappingProxyType[Hashable, Any]":
        return MappingProxyType(self._mapping)


class KeysView(_View, collections.abc.KeysView):
    """The keys, reversible."""

    def __reversed__(self) -> Iterator[Hashable]:
        return reversed(self._mapping)


class ValuesView(_View, collections.abc.ValuesView):
    """The values of the keys still there when the loop reaches them."""

    def __contains__(self, value: object) -> bool:
        # (collections.abc's reads each key's value with no KeyError
        # caught: a key deleted between the loop's check and the read made
        # ``x in c.values()`` raise.)
        for v in self:
            if v is value or v == value:
                return True
        return False

    def __iter__(self) -> Iterator[Any]:
        return _values_of(iter(self._mapping), self._mapping)

    def __reversed__(self) -> Iterator[Any]:
        return _values_of(reversed(self._mapping),
                          self._mapping)


class ItemsView(_View, collections.abc.ItemsView):
    """The pairs of the keys still there when the loop reaches them."""

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, tuple) or len(item) != 2:
            return False
        return super().__contains__(item)

    def __iter__(self) -> Iterator[Tuple[Hashable, Any]]:
        return _items_of(iter(self._mapping), self._mapping)

    def __reversed__(self) -> Iterator[Tuple[Hashable, Any]]:
        return _items_of(reversed(self._mapping),
                         self._mapping)


def _values_of(keys: Iterator[Hashable], mapping: Mapping[Hashable, Any]) -> Iterator[Any]:
    for key in keys:
        try:
            yield mapping[key]
        except KeyError:
            continue  # deleted since the loop reached it


def _items_of(keys: Iterator[Hashable],
              mapping: Mapping[Hashable, Any]) -> Iterator[Tuple[Hashable, Any]]:
    for key in keys:
        try:
            yield key, mapping[key]
        except KeyError:
            continue  # deleted since the loop reached it
