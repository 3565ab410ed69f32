"""Loading: values come back from storage into memory.

:class:`Loading` answers a read the memory tier missed. A value still in
flight (being written, or its pickle queued) is taken back; a large value
that left memory but is still held elsewhere, and still what its file
holds, is taken back as the same object; anything else is read from its
file, slot or journal record without the chest's lock, then kept in
memory if the key still has that version (else read again: it was set,
deleted or moved meanwhile), sized once per stored copy, and the budget is
restored by the eviction (:mod:`chest.eviction`), keeping the value just
read for its reader. A large read makes room on another thread while the
file is read. It is given the chest's parts and its table of key versions;
it never calls the chest (:mod:`chest.core`).

>>> from chest import Chest
>>> c = Chest(available_memory=1000)
>>> c["a"] = b"x" * 600; c["b"] = b"y" * 600   # "a" left memory
>>> kept = []
>>> len(c.loading.load("a", True, lambda: kept.append(1))), kept, sorted(c.inmem)
(600, [1], ['a'])
>>> len(c.loading.load("a", True, lambda: kept.append(2))), kept   # in memory
(600, [1])
>>> c.close()
"""
from __future__ import annotations

import os
import threading
from typing import Any, Callable, Dict, Hashable, Iterator, List, Optional

from .codec import Codec
from .errors import ValueFileError, describe
from .eviction import Eviction
from .fingerprint import bytes_token
from .flight import InFlight
from .ledger import Ledger
from .memory import MemoryTier
from .sizeof import nbytes
from .stats import Stats
from .store import Store
from . import valueio
from .valueio import SMALL_VALUE, ValueIO

__all__ = ["Loading", "MAX_OPEN_FILES"]

#: How many files :meth:`Loading.load_files` opens at once.
MAX_OPEN_FILES = 512

_MISSING = object()


def _nothing() -> None:
    pass


