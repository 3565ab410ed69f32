"""Counters of what a chest did: hits, misses, spills, reloads, bytes, seconds.

Examples
--------
>>> s = Stats()
>>> s.hits += 3
>>> s.misses += 1
>>> s.hit_ratio
0.75
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict

from .budget import format_bytes


@dataclass
class Stats:
    """What a chest has done since it was opened.

    Attributes
    ----------
    hits, misses : int
        Reads answered from memory / that had to load the value from disk.
    spills, reloads : int
        Values written to disk / read back from disk.
    bytes_written, bytes_read : int
        Bytes of value files written and read.
    write_seconds, read_seconds : float
        Time spent serialising and writing / reading and deserialising
        (pickle streams straight to the file, so the two are one step).
    """

    hits: int = 0
    misses: int = 0
    spills: int = 0
    reloads: int = 0
    bytes_written: int = 0
    bytes_read: int = 0
    write_seconds: float = 0.0
    read_seconds: float = 0.0

    @property
    def hit_ratio(self) -> float:
        """Share of reads answered from memory (0.0 before the first read)."""
        reads = self.hits + self.misses
        return self.hits / reads if reads else 0.0

    def as_dict(self) -> Dict[str, float]:
        """The counters as a plain dict."""
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"{self.hits} hits, {self.misses} misses, {self.spills} spills "
            f"({format_bytes(self.bytes_written)} in {self.write_seconds:.2f}s), "
            f"{self.reloads} reloads ({format_bytes(self.bytes_read)} in "
            f"{self.read_seconds:.2f}s)"
        )
