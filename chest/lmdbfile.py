"""Is an LMDB database file whole? Its pages, read with plain reads.

LMDB reads its file through a memory map: a page past the file's end kills
the process with SIGBUS instead of raising. A file cut short (a copy that
ran out of room, a person) must be caught before LMDB maps it. Its length
alone does not tell: LMDB's last page number counts pages a commit took and
freed again without writing them (the file of a cleanly closed chest was 2
pages shorter than that in one run), so a short file is walked here, page
by page with ``os.pread``, from the roots of the last commit: every page its
trees refer to (branch, leaf and overflow pages, of the data and of the
free list) must lie inside the file.

The format is LMDB 0.9's (the ``lmdb`` package's), little-endian, 64-bit:
a page header of 16 bytes (page number, pad, flags, then lower/upper
bounds or an overflow page's count); the meta pages 0 and 1, the one with
the larger transaction id current; nodes of 8 bytes before their key.

>>> import os, tempfile
>>> name = os.path.join(tempfile.mkdtemp(), "db")
>>> with open(name, "wb") as f:
...     _ = f.write(bytes(100))
>>> missing_page(name)
Traceback (most recent call last):
...
OSError: [Errno 5] not an LMDB database (no meta page): ...
"""
from __future__ import annotations

import errno
import os
import struct
from typing import List, Optional, Tuple

__all__ = ["missing_page"]

MAGIC = 0xBEEFC0DE
HEADER = 16                     # bytes of a page header
P_BRANCH, P_LEAF, P_OVERFLOW, P_LEAF2 = 0x01, 0x02, 0x04, 0x20
F_BIGDATA, F_SUBDATA = 0x01, 0x02
INVALID = (1 << 64) - 1         # no root: an empty tree
# In a meta page, after the header: magic, version, address, map size, two
# trees of (pad = page size for the first, flags, depth, branch pages, leaf
# pages, overflow pages, entries, root), the last page, the transaction id.
_META = struct.Struct("<IIQQ" + "IHHQQQQQ" * 2 + "QQ")


def _meta(data: bytes) -> Optional[Tuple[int, int, List[int]]]:
    """``(transaction id, page size, roots)`` of a meta page, or None."""
    if len(data) < HEADER + _META.size:
        return None
    fields = _META.unpack_from(data, HEADER)
    if fields[0] != MAGIC:
        return None
    roots = [fields[4 + 7], fields[4 + 8 + 7]]
    return fields[-1], fields[4], roots


def missing_page(path: str) -> Optional[str]:
    """None if every page the last commit of the LMDB file ``path`` refers
    to is inside the file; else what is missing. OSError if it cannot be
    read or is not an LMDB file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        meta = _meta(os.pread(fd, 4096, 0))
        if meta is None:
            raise OSError(errno.EIO, "not an LMDB database (no meta page)", path)
        psize = meta[1]
        if psize < 512 or psize & (psize - 1):
            raise OSError(errno.EIO, f"not an LMDB database (page size {psize})", path)
        if size < 2 * psize:
            return f"page 1 (the second meta page) of {psize} bytes"
        other = _meta(os.pread(fd, psize, psize))
        if other is not None and other[0] > meta[0]:
            meta = other
        pages = size // psize
        todo = [root for root in meta[2] if root != INVALID]
        try:
            return _walk(fd, psize, pages, todo)
        except struct.error:
            return "a page that cannot be read as LMDB's (damaged)"
    finally:
        os.close(fd)


def _walk(fd: int, psize: int, pages: int, todo: List[int]) -> Optional[str]:
    visited = 0
    while todo:
        number = todo.pop()
        if number >= pages:
            return f"page {number}"
        visited += 1
        if visited > pages:
            return "a page that refers back to itself (damaged)"
        page = os.pread(fd, psize, number * psize)
        own, flags = struct.unpack_from("<Q2xH", page)
        kind = flags & (P_BRANCH | P_LEAF | P_OVERFLOW | P_LEAF2)
        if own != number or kind not in (P_BRANCH, P_LEAF, P_LEAF | P_LEAF2):
            return f"page {number}, which is not what it should be (damaged)"
        if kind != P_BRANCH and kind != P_LEAF:
            continue  # (no pages below it: sorted duplicates only)
        lower = struct.unpack_from("<H", page, 12)[0]
        count = max(0, (lower - HEADER) >> 1)
        offsets = struct.unpack_from(f"<{count}H", page, HEADER)
        if flags & P_BRANCH:
            for offset in offsets:
                lo, hi, top = struct.unpack_from("<HHH", page, offset)
                todo.append(lo | hi << 16 | top << 32)
            continue
        for offset in offsets:
            node_flags, key_size = struct.unpack_from("<HH", page, offset + 4)
            if node_flags & F_BIGDATA:
                first = struct.unpack_from("<Q", page, offset + 8 + key_size)[0]
                if first >= pages:
                    return f"overflow page {first}"
                own, flags, count_pages = struct.unpack_from(
                    "<Q2xHI", os.pread(fd, HEADER, first * psize))
                if own != first or not flags & P_OVERFLOW:
                    return f"overflow page {first}, which is not one (damaged)"
                if first + count_pages > pages:
                    return f"overflow pages {first}-{first + count_pages - 1}"
            elif node_flags & F_SUBDATA:
                root = struct.unpack_from("<Q", page, offset + 8 + key_size + 40)[0]
                if root != INVALID:
                    todo.append(root)
    return None
