"""The memory budget: bytes, human strings ("2GB", "512MiB") or a share ("25%").

Examples
--------
>>> parse_budget(1000)
1000
>>> parse_budget("2GB")
2000000000
>>> parse_budget("512 MiB")
536870912
>>> parse_budget("25%") == int(total_memory() * 0.25)
True
"""
from __future__ import annotations

import re
from typing import Union

import psutil

__all__ = ["parse_budget", "total_memory", "DEFAULT_BUDGET", "format_bytes"]

#: Used when ``available_memory`` is not given: a quarter of the machine's RAM.
DEFAULT_BUDGET = "25%"

_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6,
    "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*|%)\s*$", re.I)


def total_memory() -> int:
    """Bytes of physical memory of this machine."""
    return int(psutil.virtual_memory().total)


def parse_budget(value: Union[int, float, str]) -> int:
    """Bytes from an int, a float, a human string or a percentage of RAM."""
    if isinstance(value, bool):
        raise TypeError(f"available_memory must be bytes or a string, not {value!r}")
    if isinstance(value, (int, float)):
        if value < 0 or value != value:
            raise ValueError(f"available_memory must be >= 0, not {value!r}")
        return int(value)
    if not isinstance(value, str):
        raise TypeError(
            f"available_memory must be bytes (int), a string like '2GB' or '25%', "
            f"not {type(value).__name__} {value!r}"
        )
    match = _PATTERN.match(value)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS and unit != "%":
        raise ValueError(
            f"cannot read the memory budget {value!r}: use bytes, a size such as "
            f"'2GB' or '512MiB', or a share of this machine's memory such as '25%'"
        )
    number = float(match.group(1))
    if unit == "%":
        return int(total_memory() * number / 100)
    return int(number * _UNITS[unit])


def format_bytes(n: float) -> str:
    """A short human string for a number of bytes.

    >>> format_bytes(1234567)
    '1.2 MB'
    """
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
