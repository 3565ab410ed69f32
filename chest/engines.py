"""The packed engines of one chest folder, and the slots values take in them.

:class:`Engines` opens each engine (:mod:`chest.packed`: SQLite, LMDB) on
first use, numbers slots from one counter shared by every engine and never
reused, also across sessions (the index keeps the next number: a reader
beside a writer must never find another key's value in a slot), puts values
in new slots and reads them back, deletes old slots without raising, and
remembers the engines it found damaged. Which key owns which slot is the
store's business (:mod:`chest.store`): here a slot is a number.

>>> import tempfile
>>> engines = Engines(tempfile.mkdtemp())
>>> first, second = engines.put_many("sqlite", [b"one", b"two"])
>>> first.place, second.place, engines.next_slot
(('sqlite', 1), ('sqlite', 2), 3)
>>> engines.read("k", first.place)[0]
b'one'
>>> engines.delete("sqlite", [1]), engines.size(("sqlite", 1))
(True, None)
>>> engines.close()
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, Dict, Hashable, List, NamedTuple, Optional, Tuple

from .errors import ValueFileError, describe
from .files import FILE_MODE
from .index import Slot
from .packed import ENGINES, PackedEngine, open_engine

__all__ = ["Engines", "Packed"]

logger = logging.getLogger(__name__)


class Packed(NamedTuple):
    """A value written to a packed engine's slot, ready to commit (see
    :meth:`chest.store.Store.commit`)."""

    place: Slot
    size: int
    seconds: float


def _nothing() -> None:
    pass


class Engines:
    """The packed engines of one folder, opened on first use, and the
    numbering of the slots in them."""

    def __init__(self, path: str, readonly: bool = False, durable: bool = False,
                 file_mode: int = FILE_MODE,
                 before_first_open: Callable[[], None] = _nothing) -> None:
        self.path = path
        self.readonly = readonly
        self.durable = durable
        self.file_mode = file_mode
        #: Called before an engine is first opened (the store makes its
        #: journal then: see :meth:`chest.store.Store.engine`).
        self.before_first_open = before_first_open
        #: engine -> why it could not be read when the store opened.
        self.broken: Dict[str, str] = {}
        #: The number the next slot gets (see :meth:`take`).
        self.next_slot = 1
        #: The next slot when the index on disk was written: slots from it on
        #: were written since (see :meth:`written_since_mark`).
        self.mark = 0
        self._opened: Dict[str, PackedEngine] = {}
        #: How many times the engines were closed: a read made outside the
        #: chest's lock that fails while they are closed is made again.
        self.closings = 0
        self._scanned: Dict[str, Dict[int, int]] = {}  # while the store opens
        self._slot_lock = threading.Lock()
        self._engine_lock = threading.Lock()  # (opening an engine)

    def engine(self, name: str) -> PackedEngine:
        """The packed engine ``name`` of this folder, opened on first use."""
        engine = self._opened.get(name)
        if engine is None:
            # Threads writing or reading outside the chest's lock may get
            # here together: one opens it (a second would leak its files).
            with self._engine_lock:
                engine = self._opened.get(name)
                if engine is None:
                    self.before_first_open()
                    engine = open_engine(name, self.path, readonly=self.readonly,
                                         durable=self.durable, file_mode=self.file_mode)
                    self._opened[name] = engine
        return engine

    def path_of(self, name: str) -> str:
        """The file of packed engine ``name`` in the folder."""
        return os.path.join(self.path, ENGINES[name].filename)

    def exists(self, name: str) -> bool:
        """Has engine ``name`` a file in the folder?"""
        return os.path.exists(self.path_of(name))

    def take(self, count: int = 1) -> int:
        """Reserve ``count`` new slot numbers: the first. Thread-safe."""
        with self._slot_lock:
            first = self.next_slot
            self.next_slot += count
        return first

    def next_mark(self) -> int:
        """The next slot number, read as an index about to be written keeps it."""
        with self._slot_lock:
            return self.next_slot

    def put(self, name: str, data: bytes) -> Packed:
        """Write ``data`` to a new slot of engine ``name``, committed (but
        named by no record yet). Safe without the chest's lock."""
        start = time.perf_counter()
        place = (name, self.take())
        self.engine(name).put(place[1], data)
        return Packed(place, len(data), time.perf_counter() - start)

    def put_many(self, name: str, datas: List[bytes]) -> List[Packed]:
        """As :meth:`put` for many values, in one commit of the engine."""
        start = time.perf_counter()
        first = self.take(len(datas))
        numbers = range(first, first + len(datas))
        self.engine(name).put_many(zip(numbers, datas))
        seconds = (time.perf_counter() - start) / max(len(datas), 1)
        return [Packed((name, n), len(data), seconds) for n, data in zip(numbers, datas)]

    def read(self, key: Hashable, place: Slot) -> Tuple[bytes, float]:
        """The bytes of ``key``'s value in ``place``: ``(data, seconds)``;
        ValueFileError naming the database and the slot if they cannot be
        read. Safe without the chest's lock."""
        name, slot = place
        start = time.perf_counter()
        try:
            data = self.engine(name).get(slot)
        except Exception as e:
            raise ValueFileError(key, self.path_of(name),
                                 f"slot {slot}: {describe(e)}") from e
        if data is None:
            why = (f"slot {slot} is gone: the writer changed the key after this "
                   f"read-only chest was opened; reopen the chest to read it as it "
                   f"is now" if self.readonly else f"slot {slot} is missing")
            raise ValueFileError(key, self.path_of(name), why)
        return data, time.perf_counter() - start

    def delete(self, name: str, numbers: List[int]) -> bool:
        """Remove slots from engine ``name``: whether it could. Never
        raises: what is left is a value no key refers to (the index written
        next lists it, and the next writer or ``repair`` removes it), and a
        full disk or a damaged database must not make a deletion or a flush
        fail half-way (the key deleted from the journal but not from the
        chest; a flush that wrote the index reporting that it could not)."""
        try:
            self.engine(name).delete(numbers)
            return True
        except Exception as e:
            logger.info("chest at %s: %d old value(s) left in %s for later: %s",
                        self.path, len(numbers), self.path_of(name), describe(e))
            return False

    def written_since_mark(self, name: str) -> Dict[int, int]:
        """slot -> size of the slots of engine ``name`` numbered from the
        mark on (written since the index was: read once while the store
        opens, see :meth:`opened`); empty if the engine has no file here.
        A damaged engine is recorded in :attr:`broken`."""
        found = self._scanned.get(name)
        if found is None:
            found = {}
            if self.exists(name):
                try:
                    found = dict(self.engine(name).slots(self.mark))
                except OSError as e:
                    # Damaged: its values raise ValueFileError when read, new
                    # small values go to files, every file-held value reads.
                    self.broken[name] = describe(e)
            self._scanned[name] = found
        return found

    def size(self, place: Slot) -> Optional[int]:
        """The size of the value in slot ``place``; None if it is gone."""
        name, number = place
        if number >= self.mark:
            return self.written_since_mark(name).get(number)
        if name in self.broken or not self.exists(name):
            return None
        try:
            data = self.engine(name).get(number)
        except OSError:
            return None
        return None if data is None else len(data)

    def opened(self) -> None:
        """The store is open: what was scanned while it opened is let go."""
        self._scanned.clear()

    def close(self) -> None:
        """Close every engine (opened again on next use)."""
        self.closings += 1
        opened, self._opened = self._opened, {}
        for engine in opened.values():
            engine.close()
