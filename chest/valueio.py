"""One value between memory and storage: written out of sight, read back.

:class:`ValueIO` chooses how a value goes to disk and comes back: pickled to
bytes in one call (a small value) or streamed (a large one, its fingerprint
taken on another thread meanwhile), into a slot of the packed engine (a
pickle shorter than ``packed_limit``) or a file of its own; and it gives the
token of what was written or read (see :mod:`chest.fingerprint`), by which
the chest knows a value in memory is what its file holds. It keeps no books:
what was written is committed, counted and let go by the caller
(:mod:`chest.core`, :mod:`chest.eviction`), and it needs no lock but for a
file name given while it writes.

>>> import threading
>>> from chest.codec import Codec
>>> from chest.store import Store
>>> import tempfile, os
>>> folder = os.path.join(tempfile.mkdtemp(), "c")
>>> codec = Codec()
>>> store = Store(folder, codec.dump, codec.load, packed="sqlite")
>>> io = ValueIO(codec, store, threading.RLock(), packed_limit=PACKED_LIMIT)
>>> written, token = io.write_temp("k", None, {"a": 1}, 232)   # small: packed
>>> store.commit("k", written)
>>> value, read, seconds, again = io.read("k", "", store.slots["k"])
>>> value, token == again
({'a': 1}, True)
>>> store.drop()
"""
from __future__ import annotations

import threading
from typing import Any, Hashable, Optional, Tuple, Union

from . import serialize
from .background import Workers
from .codec import Codec
from .errors import ValueFileError, describe
from .files import Written
from .fingerprint import bytes_token, fingerprint
from .journal import IN_JOURNAL
from .store import Packed, Store

__all__ = ["ValueIO", "SMALL_VALUE", "LARGE_VALUE", "PACKED_LIMIT"]

#: Values up to this size (in memory and on disk) are pickled to bytes and
#: written or read in one call, and known unchanged by their bytes' hash.
SMALL_VALUE = 64 * 1024
#: Values at least this large are written while another thread takes their
#: fingerprint, and their files read while another thread makes room (see
#: :mod:`chest.eviction`).
LARGE_VALUE = 4 * 1024 * 1024
#: Values whose pickle is shorter are packed (``Chest(packed=...)``); as
#: diskcache's default. At most SMALL_VALUE: packed values are pickled to
#: bytes first.
PACKED_LIMIT = 32 * 1024

#: The threads that take large values' fingerprints (kept between jobs:
#: see :mod:`chest.background`).
_FINGERPRINTS = Workers("chest-fingerprint")


class ValueIO:
    """Writes one value under a temporary name or slot, and reads one back,
    each with the token of its bytes."""

    def __init__(self, codec: Codec, store: Store, lock: threading.RLock,
                 packed_limit: int = PACKED_LIMIT) -> None:
        self.codec = codec
        self.store = store
        #: The chest's lock: held only to give a value a file name.
        self.lock = lock
        #: Values whose pickle is shorter than this are packed (if the store packs).
        self.packed_limit = packed_limit

    def packs(self, size: int) -> bool:
        """May a value of ``size`` bytes in memory go to the packed engine?"""
        store = self.store
        return store.packed is not None and size <= SMALL_VALUE and \
            store.packed not in store.broken

    def write_temp(self, key: Hashable, filename: Optional[str], value: Any,
                   size: int) -> Tuple[Union[Written, Packed], Any]:
        """Write a value under a temporary name beside ``filename`` (None: a
        name is given here if the value is not packed), or to a new slot of
        the packed engine if its bytes are fewer than ``packed_limit``; also
        its token (see :mod:`chest.fingerprint`). Needs no lock."""
        store, codec = self.store, self.codec
        if self.packs(size):
            data = codec.dumps(value)
            token = bytes_token(data)
            if len(data) < self.packed_limit:
                return store.pack_temp(data), token
            if filename is None:
                with self.lock:
                    filename = store.prepare(key)
            if codec.default:
                return store.write_bytes_temp(filename, data), token
        elif filename is None:
            with self.lock:
                filename = store.prepare(key)
        if codec.default and size <= SMALL_VALUE:
            data = serialize.dumps(value)
            return store.write_bytes_temp(filename, data), bytes_token(data)
        if size < LARGE_VALUE:
            token = fingerprint(value)
            return store.write_temp(filename, value), token
        # xxh3 releases the GIL: hash an array while pickle streams it out
        # (on a thread kept for it: starting one took 0.5-2 ms here).
        job = _FINGERPRINTS.run(fingerprint, value)
        try:
            written = store.write_temp(filename, value)
        finally:
            job.wait()
        return written, job.result if job.error is None else None

    def read(self, key: Hashable, filename: str,
             place: Optional[Tuple[Any, ...]] = None) -> Tuple[Any, int, float, Any]:
        """Load ``key``'s value from ``filename`` or, if packed or in the
        journal, from ``place``: ``(value, bytes read, seconds, token or
        None)``. Needs no lock; raises ValueFileError naming the file."""
        store, codec = self.store, self.codec
        if place is not None:
            if place[0] == IN_JOURNAL:
                data, seconds = store.read_journaled(key, place[1:])
            else:
                data, seconds = store.read_packed(key, place)
            try:
                value = codec.loads(data)
            except MemoryError:
                raise
            except Exception as e:
                if place[0] == IN_JOURNAL:  # (was KeyError: "journal" is no engine)
                    raise ValueFileError(key, store.journal_path,
                                         f"kept in the journal: {describe(e)}") from e
                raise ValueFileError(key, store.packed_path(place[0]),
                                     f"slot {place[1]}: {describe(e)}") from e
            # Its bytes' hash, as for a small file: pickling a small value
            # again on eviction costs less than most fingerprints (a small
            # pandas frame's: 130-250 us, its pickle 45-100 us).
            return value, len(data), seconds, bytes_token(data)
        if codec.default and store.files.get(key, 0) <= SMALL_VALUE:
            data, seconds = store.read_bytes(key, filename)
            try:
                value = serialize.loads(data)
            except MemoryError:
                raise
            except Exception as e:
                raise ValueFileError(key, filename, f"{type(e).__name__}: {e}") from e
            return value, len(data), seconds, bytes_token(data)
        value, size_on_disk, seconds = store.read(key, filename)
        token = None
        if not codec.default and size_on_disk <= SMALL_VALUE:
            token = codec.token(value)
        return value, size_on_disk, seconds, token
