"""The memory tier's books: values, sizes, their sum, and who leaves first."""
from __future__ import annotations

import pytest

from chest.memory import SPARE_FROM, MemoryTier
from chest.policy import LRU, CleanFirst, LargestFirst


def books_agree(tier: MemoryTier) -> None:
    assert tier.used == sum(tier.sizes.values())
    assert tier.values.keys() == tier.sizes.keys()


def test_keep_replace_drop_keep_the_sum():
    tier = MemoryTier(LRU())
    tier.keep("a", "x", 10)
    tier.keep("b", "y", 20)
    assert tier.replace("a", "z", 15)
    assert not tier.replace("c", "w", 5)  # not in memory: nothing changes
    assert "c" not in tier and len(tier) == 2
    books_agree(tier)
    assert tier.used == 35 and tier.values["a"] == "z"
    assert tier.drop("b") == ("y", 20)
    assert tier.drop("b") is None
    books_agree(tier)
    assert tier.used == 15


def test_pop_next_follows_the_policy_and_keep_goes_last():
    tier = MemoryTier(LRU())
    for i, key in enumerate("abc"):
        tier.keep(key, i, 1)
    tier.touch("a")
    assert tier.pop_next(keep="b")[0] == "c"
    assert tier.pop_next(keep="b")[0] == "a"
    assert tier.pop_next(keep="b") == ("b", 1, 1)  # the only one left
    assert tier.pop_next() is None
    assert tier.used == 0


def test_a_held_value_is_counted_but_never_chosen():
    tier = MemoryTier(LargestFirst())
    tier.hold("big", "unwritable", 1000)
    tier.keep("small", "ok", 1)
    assert tier.pop_next()[0] == "small"
    assert tier.pop_next() is None
    assert tier.used == 1000 and "big" in tier
    # Set again (now writable, say): free to leave like any other.
    assert tier.replace("big", "fine", 900)
    assert tier.pop_next() == ("big", "fine", 900)
    books_agree(tier)


def test_clean_values_leave_first_under_clean_first():
    tier = MemoryTier(CleanFirst())
    tier.keep("dirty", 1, 1)
    tier.keep("clean", 2, 1, clean=True)
    assert tier.pop_next()[0] == "clean"
    assert tier.replace("dirty", 3, 1, clean=True)
    tier.keep("other", 4, 1)
    assert tier.pop_next()[0] == "dirty"  # clean now


def test_a_key_the_policy_gives_but_memory_lacks_raises():
    # An inconsistency is a bug to see, not "nothing to evict".
    tier = MemoryTier(LRU())
    tier.policy.add("ghost", 1)
    with pytest.raises(KeyError):
        tier.pop_next()


def test_clear_holds_nothing():
    tier = MemoryTier(LRU())
    tier.keep("a", 1, 5)
    tier.hold("b", 2, 7)
    tier.clear()
    assert tier.used == 0 and not tier.values and not tier.sizes and not tier.policy
    tier.keep("a", 1, 5)
    assert tier.pop_next() == ("a", 1, 5)


def test_values_in_use_elsewhere_are_spared_when_asked():
    big = SPARE_FROM
    tier = MemoryTier(LRU())
    held = [1]
    tier.keep("held", held, big)
    tier.keep("free", [2], big)
    tier.keep("free too", [3], big)
    assert tier.pop_next(spare_in_use=True)[0] == "free"
    del held  # nothing else holds it now: it is next again
    assert tier.pop_next(spare_in_use=True)[0] == "held"
    still = tier.values["free too"]
    assert tier.pop_next(spare_in_use=True)[0] == "free too"  # the last one leaves
    assert tier.pop_next(spare_in_use=True) is None
    assert still == [3] and tier.used == 0


def test_small_or_shared_values_are_not_looked_past():
    # None is held everywhere (a Set's values): sparing it would only cost.
    tier = MemoryTier(LRU())
    tier.keep("none", None, SPARE_FROM)
    held = [1]
    tier.keep("small", held, SPARE_FROM - 1)
    tier.keep("free", [2], SPARE_FROM)
    assert tier.pop_next(spare_in_use=True)[0] == "small"
    assert tier.pop_next(spare_in_use=True)[0] == "free"
    assert tier.pop_next(spare_in_use=True)[0] == "none"


def test_without_asking_values_in_use_leave_in_order():
    tier = MemoryTier(LRU())
    held = [1]
    tier.keep("held", held, SPARE_FROM)
    tier.keep("free", [2], SPARE_FROM)
    assert tier.pop_next()[0] == "held"
