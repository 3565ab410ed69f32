"""Eviction: values leave memory for storage until the budget holds.

:class:`Eviction` picks the next value the policy gives (passing over those
something else holds), writes it without the chest's lock, and commits it
with the lock only if the key still has that value; a value that cannot be
written goes back to memory, marked so it is not tried again at once, and
the next one is tried: :meth:`Eviction.evict_next` never loses a value.
Small values bound for a packed engine are queued and committed together
(PACK_BATCH). A large set may leave its evictions to a thread while the
caller goes on (write-behind, :meth:`Eviction.shrink_behind`), and a large
read may make room on a thread while the file is read
(:meth:`Eviction.make_room_beside_read`); both are waited for before the
next change, a fork, and the interpreter's exit.

It is given the chest's parts (:mod:`chest.memory`, :mod:`chest.flight`,
:mod:`chest.store`, :mod:`chest.valueio`, :mod:`chest.ledger`) and the
chest's table of key versions; it never calls the chest (:mod:`chest.core`).

>>> from chest import Chest
>>> c = Chest(available_memory=1000)
>>> c["a"] = b"x" * 600; c["b"] = b"y" * 600   # over the budget: "a" left
>>> sorted(c.inmem), c.eviction.evict_next() > 0, sorted(c.inmem)
(['b'], True, [])
>>> len(c["a"]), c.eviction.evict_next() > 0, sorted(c.inmem)
(600, True, [])
>>> c.eviction.evict_next()                   # nothing left in memory
-1
>>> c.close()
"""
from __future__ import annotations

import atexit
import errno
import logging
import os
import sys
import threading
import warnings
import weakref
from typing import Any, Callable, Dict, Hashable, List, Optional, Tuple, Union

from . import valueio
from .background import Job, Workers
from .errors import ChestWarning, ReadOnlyError
from .fingerprint import bytes_token
from .files import Written
from .flight import InFlight, Queued
from .ledger import Ledger
from .memory import MemoryTier
from .session import Session
from .stats import Stats
from .store import Packed, Store
from .valueio import ValueIO

__all__ = ["Eviction", "Spill", "PACK_BATCH", "is_disk_full", "NO_KEY"]

#: Small values evicted to a packed engine are committed together, up to
#: this many bytes (and an eighth of the budget): a commit costs more than a
#: small put (SQLite ~20 us, here up to 90 us on a busy disk). Until then
#: they stay in memory, in flight, as values being written do.
PACK_BATCH = 256 * 1024

#: The threads that make room beside large reads and write behind large
#: sets (kept between jobs: see :mod:`chest.background`).
_ROOM_MAKERS = Workers("chest-make-room")

#: A value on its way to disk: key, value, size, version, file name (None: packed).
Spill = Tuple[Hashable, Any, int, int, Optional[str]]

#: ``keep`` of :meth:`Eviction.shrink` when no key is to be kept.
NO_KEY = object()
_MISSING = object()


#: ``sys.getrefcount(spill[1])`` of a value in flight nothing else holds: the
#: flight's dict, the spill and the call's argument (measured, as for this Python).
def _refs_in_flight() -> int:
    flight, spill = (lambda o: ({0: o}, (0, o)))(object())
    return sys.getrefcount(spill[1])


_ALONE_IN_FLIGHT = _refs_in_flight()

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}

logger = logging.getLogger(__name__)


