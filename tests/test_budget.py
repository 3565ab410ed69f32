"""parse_budget: bytes, human sizes and shares of the machine's memory."""
from __future__ import annotations

import pytest

from chest.budget import format_bytes, parse_budget, total_memory


@pytest.mark.parametrize("text, expected", [
    ("100", 100), ("1kB", 1000), ("1 KiB", 1024), ("2GB", 2 * 10**9),
    ("1.5 MB", 1_500_000), ("512MiB", 512 * 2**20), ("1e3", 1000), ("3 b", 3),
])
def test_strings(text, expected):
    assert parse_budget(text) == expected


def test_share_of_memory():
    assert parse_budget("50%") == total_memory() // 2
    assert parse_budget("0%") == 0


@pytest.mark.parametrize("bad, error", [
    ("lots", ValueError), ("2 parsecs", ValueError), (-1, ValueError),
    ([1], TypeError), (True, TypeError),
])
def test_bad_budgets_name_the_value(bad, error):
    with pytest.raises(error, match=repr(bad).replace("[", r"\[")):
        parse_budget(bad)


def test_format_bytes():
    assert format_bytes(999) == "999 B"
    assert format_bytes(2.5e9) == "2.5 GB"
