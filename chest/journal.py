"""The journal: keys whose files were written or deleted since the last index.

``.keys`` is rewritten only by ``flush()``. Between two flushes, eviction
writes value files that the index does not know yet; the journal records
each one (and each deletion) with one small append, so a chest reopened
after a crash finds them. Each record is ``length, crc32, pickle((key, name,
size))``; replay stops at the first torn or damaged record, which can only
be the last one written.

Examples
--------
>>> import os, tempfile
>>> j = Journal(os.path.join(tempfile.mkdtemp(), ".journal"))
>>> j.append(("x", 1), "_x/1", 10)
>>> j.append(("x", 1), None, 0)
>>> read_journal(j.filename)
[(('x', 1), '_x/1', 10), (('x', 1), None, 0)]
>>> j.clear()
>>> read_journal(j.filename)
[]
"""
from __future__ import annotations

import os
import pickle
import struct
import zlib
from typing import Any, Hashable, List, Optional, Tuple

import cloudpickle

__all__ = ["Journal", "read_journal", "JOURNAL_NAME", "RECORD"]

JOURNAL_NAME = ".journal"
RECORD = struct.Struct("<II")  # payload length, crc32 of payload

#: (key, where its value now is: a file name or ``(engine, slot)``; None if
#: the key was deleted, size)
Record = Tuple[Hashable, Any, int]


class Journal:
    """An append-only log of ``(key, file name or None if deleted, size)``."""

    def __init__(self, filename: str, durable: bool = False,
                 file_mode: int = 0o600) -> None:
        self.filename = filename
        self.durable = durable
        self.file_mode = file_mode
        self._fd: Optional[int] = None

    def append(self, key: Hashable, name: Any, size: int) -> None:
        """Record that ``key``'s file is ``name`` (None: the key was deleted)."""
        try:
            payload = pickle.dumps((key, name, size), protocol=5)
        except Exception:
            payload = cloudpickle.dumps((key, name, size), protocol=5)
        if self._fd is None:
            self._fd = os.open(self.filename, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                               self.file_mode)
            if self.file_mode != 0o600:
                os.fchmod(self._fd, self.file_mode)
        view = memoryview(RECORD.pack(len(payload), zlib.crc32(payload)) + payload)
        written = 0
        try:
            while view:
                count = os.write(self._fd, view)
                written += count
                view = view[count:]
            if self.durable:
                os.fsync(self._fd)
        except BaseException:
            # Cut the torn record off: replay stops at the first bad record,
            # and the records appended later must still be read. Another
            # chest on the folder (in this process) may append too: cut
            # from the end, only what this call wrote.
            try:
                os.ftruncate(self._fd, os.fstat(self._fd).st_size - written)
            except OSError:
                pass
            raise

    def clear(self) -> None:
        """Remove the journal (the index on disk now holds everything)."""
        self.close()
        try:
            os.remove(self.filename)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        """Close the journal's file descriptor."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_journal(filename: str) -> List[Record]:
    """Every whole record of a journal file, in order; [] if there is none."""
    try:
        with open(filename, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    records: List[Record] = []
    offset = 0
    while offset + RECORD.size <= len(data):
        length, crc = RECORD.unpack_from(data, offset)
        payload = data[offset + RECORD.size:offset + RECORD.size + length]
        if len(payload) != length or zlib.crc32(payload) != crc:
            break
        try:
            key, name, size = pickle.loads(payload)
        except Exception:
            break
        records.append((key, name, size))
        offset += RECORD.size + length
    return records
