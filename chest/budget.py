"""The memory budget: bytes, human strings ("2GB", "512MiB") or a share ("25%").

``parse_budget`` reads a budget into bytes, ``total_memory`` is what "25%"
is a share of. ``format_bytes`` shows a number of bytes for people, in the
units the budget was written in (``budget_is_binary``: "64MiB" shows as
64.0 MiB, not 67.1 MB), and ``format_budget`` shows a budget. Infinity
(``float('inf')``, or a string too large for a float such as ``'1e400'``)
means no limit: ``UNLIMITED`` bytes, shown as "unlimited".

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
           "budget_is_binary", "format_bytes", "format_budget"]

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


def budget_is_binary(value: object) -> bool:
    """Whether a budget was written in binary units (KiB, MiB, GiB, TiB).

    Then it is best shown in them: ``"64MiB"`` as ``64.0 MiB``, not
    ``67.1 MB``. False for bytes, decimal units, shares and anything
    ``parse_budget`` cannot read.

    >>> budget_is_binary("64MiB"), budget_is_binary("2 gib")
    (True, True)
    >>> budget_is_binary("64MB"), budget_is_binary(2**26), budget_is_binary("25%")
    (False, False, False)
    """
    if not isinstance(value, str):
        return False
    match = _PATTERN.match(value)
    return match is not None and match.group(2).lower() in _BINARY


_BINARY = {"kib", "mib", "gib", "tib"}


def format_bytes(n: float, binary: bool = False) -> str:
    """A short human string for a number of bytes, in steps of 1000 (kB,
    MB, ...) or, if ``binary``, of 1024 (KiB, MiB, ...).

    >>> format_bytes(1234567)
    '1.2 MB'
    >>> format_bytes(parse_budget("64MiB"), binary=True)
    '64.0 MiB'
    >>> format_bytes(999_960), format_bytes(1023, binary=True)
    ('1.0 MB', '1023 B')
    """
    step, units = (1024, _BINARY_UNITS) if binary else (1000, _DECIMAL_UNITS)
    for unit in units:
        # Rounded as shown, so that 999,960 bytes is 1.0 MB, not 1000.0 kB.
        shown = round(n) if unit == "B" else round(n, 1)
        if abs(shown) < step or unit == units[-1]:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= step
    raise AssertionError("unreachable")


_DECIMAL_UNITS = ("B", "kB", "MB", "GB", "TB")
_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def format_budget(n: int, binary: bool = False) -> str:
    """A budget as ``format_bytes`` shows it, and ``UNLIMITED`` as "unlimited".

    >>> format_budget(parse_budget("64MiB"), budget_is_binary("64MiB"))
    '64.0 MiB'
    >>> format_budget(parse_budget(float("inf")))
    'unlimited'
    """
    return "unlimited" if n >= UNLIMITED else format_bytes(n, binary)