class Loading:
    """Brings a key's value back into memory: from flight, from a holder
    elsewhere, or read from storage outside the lock."""

    def __init__(self, *, lock: threading.RLock, memory: MemoryTier, flight: InFlight,
                 store: Store, io: ValueIO, ledger: Ledger, stats: Stats,
                 eviction: Eviction, codec: Codec, versions: Dict[Hashable, int],
                 next_version: Iterator[int],
                 on_miss: Optional[Callable[[Hashable], Any]]) -> None:
        self.lock = lock
        self.memory = memory
        self.flight = flight
        self.store = store
        self.io = io
        self.ledger = ledger
        self.stats = stats
        self.eviction = eviction
        self.codec = codec
        #: The chest's keys -> a number that changes whenever the key is set
        #: or deleted (a read outside the lock keeps its value only if its
        #: key's number has not changed meanwhile), and where numbers come from.
        self.versions = versions
        self.next_version = next_version
        #: Called with a key before its value is read from storage for a
        #: reader (None: nothing).
        self.on_miss = on_miss

    def load(self, key: Hashable, read: bool,
             kept: Callable[[], None] = _nothing) -> Any:
        """``key``'s value, brought into memory if it fits the budget (file
        I/O without the lock). ``kept()`` is called, with the lock held and
        before memory is shrunk, when a value from storage or from a holder
        elsewhere is kept: one the caller may change in place, that a flush
        must then write. ``read``: for a reader (counted as a miss, calls
        ``on_miss``) rather than a prefetch. KeyError if the chest has no
        such key."""
        # (The path of a small packed value: ~30% of a read here was this
        # method's own bookkeeping, so lookups are kept to one per table.)
        memory, store, stats, ledger = self.memory, self.store, self.stats, self.ledger
        inmem, versions = memory.values, self.versions
        while True:
            with self.lock:
                value = inmem.get(key, _MISSING)
                if value is not _MISSING:
                    stats.hits += 1
                    return value
                if key in self.flight.values:
                    # Back in memory: the caller may change it in place, and
                    # the write under way (or the pickle waiting to be
                    # packed) holds it as it was. Its commit finds the key
                    # at a new version and backs off. (Not in flight was not
                    # enough: evicted again meanwhile, the same object was
                    # in flight again, and the older pickle was committed
                    # and let it go: the key then read that pickle.)
                    stats.hits += 1
                    value, size, data = self.flight.take_back(key)
                    versions[key] = next(self.next_version)
                    if data is None or self.codec.unchanged(bytes_token(data), value):
                        # (As it left: counted as it left, not sized again.)
                        memory.keep(key, value, size)
                    else:
                        value = self.codec.loads(data)
                        memory.keep(key, value, nbytes(value))
                    over = memory.used > memory.budget
                    break
                if ledger.left:
                    # Evicted, but still held elsewhere: the same object,
                    # not a copy from disk, if it still is what its file
                    # holds. (Changed in place after it left, it is not the
                    # key's value, as before: the file's is read.)
                    value = ledger.left.pop(key, _MISSING)
                    if value is not _MISSING and ledger.is_clean(key, value, store.files):
                        stats.hits += 1
                        memory.keep(key, value, nbytes(value), clean=True)
                        kept()
                        over = memory.used > memory.budget
                        break
                version = versions.get(key, _MISSING)
                if version is _MISSING:
                    raise KeyError(key)
                incoming = store.files.get(key)
                if incoming is None:
                    raise ValueFileError(key, store.filename(key),
                                         "the chest holds no data for it")
                if read and self.on_miss is not None:
                    self.on_miss(key)
                place = store.place(key)
                filename = "" if place is not None else store.filename(key)
                closings = store.engines.closings
            room_maker = None if incoming < valueio.LARGE_VALUE else \
                self.eviction.make_room_beside_read(incoming)  # (no call for a small one)
            try:
                value, size_on_disk, seconds, token = self.io.read(key, filename, place)
            except ValueFileError:
                with self.lock:
                    if versions.get(key, _MISSING) == version and \
                            key in store.files and store.place(key) == place and \
                            store.engines.closings == closings:
                        raise
                # The key (or where it is) changed while we read, or a close()
                # closed the engine the read was using: again.
                continue
            finally:
                if room_maker is not None:
                    room_maker.join()
            with self.lock:
                if versions.get(key, _MISSING) != version:
                    continue
                stats.misses += read
                stats.reloads += 1
                stats.bytes_read += size_on_disk
                stats.read_seconds += seconds
                now = inmem.get(key, _MISSING)
                if now is not _MISSING:
                    return now
                known = ledger.read_size(key, token)
                size = nbytes(value) if known is None else known
                if size > memory.budget:
                    return value  # (read each time: it is not kept)
                memory.keep(key, value, size, clean=True)
                ledger.kept_read(key, size, token, value)
                kept()
                over = memory.used > memory.budget
            break
        if over:
            self.eviction.shrink(keep=key)
        return value

    def load_files(self, keys: List[Hashable],
                   open_many: Callable[..., Any], load: Callable[..., Any],
                   mode: str, kept: Callable[[], None] = _nothing) -> None:
        """Read the files of ``keys`` (on disk only, in files: not packed,
        not in the journal) with the user's ``open_many``, at most
        MAX_OPEN_FILES at once, keeping each in memory within the budget as
        it goes (lock held; ``kept()`` after each, as for :meth:`load`).
        ValueFileError names the key and the file that failed."""
        store, memory = self.store, self.memory
        for i in range(0, len(keys), MAX_OPEN_FILES):
            batch = keys[i:i + MAX_OPEN_FILES]
            names = [store.filename(k) for k in batch]
            try:
                with open_many(names, mode="r" + mode) as files:
                    for key, name, f in zip(batch, names, files):
                        try:
                            value = load(f)
                        except (MemoryError, KeyboardInterrupt):
                            raise
                        except Exception as e:
                            raise ValueFileError(key, name, describe(e)) from e
                        token = None if self.codec.default or \
                            store.files[key] > SMALL_VALUE else self.codec.token(value)
                        self.stats.reloads += 1
                        size = nbytes(value)
                        if size > memory.budget:
                            continue  # (as for a read: it would evict all)
                        memory.keep(key, value, size, clean=True)
                        self.ledger.kept_read(key, size, token, value)
                        kept()
                        # Within the budget as it goes (a batch of 512
                        # values loaded before any left: 116 MB held
                        # through a 20 MB budget).
                        self.eviction.shrink(keep=key)
            except OSError as e:
                if isinstance(e, ValueFileError):
                    raise
                # The user's open_many failed: name the file it names,
                # else the first one missing, else the first of the batch.
                name = e.filename if e.filename in names else next(
                    (n for n in names if not os.path.isfile(n)), names[0])
                raise ValueFileError(batch[names.index(name)], name, describe(e)) from e
