"""parse_budget: bytes, human sizes and shares of the machine's memory."""
from __future__ import annotations

import sys

import pytest

from chest.budget import (UNLIMITED, budget_is_binary, format_budget, format_bytes,
                          parse_budget, total_memory)


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


@pytest.mark.parametrize("bad", [-1, -0.5, float("-inf"), float("nan"), "lots", [1], True])
def test_errors_name_the_parameter_given(bad):
    # Found by probing: max_disk=-1 raised "available_memory must be >= 0".
    with pytest.raises((ValueError, TypeError), match="max_disk") as raised:
        parse_budget(bad, name="max_disk")
    assert "available_memory" not in str(raised.value)
    assert repr(bad).replace("[", "") in str(raised.value).replace("[", "")
    with pytest.raises((ValueError, TypeError), match="available_memory"):
        parse_budget(bad)


@pytest.mark.parametrize("huge", [float("inf"), "1e400", "1e400 GB", "1e300 TB",
                                  "1e400%", 10**30, 1e300])
def test_infinity_is_no_limit(huge):
    # Found by probing: float('inf') and '1e400' raised OverflowError.
    assert parse_budget(huge) == UNLIMITED == sys.maxsize
    assert parse_budget(huge, name="max_disk") == UNLIMITED


def test_nan_is_an_error_naming_the_parameter():
    with pytest.raises(ValueError, match=r"available_memory.*nan"):
        parse_budget(float("nan"))
    with pytest.raises(ValueError, match=r"max_disk.*nan"):
        parse_budget(float("nan"), name="max_disk")


@pytest.mark.parametrize("text, binary, shown", [
    ("64MiB", True, "64.0 MiB"), ("64 mib", True, "64.0 MiB"), ("1.5GiB", True, "1.5 GiB"),
    ("2 TiB", True, "2.0 TiB"), ("512KiB", True, "512.0 KiB"), ("1000MiB", True, "1000.0 MiB"),
    ("64MB", False, "64.0 MB"), ("2GB", False, "2.0 GB"), (2**26, False, "67.1 MB"),
    ("1e400", False, "unlimited"), ("0", False, "0 B"),
])
def test_budgets_are_shown_in_the_units_they_were_given_in(text, binary, shown):
    # Found by probing: a budget of "64MiB" showed as "67.1 MB of 67.1 MB".
    assert budget_is_binary(text) is binary
    assert format_budget(parse_budget(text), budget_is_binary(text)) == shown


def test_format_bytes_binary_and_rounding():
    assert format_bytes(1023, binary=True) == "1023 B"
    assert format_bytes(1536, binary=True) == "1.5 KiB"
    assert format_bytes(3 * 2**40 * 2000, binary=True) == "6000.0 TiB"
    assert format_bytes(999_960) == "1.0 MB"  # not "1000.0 kB"
    assert format_bytes(999.6) == "1.0 kB"
    assert budget_is_binary("25%") is budget_is_binary(None) is budget_is_binary("x") is False