def is_disk_full(error: BaseException) -> bool:
    """Is ``error`` a full disk (or quota, or a file over the system's limit)?"""
    return isinstance(error, OSError) and error.errno in _DISK_FULL


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _outside_chest() -> int:
    """The ``stacklevel`` that makes a warning given by this function's
    caller name the first frame outside chest's own modules (the user's
    line that set, read or evicted): eviction is reached by many paths."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


def _warn_if_disk_full(path: str, key: Hashable, error: BaseException) -> None:
    if is_disk_full(error):
        message = (f"chest at {path}: no space to write key {key!r} ({error}); it "
                   f"stays in memory, over the budget")
        held = getattr(_WRITING_BEHIND, "warnings", None)
        if held is not None:
            held.append(message)  # (warned on the caller's thread: wait_behind)
        else:
            warnings.warn(message, ChestWarning, stacklevel=_outside_chest())


#: On a thread writing behind the caller: ``warnings``, the list its
#: warnings go to, to be given on the caller's thread.
_WRITING_BEHIND = threading.local()
#: The evictions writing behind their callers: waited for before a fork (a
#: child must not inherit a lock the writing thread holds) and at exit
#: (daemon threads stop mid-write when the interpreter finalizes).
_BEHIND: "weakref.WeakValueDictionary[int, Eviction]" = weakref.WeakValueDictionary()


def _wait_for_writes_behind() -> None:
    for e in list(_BEHIND.values()):
        e.wait_behind(shrink=False)


atexit.register(_wait_for_writes_behind)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_wait_for_writes_behind)


def _weakly(function: Callable[..., Any]) -> Callable[[], Optional[Callable[..., Any]]]:
    """``function`` (a bound method held weakly), as ``weakref.ref`` gives it."""
    if hasattr(function, "__self__") and hasattr(function, "__func__"):
        return weakref.WeakMethod(function)
    return lambda: function


class Eviction:
    """Moves values from memory to storage, the policy's pick first, writing
    outside the lock; a value that cannot be written stays in memory."""

    def __init__(self, *, lock: threading.RLock, memory: MemoryTier, flight: InFlight,
                 store: Store, io: ValueIO, ledger: Ledger, stats: Stats,
                 session: Session, versions: Dict[Hashable, int], path: str,
                 on_overflow: Optional[Callable[[Hashable], Any]],
                 writable: Callable[[str], None], guarded: Callable[[], bool],
                 own_functions_only: bool, readonly: bool) -> None:
        self.lock = lock
        self.memory = memory
        self.flight = flight
        self.store = store
        self.io = io
        self.ledger = ledger
        self.stats = stats
        self.session = session
        #: The chest's path as given (messages name it so).
        self.path = path
        #: The chest's keys -> a number that changes whenever the key is set
        #: or deleted: a write done outside the lock is committed only if its
        #: key's number has not changed meanwhile.
        self.versions = versions
        #: Called with a key before its value is written (None: nothing).
        self.on_overflow = on_overflow
        # ``writable(action)``: raises if the chest may not write (read-only,
        # a forked child) and takes its writer's lock again after a close;
        # ``guarded()``: must a write first ask it? Held weakly when they are
        # the chest's methods: a chest nothing else holds must go when its
        # last reference does (on the thread writing behind it, say), not
        # wait for the garbage collector.
        self._writable = _weakly(writable)
        self._guarded = _weakly(guarded)
        #: Eviction calls none of the user's functions: it may run on a
        #: thread of its own (see :meth:`make_room_beside_read`).
        self.own_functions_only = own_functions_only
        self.readonly = readonly
        #: The evictions running behind callers (see :meth:`shrink_behind`),
        #: and the process each began in. (Several threads may each have
        #: started one: all are waited for.) A plain list: a set asks it.
        self.behind: List[Tuple[Job, int]] = []

    def writable(self, action: str) -> None:
        """Raise if the chest may not write (see ``writable``)."""
        writable = self._writable()
        if writable is not None:
            writable(action)

    def guarded(self) -> bool:
        """Must a write first ask :meth:`writable`?"""
        guarded = self._guarded()
        return guarded is not None and guarded()

    # -- one value --------------------------------------------------------------
    def shrink(self, keep: Any = NO_KEY) -> None:
        """Move values to disk until memory is within the budget; ``keep``
        (a key just loaded for its reader) leaves only if nothing else can.
        Stops when no value can leave (those that cannot be written stay)."""
        memory = self.memory
        while memory.used > memory.budget:
            if self.evict_next(keep) < 0:
                return

    def evict_next(self, keep: Any = NO_KEY) -> int:
        """Evict one value, ``keep`` last: the bytes freed, or -1 if none
        could be evicted."""
        while True:
            picked = self._pick(keep)
            if isinstance(picked, int):
                return picked
            if picked is not None and self._spill(*picked):
                return picked[2]

    def _pick(self, keep: Any = NO_KEY) -> Union[int, None, Spill]:
        """Take the next value out of memory (``keep`` last): the bytes freed
        if it left without a write (-1 if none could leave), or the
        arguments of :meth:`_spill` to write it (it is in flight), or None
        if it could not be written and stays in memory."""
        with self.lock:
            child = not self.session.in_owner
            # Values something else holds (a task's input, an array the
            # caller kept) are passed over: evicting them frees no memory.
            popped = self.memory.pop_next(keep, spare_in_use=True)
            if popped is None:
                return -1  # nothing in memory may leave
            key, value, size = popped
            if self.readonly:
                return size  # a copy of its file: let it go
            if child:
                # A forked child writes nothing into its parent's folder: a
                # value its file holds may go, any other stays in memory.
                if self.ledger.is_clean(key, value, self.store.files):
                    return size
                try:
                    self.writable("write a value to disk")
                except ReadOnlyError as e:
                    self.keep_unwritable(key, value, size, e)
                return None
            version = self.versions[key]
            if self.on_overflow is not None:
                try:
                    self.on_overflow(key)
                except BaseException:
                    self.memory.keep(key, value, size)
                    raise
                if self.versions.get(key, _MISSING) != version:
                    return size  # the callback deleted or set the key: no write
            if self.ledger.is_clean(key, value, self.store.files):
                self.ledger.let_go(key, value, size)
                return size
            if self.guarded():
                # A write, after close(): the writer's lock is taken again
                # (asked only now: a value its file holds leaves without it,
                # as it did not while another chest had the folder open).
                try:
                    self.writable("write to disk")
                except Exception as e:
                    # Refused (another chest has the folder, or wrote it):
                    # it stays in memory, and the next one is tried (every
                    # read raised, clean values' too); a flush says why.
                    self.keep_unwritable(key, value, size, e)
                    return None
                except BaseException:
                    self.memory.keep(key, value, size)  # (nothing is lost)
                    raise
            self.flight.start(key, value, size)
            try:
                filename = None if self.io.packs(size) else self.store.prepare(key)
            except Exception as e:
                self.keep_unwritable(key, value, size, e)
                return None
        return key, value, size, version, filename

    def _spill(self, key: Hashable, value: Any, size: int, version: int,
               filename: Optional[str]) -> bool:
        """Write an evicted value without the lock, then commit it with it
        (a small one to a packed engine: with others, see PACK_BATCH).

        False if it could not be written (it is back in memory).
        """
        if filename is None and min(PACK_BATCH, self.memory.budget // 8) > 0:
            try:
                data = self.io.codec.dumps(value)
            except Exception as e:
                return self._not_spilled(key, value, size, version, e)
            if len(data) < self.io.packed_limit:
                self._pack_later(key, value, size, version, data)
                return True
        try:
            written, token = self.io.write_temp(key, filename, value, size)
        except Exception as e:
            return self._not_spilled(key, value, size, version, e)
        with self.lock:
            committed = self._commit(key, value, size, version, written, token)
            if committed:
                self.ledger.let_go(key, value, size)
            return committed is not False

    def _commit(self, key: Hashable, value: Any, size: int, version: int,
                written: Union[Written, Packed], token: Any) -> Optional[bool]:
        """Make ``written`` ``key``'s stored copy if the key still has this
        value in flight (lock held): True once committed and counted; None
        if the key was set, deleted or flushed meanwhile (``written`` is
        discarded); False if the commit failed (the value is back in
        memory, passed over until set again)."""
        if self.versions.get(key) != version or not self.flight.is_current(key, value):
            self.store.discard(written)
            return None
        try:
            self.store.commit(key, written)
        except Exception as e:
            self.store.discard(written)
            self.keep_unwritable(key, value, size, e)
            _warn_if_disk_full(self.path, key, e)
            return False
        self.flight.landed(key)
        self.count_write(key, written, size, token)
        return True

    def count_write(self, key: Hashable, written: Union[Written, Packed], size: int,
                    token: Any) -> None:
        """``key``'s value (``size`` bytes in memory) was written and
        committed as ``written``, its bytes' ``token`` (lock held)."""
        self.ledger.wrote(key, size, token)
        stats = self.stats
        stats.spills += 1
        stats.bytes_written += written.size
        stats.write_seconds += written.seconds

    def _not_spilled(self, key: Hashable, value: Any, size: int, version: int,
                     error: BaseException) -> bool:
        """An evicted value could not be written: back in memory, if it is
        still the key's. False."""
        with self.lock:
            if self.versions.get(key) == version and self.flight.is_current(key, value):
                self.keep_unwritable(key, value, size, error)
        _warn_if_disk_full(self.path, key, error)
        return False

    def _pack_later(self, key: Hashable, value: Any, size: int, version: int,
                    data: bytes) -> None:
        """Queue an evicted value's pickle for the packed engine; commit the
        queue once it holds enough bytes. Needs no lock."""
        with self.lock:
            if self.versions.get(key) != version or \
                    not self.flight.is_current(key, value):
                return  # set, deleted or flushed meanwhile
            queued = self.flight.queue(key, value, size, version, data)
            if queued < min(PACK_BATCH, self.memory.budget // 8):
                return
            batch = self.flight.take_queue()
        self.commit_packing(batch)

    def commit_packing(self, batch: List[Queued]) -> None:
        """Write queued values in one commit of the packed engine, then
        record each that is still current (a value set, deleted or flushed
        meanwhile is dropped). Values that cannot be written go back to
        memory. Needs no lock."""
        if not batch:
            return
        try:
            written = self.store.pack_many([data for *_, data in batch])
        except Exception as e:
            for key, value, size, version, _ in batch:
                self._not_spilled(key, value, size, version, e)
            return
        with self.lock:
            for (key, value, size, version, data), w in zip(batch, written):
                self._commit(key, value, size, version, w, bytes_token(data))

    def keep_unwritable(self, key: Hashable, value: Any, size: int,
                        error: BaseException) -> None:
        """A value that could not be written stays in memory, passed over
        until it is set again or flushed (lock held)."""
        self.flight.discard(key)
        self.memory.hold(key, value, size)
        self.ledger.mark_unwritable(key, error)

    # -- beside the caller --------------------------------------------------------
    def make_room_beside_read(self, incoming: int) -> Optional[Job]:
        """Start evicting in a thread while a file of ``incoming`` bytes is
        read, so that writing or checking the values that leave overlaps the
        read; None if there is nothing to overlap (a file under LARGE_VALUE).

        Only for a chest that calls none of the user's functions to evict
        (default ``dump``, ``open``, ``key_to_filename``, ``on_overflow``):
        those are always called by the thread that caused the eviction. Not
        when the caller holds the lock (``with c.lock: c[key]``: the thread
        would wait for it, and the caller for the thread), nor when writing
        first needs the writer's lock again (after ``close()``).
        """
        memory = self.memory
        if incoming < valueio.LARGE_VALUE or not self.own_functions_only \
                or memory.used + incoming <= memory.budget \
                or incoming > memory.budget \
                or self.guarded() or self.lock._is_owned():  # type: ignore[attr-defined]
            return None  # (a value over the whole budget is not kept)
        return _ROOM_MAKERS.run(self._make_room, incoming)

    def shrink_behind(self, size: int, owner: object = None) -> None:
        """After a value of ``size`` bytes was set over the budget: choose
        the values that leave now, and write them in a thread while the
        caller goes on (write-behind), if the value is large and the
        conditions of :meth:`make_room_beside_read` hold; else evict now.
        Values being written are in flight (a read takes them back); the
        next set, flush, close, shrink or drop waits for the thread first,
        so memory holds at most the budget and what one set pushed out.
        ``owner`` (the chest) is held until the writes are done: a chest in
        a reference cycle must not be collected, and closed, meanwhile (its
        close would wait for the writes, on the thread writing them, for
        ever; nor could it flush what they had not yet written)."""
        if size < valueio.LARGE_VALUE or not self.own_functions_only or self.guarded() \
                or self.store.max_disk is not None \
                or self.lock._is_owned():  # type: ignore[attr-defined]
            # (With max_disk, a value over it is refused at once, and warned
            # of by the set, as documented.)
            self.wait_behind()
            self.shrink()
            return
        # (A 32 MiB array written behind the caller: the write overlaps
        # whatever the caller computes next, dask's next task say.)
        spills: List[Spill] = []
        now: List[Spill] = []
        try:
            while self.memory.used > self.memory.budget:
                picked = self._pick()
                if picked == -1:
                    break
                if isinstance(picked, tuple):
                    # Held elsewhere too (the caller's array, a view of it),
                    # it may be changed while a thread pickles it: written
                    # here, before the set returns, as ever.
                    alone = sys.getrefcount(picked[1]) <= _ALONE_IN_FLIGHT
                    (spills if alone else now).append(picked)
        finally:
            if spills:  # (in flight: written even if choosing the next raised)
                with self.lock:  # (so that a close in another thread sees it)
                    self.behind.append((_ROOM_MAKERS.run(self._spill_all, spills, owner),
                                         os.getpid()))
                    _BEHIND[id(self)] = self
            for spill in now:
                self._spill(*spill)

    def _spill_all(self, spills: List[Spill], owner: object) -> List[str]:
        """Write values taken out of memory by :meth:`_pick` (on a thread
        of their own, holding ``owner``); never raises (one that cannot be
        written is back in memory). The warnings to give the caller."""
        held: List[str] = []
        _WRITING_BEHIND.warnings = held
        try:
            for spill in spills:
                self._spill(*spill)
        finally:
            del _WRITING_BEHIND.warnings
        return held

    def wait_behind(self, shrink: bool = True) -> None:
        """Wait until the eviction started by :meth:`shrink_behind` is done
        (not if the caller holds the lock: the thread may be waiting for
        it). If it stopped at an error, evict again here: the error is met
        again, and raised, if it lasts."""
        if not self.behind or sys.is_finalizing() or \
                self.lock._is_owned():  # type: ignore[attr-defined]
            return  # (finalizing: the threads no longer run)
        with self.lock:
            behind, self.behind = self.behind, []
        for job, pid in behind:
            if pid != os.getpid():
                continue  # a forked child: its parent's thread is not here
            job.wait()
            if job.error is not None:  # (a bug: _spill_all never raises)
                logger.warning("chest at %s: writing behind failed: %r",
                               self.path, job.error)
            for message in job.result or ():
                warnings.warn(message, ChestWarning, stacklevel=3)
        if shrink and self.memory.used > self.memory.budget:
            self.shrink()

    def _make_room(self, incoming: int) -> None:
        """Evict until ``incoming`` more bytes fit in the budget."""
        try:
            while self.memory.used + incoming > self.memory.budget:
                if self.evict_next() < 0:
                    return
        except Exception:
            # Nothing evicted is lost (see evict_next); with room not made,
            # the shrink after the read meets the error again and raises.
            pass
