"""The ``.keys`` index: the chest's own file format, and chest 0.2's.

A header (``chest-index`` magic line, then version, payload length and the
crc32 of the payload), then a pickled ``{"entries": [(key, name, size),
...], "retired": [name, ...]}``: every key in the chest's order with where
its value is, and the retired files the writer removes right after writing
the index. Written to a temporary name and renamed into place.

Examples
--------
>>> import os, tempfile
>>> folder = tempfile.mkdtemp()
>>> write_index_file(folder, [("x", "x", 10), (("a", "b"), "_a/b", 3)])
>>> with open(os.path.join(folder, INDEX_NAME), "rb") as f:
...     data = f.read()
>>> parse_index("index", data[len(INDEX_MAGIC):])
([('x', 'x', 10), (('a', 'b'), '_a/b', 3)], set())
"""
from __future__ import annotations

import builtins
import os
import pickle
import struct
import zlib
from typing import Any, Hashable, Iterable, List, Set, Tuple

import cloudpickle

from .errors import IndexFileError
from .files import FILE_MODE, remove_quietly, sync_dir, temp_name
from .journal import JOURNAL_NAME
from .names import safe_name

__all__ = ["INDEX_NAME", "INDEX_MAGIC", "INDEX_VERSION", "HEADER", "write_index_file",
           "parse_index", "as_key", "holds_a_chest"]

INDEX_NAME = ".keys"
INDEX_MAGIC = b"chest-index\n"
INDEX_VERSION = 1
HEADER = struct.Struct("<IQI")  # version, payload length, crc32 of payload


def write_index_file(folder: str, entries: List[Tuple[Hashable, str, int]],
                     durable: bool = False, retired: Iterable[str] = (),
                     file_mode: int = FILE_MODE) -> None:
    """Atomically write the ``.keys`` of ``folder`` listing ``entries``
    (key, relative file name, size), in the chest's order, and the
    ``retired`` files (relative names) that the writer removes next."""
    payload = _dumps_index({"entries": entries, "retired": list(retired)})
    header = INDEX_MAGIC + HEADER.pack(INDEX_VERSION, len(payload),
                                        zlib.crc32(payload))
    tmp = temp_name(folder, "keys")
    try:
        with builtins.open(tmp, "wb", opener=lambda path, flags: os.open(
                path, flags, file_mode)) as f:
            if file_mode != FILE_MODE:
                os.fchmod(f.fileno(), file_mode)
            f.write(header)
            f.write(payload)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, os.path.join(folder, INDEX_NAME))
    except BaseException:
        remove_quietly(tmp)
        raise
    if durable:
        sync_dir(folder)


def as_key(key: Any) -> Hashable:
    """Keys from json come back as lists where they were tuples."""
    if isinstance(key, list):
        return tuple(as_key(k) for k in key)
    return key


def _dumps_index(obj: Any) -> bytes:
    try:
        return pickle.dumps(obj, protocol=5)
    except Exception:
        return cloudpickle.dumps(obj, protocol=5)


def parse_index(filename: str,
                 data: bytes) -> Tuple[List[Tuple[Hashable, str, int]], Set[str]]:
    """The entries of an index (after its magic) and its retired names."""
    if len(data) < HEADER.size:
        raise IndexFileError(filename, "the header is truncated")
    version, length, crc = HEADER.unpack_from(data)
    if version > INDEX_VERSION:
        raise IndexFileError(
            filename, f"format version {version} is newer than this chest "
            f"(reads up to {INDEX_VERSION}); upgrade chest")
    payload = data[HEADER.size:]
    if len(payload) != length:
        raise IndexFileError(
            filename, f"truncated: {len(payload)} of {length} bytes")
    if zlib.crc32(payload) != crc:
        raise IndexFileError(filename, "checksum mismatch: the file is corrupted")
    try:
        content = pickle.loads(payload)
        entries = [(key, name, int(size)) for key, name, size in content["entries"]]
        retired = {name for name in content.get("retired", ()) if isinstance(name, str)}
    except Exception as e:
        raise IndexFileError(filename, f"{type(e).__name__}: {e}") from e
    for key, name, _ in entries:
        if safe_name(name) != name:
            raise IndexFileError(filename, f"unsafe file name {name!r} of key {key!r}")
    return entries, retired


def holds_a_chest(folder: str) -> bool:
    """Does ``folder`` hold a chest of its own (an index or a journal)?"""
    return any(os.path.lexists(os.path.join(folder, name))
               for name in (INDEX_NAME, JOURNAL_NAME))
