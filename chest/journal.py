"""The journal: what changed since the last index, one append per change.

``.keys`` is rewritten only by ``flush()``. Between two flushes, eviction
writes value files (or packed slots) that the index does not know yet; the
journal records each one (and each deletion) with one small append, so a
chest reopened after a crash finds them. A chest with ``write_through=True``
also keeps small values in the journal itself: the record of a change
carries the new value, so that one ``write`` puts the change in the
operating system's hands. Each record is ``length, crc32, pickle((key,
place, size))`` and, for a value kept in the journal, the value's bytes;
replay stops at the first torn or damaged record, which can only be the last
one written.

Examples
--------
>>> import os, tempfile
>>> j = Journal(os.path.join(tempfile.mkdtemp(), ".journal"))
>>> j.append(("x", 1), "_x/1", 10)
-1
>>> j.append(("x", 1), None, 0)
-1
>>> offset = j.append("y", None, 5, data=b"hello")
>>> j.read(offset, 5)
b'hello'
>>> read_journal(j.filename)[:2]
[(('x', 1), '_x/1', 10), (('x', 1), None, 0)]
>>> read_journal(j.filename)[2] == ("y", (IN_JOURNAL, offset, 5), 5)
True
>>> j.clear()
>>> read_journal(j.filename)
[]
"""
from __future__ import annotations

import errno
import os
import pickle
import struct
import threading
import weakref
import zlib
from typing import Any, Dict, Hashable, List, Optional, Tuple

import cloudpickle

__all__ = ["Journal", "UnpicklableKeyError", "read_journal", "read_journal_bytes",
           "read_journal_records", "read_journal_file_bytes", "JOURNAL_NAME", "RECORD",
           "IN_JOURNAL"]

JOURNAL_NAME = ".journal"
#: A record that keeps the value itself says so in its place:
#: ``(IN_JOURNAL, length)`` on disk; :func:`read_journal` gives
#: ``(IN_JOURNAL, offset in the file, length)``.
IN_JOURNAL = "journal"
RECORD = struct.Struct("<II")  # payload length, crc32 of payload
#: Records up to this many bytes are joined and written with one ``write``:
#: 1.4 us against 2.1 for a ``writev`` of the three pieces (60 bytes, ext4,
#: this VM); above it, copying the value costs more than ``writev`` saves.
JOIN_BELOW = 4096

#: (key, where its value now is: a file name or ``(engine, slot)``; None if
#: the key was deleted, size)
Record = Tuple[Hashable, Any, int]

# The journals open in this process, by their file's (device, inode). One
# alone on its file knows where its file ends, and where a value it
# appends starts, without asking the system (an lseek: 0.2-0.3 us of a
# 6 us append written through); two (chests opened on one folder in one
# process share its writer's lock) ask each time, as either may append.
_open_files: Dict[Tuple[int, int], "weakref.WeakSet[Journal]"] = {}
_open_files_lock = threading.Lock()


class UnpicklableKeyError(TypeError):
    """A record of a key that cannot be pickled: no record of it can be in
    the journal, nor (pickled too) in the index."""


