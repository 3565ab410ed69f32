"""The views of a mapping whose keys may go during a loop (chest.views);
a chest's own views are tested with the chest (tests/test_core.py)."""
from __future__ import annotations

from collections.abc import MutableMapping

import pytest

from chest.views import ItemsView, KeysView, ValuesView


class Leaving(MutableMapping):
    """A dict whose loop deletes every other key as it goes (as another
    thread may delete a chest's keys)."""

    def __init__(self, data):
        self.data = dict(data)

    def __getitem__(self, key):
        return self.data[key]

    def __setitem__(self, key, value):
        self.data[key] = value

    def __delitem__(self, key):
        del self.data[key]

    def __iter__(self):
        for i, key in enumerate(list(self.data)):
            if i % 2:
                self.data.pop(key, None)
            yield key

    def __reversed__(self):
        return reversed(list(self.data))

    def __len__(self):
        return len(self.data)


def test_values_and_items_pass_over_keys_deleted_during_the_loop():
    assert list(ValuesView(Leaving({"a": 1, "b": 2, "c": 3}))) == [1, 3]
    assert list(ItemsView(Leaving({"a": 1, "b": 2, "c": 3}))) == [("a", 1), ("c", 3)]
    assert list(KeysView(Leaving({"a": 1, "b": 2}))) == ["a", "b"]  # keys: as given


@pytest.mark.parametrize("view", [KeysView, ValuesView, ItemsView])
def test_views_reverse_and_name_their_mapping_read_only(view):
    d = {"a": 1, "b": 2, "c": 3}
    v = view(d)
    assert list(reversed(v)) == list(reversed(getattr(d, view.__name__[:-4].lower())()))
    with pytest.raises(TypeError):
        v.mapping["a"] = 5  # type: ignore[index]
    assert v.mapping == d


@pytest.mark.parametrize("item", [("a",), ("a", 1, 2), "ab", ["a", 1], None, 5])
def test_in_items_is_false_for_what_is_not_a_pair(item):
    items = ItemsView({"a": 1})
    assert item not in items and ("a", 1) in items and ("a", 2) not in items


class Vanishing(Leaving):
    """A key that goes between the loop's reaching it and the read of its
    value (another thread's deletion, while the value is read from disk)."""

    def __iter__(self):
        return iter(list(self.data))

    def __getitem__(self, key):
        if key == "b":
            raise KeyError(key)
        return self.data[key]


def test_in_values_passes_over_a_key_deleted_during_the_scan():
    values = ValuesView(Vanishing({"a": 1, "b": 2, "c": 3}))
    assert 3 in values and 2 not in values and 9 not in values
    assert list(values) == [1, 3]
