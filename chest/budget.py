"""The memory budget: bytes, human strings ("2GB", "512MiB") or a share ("25%").

``parse_budget`` reads a budget into bytes, ``total_memory`` is what "25%"
is a share of, and ``format_bytes`` shows a number of bytes for people.
Infinity (``float('inf')``, or a string too large for a float such as
``'1e400'``) means no limit: ``UNLIMITED`` bytes.

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
>>> parse_budget(float("inf")) == UNLIMITED
True
>>> parse_budget(-1, name="max_disk")
Traceback (most recent call last):
...
ValueError: max_disk must be >= 0 bytes, not -1
"""
from __future__ import annotations

import math
import re
import sys
from typing import Union

import psutil

__all__ = ["parse_budget", "total_memory", "DEFAULT_BUDGET", "UNLIMITED",
           "format_bytes"]

#: Used when ``available_memory`` is not given: a quarter of the machine's RAM.
DEFAULT_BUDGET = "25%"
#: What an infinite budget (or one beyond it) reads as: no limit, yet an int
#: that sums and compares like any count of bytes.
UNLIMITED = sys.maxsize

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


def parse_budget(value: Union[int, float, str], name: str = "available_memory") -> int:
    """Bytes from an int, a float, a human string or a percentage of RAM.

    ``name`` is the parameter the value was given as, named in every error.
    Infinity, and any budget above ``UNLIMITED`` (``10**30``, ``'1e400'``,
    ``'1e300 TB'``), reads as ``UNLIMITED``: no limit. NaN and negative
    budgets are errors.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be bytes or a string, not {value!r}")
    if isinstance(value, (int, float)):
        if value != value:
            raise ValueError(f"{name} must be a number of bytes, not {value!r}")
        if value < 0:
            raise ValueError(f"{name} must be >= 0 bytes, not {value!r}")
        return _bytes(value)
    if not isinstance(value, str):
        raise TypeError(
            f"{name} must be bytes (int), a string like '2GB' or '25%', "
            f"not {type(value).__name__} {value!r}"
        )
    match = _PATTERN.match(value)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS and unit != "%":
        raise ValueError(
            f"cannot read {name}={value!r}: use bytes, a size such as '2GB' or "
            f"'512MiB', a share of this machine's memory such as '25%', or "
            f"float('inf') for no limit"
        )
    number = float(match.group(1))  # inf beyond 1.8e308, never an error
    if unit == "%":
        return _bytes(total_memory() * number / 100)
    return _bytes(number * _UNITS[unit])


def _bytes(size: float) -> int:
    """``size`` (>= 0) as an int, at most UNLIMITED."""
    if math.isinf(size) or size >= UNLIMITED:
        return UNLIMITED
    return int(size)


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