class Journal:
    """An append-only log of ``(key, file name or None if deleted, size)``."""

    def __init__(self, filename: str, durable: bool = False,
                 file_mode: int = 0o600) -> None:
        self.filename = filename
        self.durable = durable
        self.file_mode = file_mode
        self._fd: Optional[int] = None
        # (Opened by an append under the chest's lock, or by a packed
        # engine's first use, or a read, outside it: two threads opening it
        # at once each made a descriptor, and one was never closed.)
        self._opening = threading.Lock()
        self._file_id = (0, 0)  # the open file's (device, inode)
        #: Where the open file ends, if this journal is the only one open on
        #: it in this process (else None: asked of the system).
        self._end: Optional[int] = None
        # (key's type, key, value's length, size) -> pickled record.
        self._metas: Dict[Tuple[type, Hashable, int, int], bytes] = {}

    def append(self, key: Hashable, name: Any, size: int,
               data: Optional[bytes] = None) -> int:
        """Record that ``key``'s file is ``name`` (None: the key was deleted),
        or, with ``data``, that its value is ``data``, kept in the record
        itself (``name`` is then ignored). The offset of ``data`` in the
        journal's file (-1 without data): :meth:`read` reads it back."""
        kept = data is not None
        if data is None:
            payload = self._pickle((key, name, size))
            data = b""
        else:
            payload = self._meta_of_value(key, len(data), size)
        # The value follows the pickle (pickle.loads reads up to its STOP,
        # not further); one system call (a large value is not copied).
        header = RECORD.pack(len(payload) + len(data),
                             zlib.crc32(data, zlib.crc32(payload)))
        fd = self._fd if self._fd is not None else self._open()
        total = len(header) + len(payload) + len(data)
        written = 0
        try:
            if total <= JOIN_BELOW:
                written = os.write(fd, b"".join((header, payload, data)))
            else:
                written = os.writev(fd, (header, payload, data))
            if written < total:  # a short write: what is left, piece by piece
                view = memoryview(header + payload + data)[written:]
                while view:
                    count = os.write(fd, view)
                    written += count
                    view = view[count:]
            if self.durable:
                os.fsync(fd)
        except BaseException:
            # Cut the torn record off: replay stops at the first bad record,
            # and the records appended later must still be read. Another
            # chest on the folder (in this process) may append too: cut
            # from the end, only what this call wrote.
            try:
                os.ftruncate(fd, os.fstat(fd).st_size - written)
            except OSError:
                self._end = None  # (where it ends is not known: asked)
            raise
        end = self._end
        if end is not None:
            self._end = end = end + total
        elif not kept:
            return -1
        else:
            # An appending descriptor is left at the end of what it wrote.
            end = os.lseek(fd, 0, os.SEEK_CUR)
        return end - len(data) if kept else -1

    @staticmethod
    def _pickle(meta: Record) -> bytes:
        try:
            return pickle.dumps(meta, protocol=5)
        except Exception:
            try:
                return cloudpickle.dumps(meta, protocol=5)
            except Exception as e:
                # (Only the key can fail: a name, a place and sizes always
                # pickle. Said so, not blamed on the value.)
                raise UnpicklableKeyError(
                    f"the key {meta[0]!r} cannot be pickled ({type(e).__name__}: "
                    f"{e}): a chest with a path keeps its keys on disk") from e

    def _meta_of_value(self, key: Hashable, length: int, size: int) -> bytes:
        """The pickled record of a value kept in the journal. Remembered for
        str and int keys (a counter's record is the same at every change:
        0.1 us instead of 0.6 to pickle it). Only for those exact types:
        keys that are equal but of other types (1, 1.0, True, or tuples
        holding them) must each be recorded as they are."""
        kind = type(key)
        if kind is not str and kind is not int:
            return self._pickle((key, (IN_JOURNAL, length), size))
        known = self._metas.get((kind, key, length, size))
        if known is None:
            known = self._pickle((key, (IN_JOURNAL, length), size))
            if len(self._metas) >= 4096:
                self._metas.clear()
            self._metas[(kind, key, length, size)] = known
        return known

    def _open(self) -> int:
        with self._opening:
            if self._fd is not None:
                return self._fd  # (another thread opened it meanwhile)
            return self._open_now()

    def _open_now(self) -> int:
        fd = os.open(self.filename, os.O_RDWR | os.O_APPEND | os.O_CREAT,
                     self.file_mode)
        try:
            if self.file_mode != 0o600:
                os.fchmod(fd, self.file_mode)
            info = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._file_id = (info.st_dev, info.st_ino)
        with _open_files_lock:
            beside = _open_files.setdefault(self._file_id, weakref.WeakSet())
            beside.add(self)
            if len(beside) == 1:
                self._end = info.st_size
            else:
                for journal in beside:
                    journal._end = None
        return fd

    def touch(self) -> None:
        """Make the journal's file if there is none (an empty journal)."""
        if self._fd is None:
            self._open()

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes of a value kept in the journal at ``offset``."""
        fd = self._fd if self._fd is not None else self._open()
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise OSError(errno.EIO, f"the journal ends before the value "
                                     f"({len(data)} of {length} bytes)", self.filename)
        return data

    @property
    def size(self) -> int:
        """Bytes in the journal's file now."""
        try:
            return os.fstat(self._fd).st_size if self._fd is not None \
                else os.path.getsize(self.filename)
        except FileNotFoundError:
            return 0

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
            with _open_files_lock:
                beside = _open_files.get(self._file_id)
                if beside is not None:
                    beside.discard(self)
                    if not beside:
                        del _open_files[self._file_id]
            self._end = None
            fd, self._fd = self._fd, None
            os.close(fd)


def read_journal(filename: str) -> List[Record]:
    """Every whole record of a journal file, in order; [] if there is none."""
    return read_journal_bytes(read_journal_file_bytes(filename))


def read_journal_file_bytes(filename: str) -> bytes:
    """A journal file's bytes; empty if there is none."""
    try:
        with open(filename, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def read_journal_bytes(data: bytes) -> List[Record]:
    """Every whole record of the journal ``data``, in order (the offsets of
    values kept in it are offsets in ``data``)."""
    return read_journal_records(data)[0]


def read_journal_records(data: bytes) -> Tuple[List[Record], int]:
    """:func:`read_journal_bytes`, and where the last whole record ends (what
    follows is a record torn by a crash, or damaged)."""
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
        if type(name) is tuple and len(name) == 2 and name[0] == IN_JOURNAL:
            # The value itself ends the record: where it is in the file.
            start = offset + RECORD.size + length - name[1]
            name = (IN_JOURNAL, start, name[1])
        records.append((key, name, size))
        offset += RECORD.size + length
    return records, offset
