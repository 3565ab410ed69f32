"""``Chest``: a dictionary that spills to disk.

Here: the lock and the keys' versions, setting (in memory or written
through), flush and close, copies and updates between chests, and the
public API (dict's, chest 0.2's, dask's). Composed from:

- :mod:`chest.memory`: the values in memory, their sizes, the budget and
  the policy;
- :mod:`chest.eviction`: values leaving memory for storage (writes outside
  the lock, packing in batches, values that cannot be written, the
  threads writing behind a set and making room beside a read);
- :mod:`chest.loading`: values brought back into memory (reads outside
  the lock, values taken back from flight or from a holder elsewhere);
- :mod:`chest.ledger`: what is known of each key's stored copy (its
  bytes' token, its size when written or read, a failed write);
- :mod:`chest.flight`: values being written outside the lock, and the
  pickles queued for one packed commit;
- :mod:`chest.codec`: the value format (``dump``/``load``, ``open``, mode);
- :mod:`chest.valueio`: one value written out of sight (bytes or a stream,
  a packed slot or a file) and read back, with the token of its bytes;
- :mod:`chest.session`: the folder, the writer's lock, and how a chest ends;
- :mod:`chest.store`: where values live on disk (files, packed engines, the
  index and the journal);
- :mod:`chest.policy`: which value leaves memory first;
- :mod:`chest.sizeof`: how many bytes a value takes in memory;
- :mod:`chest.worker`: what a dask.distributed worker asks beyond a mapping;
- :mod:`chest.views`: ``keys()``, ``values()`` and ``items()``.
"""
from __future__ import annotations

import builtins
import copy
import itertools
import logging
import os
import threading
import warnings
import weakref
from collections.abc import Mapping, MutableMapping
from typing import (IO, Any, Callable, Dict, Hashable, Iterable, Iterator, List,
                    Optional, Tuple, Union)

from . import serialize
from .budget import (DEFAULT_BUDGET, budget_is_binary, format_budget, format_bytes,
                     parse_budget)
from .codec import Codec, open_many
from .errors import (BoundToMemoryError, ChestWarning, FolderChangedError, IndexWriteError,
                     ReadOnlyError, UnwritableValuesError, ValueFileError, describe)
from .eviction import Eviction, is_disk_full
from .files import FILE_MODE
from .fingerprint import bytes_token
from .flight import InFlight
from .index import INDEX_NAME
from .journal import JOURNAL_NAME
from .ledger import Ledger
from .loading import Loading
from .lock import opening, refuse_if_held_here
from .memory import MemoryTier
from .names import key_to_filename
from .packed import ENGINES
from .policy import POLICIES, Policy, make_policy
from .session import Session
from .sizeof import nbytes
from .stats import Stats
from .store import KEEP, Keep, Store
from .valueio import PACKED_LIMIT, SMALL_VALUE, ValueIO
from .views import ItemsView, KeysView, ValuesView
from .worker import FREED_MEMORY, OnDiskKeys, SpilledSize, disk_metrics, worker_budget

__all__ = ["Chest", "nbytes", "key_to_filename"]

#: With write_through, the index is written (and the journal emptied) once
#: the journal holds this many bytes of values: reopening replays it all.
JOURNAL_FOLD = 32 * 2**20
_DEFAULT_KEY_TO_FILENAME = key_to_filename  # the constructor's parameter hides it
_MISSING = object()

logger = logging.getLogger(__name__)


#: Every chest of this process: a forked child's are guarded (see _writable).
_CHESTS: "weakref.WeakValueDictionary[int, Chest]" = weakref.WeakValueDictionary()


def _guard_in_child() -> None:
    for c in list(_CHESTS.values()):
        c._guarded = True  # (its next change asks _writable, which refuses)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_guard_in_child)


def _must_be_new(new: "Chest", action: str) -> None:
    """A chest made for ``action`` at a path that already holds keys would
    mix them with the new ones: closed, and ValueError naming the path."""
    if len(new):
        count = len(new)
        new.close()
        raise ValueError(f"{action}: {new.path} already holds a chest of {count} "
                         f"keys; give a new path (or open it and update it)")


def _do_nothing(*args: Any, **kwargs: Any) -> None:
    pass


def _packed_limit(value: Union[int, str]) -> int:
    """``packed_limit`` in bytes; ValueError if over SMALL_VALUE."""
    limit = parse_budget(value, "packed_limit")
    if limit > SMALL_VALUE:
        raise ValueError(f"packed_limit must be at most {SMALL_VALUE} bytes (64 KiB), "
                         f"not {value!r}")
    return limit


class Chest(MutableMapping):
    """A dictionary that spills to disk.

    Values stay in memory until their sizes add up to more than
    ``available_memory``; then the least recently used move to files in
    ``path`` (those already on disk first, as they cost no write), one file
    per key, and come back when asked for. A chest with a
    path can be closed and reopened by that path later.

    Parameters
    ----------
    data : mapping, optional
        Initial contents.
    path : str, optional
        The folder the chest owns. Without one, a temporary folder is made
        and removed when the chest is closed or garbage-collected; with one,
        the chest flushes on close and garbage collection and reopens from it.
    available_memory : int or str, optional
        The memory budget: bytes, a size such as ``"2GB"`` / ``"512MiB"``, or
        a share of the machine's memory such as ``"25%"`` (the default).
    dump, load : callable, optional
        ``dump(value, file)`` / ``load(file)``. The default is pickle protocol
        5 (cloudpickle for what pickle refuses), streamed without buffering.
    key_to_filename : callable, optional
        Suggests a file name for a key; the chest keeps names unique and safe.
    on_miss, on_overflow : callable, optional
        Called with the key before a value is loaded from disk by a read, and
        before a value is moved to disk.
    open, open_many : callable, optional
        Open value files (``open(filename, mode=...)``), and many at once for
        :meth:`prefetch`.
    mode : {'b', 't'}
        Binary or text files (``'t'`` for ``json.dump`` / ``json.load``).
    policy : {'clean-first', 'lru', 'largest'} or Policy
        Which value leaves memory first: the least recently used of those
        whose file already holds them, then of the others (default); the
        least recently used; or the largest (ties: the least recently used).
    durable : bool
        ``fsync`` files and folders so a flush also survives power loss.
    readonly : bool
        Open a chest with a path for reading only: no lock is taken (a
        writer may have it open), nothing is written, changes raise
        :class:`~chest.errors.ReadOnlyError`.
    lock_timeout : float
        Seconds to wait for another process to close the chest before
        :class:`~chest.errors.ChestLockedError` (default: do not wait).
    max_disk : int or str, optional
        Most bytes the value files may take; a value that would go over stays
        in memory, as on a full disk.
    mmap : bool
        Load large numpy arrays as read-only memory maps of their files (as
        ``np.load(mmap_mode='r')``): nothing is read until used, and evicting
        them writes nothing. Copy one to change it. A map stays valid when
        its key is overwritten or deleted. Needs the default ``dump``/``load``.
    worker_local_directory : str, optional
        Put a temporary chest's folder in this folder (dask.distributed
        passes a worker's own folder here).
    packed : {'sqlite', 'lmdb', None}, optional
        Keep values whose pickle (what ``dump`` writes) is shorter than
        ``packed_limit`` in one database in the folder instead of a file
        each: SQLite (the standard library's) or LMDB (``chest[lmdb]``).
        Larger values stay one file each. Without it, a chest reopens as it
        was made; ``None`` writes new values to files (packed ones stay
        readable).
    write_through : bool
        Every change (``c[k] = v``, ``del``, ``pop``, ``update``, ``clear``,
        ...) is in the operating system's hands before the call returns (on
        the disk, with ``durable``): a ``kill -9`` right after loses nothing
        it did. A small value takes one append to the journal, a large one
        its file. A value that cannot be written raises from the call that
        set it, and the key keeps its earlier value. Needs a ``path`` and the
        default ``open``.
    packed_limit : int or str
        Bytes below which a value is packed (default 32 KiB).
    file_mode : int
        Permission bits of the chest's files (default ``0o600``: yours only);
        its folders get the matching search bits (``0o700``). ``0o640`` or
        ``0o660`` share a chest with your group. Opening a chest that another
        user could change warns: reading a value unpickles it.

    Examples
    --------
    >>> import numpy as np
    >>> c = Chest(available_memory="1MB")
    >>> for i in range(4):
    ...     c[i] = np.full(100_000, i)        # 800 kB each
    >>> len(c), len(c.inmem)                   # one in memory, three on disk
    (4, 1)
    >>> int(c[0][0])
    0
    >>> c.close()                              # a temporary chest removes its files
    """

    def __init__(
        self,
        data: Optional[Union[Dict[Hashable, Any], Iterable]] = None,
        path: Optional[Union[str, os.PathLike]] = None,
        available_memory: Optional[Union[int, float, str]] = None,
        dump: Callable[[Any, IO[Any]], None] = serialize.dump,
        load: Callable[[IO[Any]], Any] = serialize.load,
        key_to_filename: Callable[[Hashable], str] = key_to_filename,
        on_miss: Callable[[Hashable], Any] = _do_nothing,
        on_overflow: Callable[[Hashable], Any] = _do_nothing,
        open: Callable[..., IO[Any]] = builtins.open,
        open_many: Callable[..., Any] = open_many,
        mode: str = "b",
        *,
        policy: Union[str, Policy] = "clean-first",
        durable: bool = False,
        readonly: bool = False,
        lock_timeout: float = 0.0,
        max_disk: Optional[Union[int, str]] = None,
        mmap: bool = False,
        worker_local_directory: Optional[Union[str, os.PathLike]] = None,
        file_mode: int = FILE_MODE,
        packed: Union[str, None, Keep] = KEEP,
        packed_limit: Union[int, str] = PACKED_LIMIT,
        write_through: bool = False,
    ) -> None:
        if isinstance(data, (str, os.PathLike)) and worker_local_directory is None:
            # dask.distributed calls ``Worker(data=Chest)`` as Chest(directory).
            data, worker_local_directory = None, data
        # A worker's chest without a budget takes the worker's, once the
        # worker is there (it makes its storage before it is whole).
        self._budget_of_worker = os.fspath(worker_local_directory) \
            if worker_local_directory is not None and available_memory is None else None
        self.lock = threading.RLock()
        # Arguments first: a bad one must leave nothing behind.
        budget = parse_budget(
            DEFAULT_BUDGET if available_memory is None else available_memory)
        # Sizes are shown in the units the budget was given in (MiB or MB).
        self._binary_units = budget_is_binary(available_memory)
        max_disk_bytes = None if max_disk is None else parse_budget(max_disk, "max_disk")
        #: The value format: dump, load, open and mode (see :mod:`chest.codec`).
        self.codec = Codec(dump, load, open, open_many, mode)
        if isinstance(file_mode, bool) or not isinstance(file_mode, int) or \
                file_mode & ~0o666 or not file_mode & 0o600 == 0o600:
            shown = oct(file_mode) if isinstance(file_mode, int) else repr(file_mode)
            raise ValueError(f"file_mode must be permission bits within 0o666 that let "
                             f"you read and write (0o600, 0o640, 0o660), not {shown}")
        if not isinstance(packed, Keep) and packed is not None and packed not in ENGINES:
            raise ValueError(f"packed must be one of {sorted(ENGINES)} or None, "
                             f"not {packed!r}")
        self.file_mode = file_mode
        limit = _packed_limit(packed_limit)
        for name, callback in (("on_miss", on_miss), ("on_overflow", on_overflow)):
            if not callable(callback):
                raise TypeError(f"{name} must be callable (a function of the key), "
                                f"not {callback!r}")
        if write_through and (path is None or open is not builtins.open):
            raise ValueError("write_through=True needs a path (a temporary chest is "
                             "not kept) and the default open")
        self.write_through = write_through
        if write_through and isinstance(packed, Keep) and packed.new is None and \
                self.codec.default:
            # A new chest written through packs its small values: its
            # journal is folded into a file a value otherwise (10,000 small
            # values: 9.3 s to close here, 0.25 s packed). A dump of the
            # user's keeps a file each (text a person may read).
            packed = Keep("sqlite")
        #: The folder, the writer's lock, and how the chest ends (see
        #: :mod:`chest.session`).
        self.session = Session(path, readonly=readonly, lock_timeout=lock_timeout,
                               file_mode=file_mode, parent=worker_local_directory)
        self.path = self.session.path
        self._key_to_filename = key_to_filename
        self._on_miss = on_miss
        self._on_overflow = on_overflow
        try:
            self.policy = make_policy(policy)
            self._set_up(budget, dump, load, key_to_filename, open, mode, on_overflow,
                         durable, readonly, lock_timeout, max_disk_bytes, mmap, packed,
                         limit)
        except BaseException:
            self.session.end()  # nothing is left behind
            raise
        if data is not None:  # (not "if data": a pandas Series has no truth value)
            self.update(data)

    def _set_up(self, budget: int, dump: Callable[[Any, IO[Any]], None],
                load: Callable[[IO[Any]], Any],
                key_to_filename: Callable[[Hashable], str], open: Callable[..., IO[Any]],
                mode: str, on_overflow: Callable[[Hashable], Any], durable: bool,
                readonly: bool, lock_timeout: float, max_disk: Optional[int],
                mmap: bool, packed: Any, packed_limit: int) -> None:
        """The rest of the constructor: memory tier, writer lock, store."""
        self.stats = Stats()

        #: The values held in memory, their sizes, and the eviction policy.
        self.memory = MemoryTier(self.policy, budget)
        #: Values held in memory (``memory.values``).
        self.inmem: Dict[Hashable, Any] = self.memory.values
        self._sizes: Dict[Hashable, int] = self.memory.sizes
        # Every key, in the order a dict would keep, -> a number that changes
        # whenever the key is set or deleted: I/O done outside the lock
        # compares it to know whether its result is still current.
        self._keys: Dict[Hashable, int] = {}
        self._versions = itertools.count()
        #: What is known of each key's stored copy: the token of its bytes,
        #: its size when written or read, a failed write (see :mod:`chest.ledger`).
        self.ledger = Ledger(self.codec)
        #: Values being written by an eviction that released the lock, and
        #: the pickles of small ones waiting to be packed together.
        self.flight = InFlight()
        self._changed = False  # anything not yet in the index on disk
        self._closed = False  # closed, and not changed since
        # The folder's index and journal as this chest left them when it gave
        # the writer's lock back (None while it holds it; see _writable).
        self._left_as: Optional[Tuple[Any, ...]] = None

        self.readonly = readonly
        if mmap and not self.codec.default:
            raise ValueError("mmap=True needs the default dump, load, open and mode")
        # (One opening of a folder at a time in this process: two threads
        # opening a packed chest at once shared its lock, and each was then
        # refused holding it alone.)
        with opening(self.session.folder):
            self.session.lock()
            try:
                self.store = Store(
                    self.path, dump, serialize.load_mapped if mmap else load,
                    key_to_filename, open, mode,
                    unbuffered=self.codec.default,
                    durable=durable, journal=not self.session.temporary,
                    readonly=readonly, max_disk=max_disk, file_mode=self.file_mode,
                    packed=packed, packed_limit=packed_limit,
                )
            except BaseException:
                self.session.unlock()
                raise
            if self.write_through or self.store.packed is not None or self.store.slots:
                # Not shared with another chest of this process (as chest 0.2's
                # are): two writers of packed values each gave out the same
                # slots, and one key read another's value; a flush of one
                # emptied the journal that held the other's values written
                # through. Also when it takes the lock again after close().
                try:
                    self.session.hold_alone()
                except BaseException:
                    self.store.close()
                    self.session.unlock()
                    raise
        #: How one value is written out of sight and read back (see
        #: :mod:`chest.valueio`).
        self.io = ValueIO(self.codec, self.store, self.lock, packed_limit)
        self.session.warn_if_others_can_write(
            (INDEX_NAME, JOURNAL_NAME, *(e.filename for e in ENGINES.values())))
        # True when a change must first check readonly, take the lock again
        # or adopt a dask worker's budget (see _writable).
        self._guarded = readonly or self._budget_of_worker is not None
        self._keys.update(zip(self.store.files, self._versions))  # (in C)
        #: Values leave memory for storage (see :mod:`chest.eviction`).
        self.eviction = Eviction(
            lock=self.lock, memory=self.memory, flight=self.flight, store=self.store,
            io=self.io, ledger=self.ledger, stats=self.stats, session=self.session,
            versions=self._keys, path=self.path,
            on_overflow=None if on_overflow is _do_nothing else on_overflow,
            writable=self._writable, guarded=self._is_guarded,
            # Evicting calls none of the user's functions: it may run on a
            # thread of the chest's own (see Eviction.make_room_beside_read).
            own_functions_only=(self.codec.default and on_overflow is _do_nothing
                                and key_to_filename is _DEFAULT_KEY_TO_FILENAME),
            readonly=readonly)
        #: Values come back from storage (see :mod:`chest.loading`).
        self.loading = Loading(
            lock=self.lock, memory=self.memory, flight=self.flight, store=self.store,
            io=self.io, ledger=self.ledger, stats=self.stats, eviction=self.eviction,
            codec=self.codec, versions=self._keys, next_version=self._versions,
            on_miss=None if self._on_miss is _do_nothing else self._on_miss)
        _CHESTS[id(self)] = self
        self.session.watch(self)

    # -- the format (chest 0.2's attributes) ----------------------------------------
    @property
    def dump(self) -> Callable[[Any, IO[Any]], None]:
        """``dump(value, file)``: how values are written."""
        return self.codec.dump

    @property
    def load(self) -> Callable[[IO[Any]], Any]:
        """``load(file)``: how values are read."""
        return self.codec.load

    @property
    def open(self) -> Callable[..., IO[Any]]:
        """``open(filename, mode=...)``: how value files are opened."""
        return self.codec.open

    @property
    def open_many(self) -> Callable[..., Any]:
        """Opens many value files at once, for :meth:`prefetch`."""
        return self.codec.open_many

    @property
    def mode(self) -> str:
        """``'b'`` (binary files) or ``'t'`` (text files)."""
        return self.codec.mode

    @property
    def packed_limit(self) -> int:
        """Values whose pickle is shorter than this many bytes are packed (if
        ``packed``); set it to bytes or a size such as ``"16KiB"``."""
        return self.io.packed_limit

    @packed_limit.setter
    def packed_limit(self, value: Union[int, str]) -> None:
        limit = _packed_limit(value)
        with self.lock:
            self.io.packed_limit = self.store.packed_limit = limit

    # -- the budget ------------------------------------------------------------
    @property
    def available_memory(self) -> int:
        """The memory budget in bytes; set it to bytes, ``"2GB"`` or ``"25%"``."""
        if self._budget_of_worker is not None:
            self._adopt_worker_budget()
        return self._available_memory

    @available_memory.setter
    def available_memory(self, value: Union[int, float, str]) -> None:
        self._budget_of_worker = None
        self._available_memory = parse_budget(value)
        self._binary_units = budget_is_binary(value)
        self.shrink()

    @property
    def _available_memory(self) -> int:
        return self.memory.budget

    @_available_memory.setter
    def _available_memory(self, value: int) -> None:
        self.memory.budget = value

    @property
    def memory_usage(self) -> int:
        """Bytes of the values in memory, as counted when each came in."""
        return self.memory.used

    @property
    def heap(self) -> Dict[Hashable, Tuple]:
        """The keys in memory and their eviction priorities, in the order
        they would leave (a snapshot; see :mod:`chest.policy`)."""
        with self.lock:
            return self.policy.priorities()

    @property
    def counter(self) -> int:
        """chest 0.2.3's use counter: a number that grows with every use of
        a key (the policy's clock; reading it changes nothing else)."""
        return self.policy.clock()

    @property
    def _explicitly_given_path(self) -> bool:
        # (chest 0.2.3's name, which its own tests read: was a path given?)
        return not self.session.temporary

    # -- MutableMapping --------------------------------------------------------
    def __getitem__(self, key: Hashable) -> Any:
        value = self.inmem.get(key, _MISSING)  # (a miss raising KeyError costs more)
        if value is _MISSING:
            return self._load(key, read=True)
        # Lock-free hit: one dict read, one dict write (atomic under the GIL).
        self.policy.touch(key)
        self.stats.hits += 1
        return value

    def __setitem__(self, key: Hashable, value: Any) -> None:
        if self._guarded:
            hash(key)  # a bad key changes nothing, not even the lock
            self._writable("set a key")
        if self.write_through:
            return self._set_through(key, value)
        if self.eviction.behind:
            self.eviction.wait_behind()  # (at most one value over the budget)
        size = nbytes(value)
        memory, ledger = self.memory, self.ledger
        with self.lock:
            budget = memory.budget
            if key in self.inmem and size <= budget:
                # Replaced in memory: the policy only records a use.
                if key in self.store.files:
                    self._refuse_in_child("set a key")
                    self.store.retire(key)  # first: if it fails, no change
                memory.replace(key, value, size)
                if ledger.tokens:
                    ledger.changed(key)
                if ledger.unwritable:
                    ledger.unwritable.pop(key, None)
            else:
                if size > budget or key in self.store.files:
                    self._refuse_in_child("set a key")
                if size > budget:
                    self._on_overflow(key)  # first: if it raises, no change
                    budget = memory.budget  # (the callback may have changed it)
                self._drop_value(key)
                if size > budget:
                    self._keys[key] = next(self._versions)
                    self._changed = True
                    self._closed = False
                    self._store_oversized(key, value, size)
                    return
                memory.keep(key, value, size)
            self._keys[key] = next(self._versions)
            self._changed = True
            self._closed = False
            over = memory.used > memory.budget
        if over:
            self.eviction.shrink_behind(size, self)  # (held while it writes)

    def write(self, key: Hashable, value: Any) -> None:
        """``c[key] = value``, on disk when this returns, as every set is with
        ``write_through=True``: a crash (``kill -9``) afterwards finds it,
        and until it returns finds the key's earlier stored value. If it
        cannot be written, this raises and the key keeps its value. (A
        temporary chest keeps nothing: a set.)"""
        if self.session.temporary:
            self[key] = value
            return
        if self._guarded:
            hash(key)  # a bad key changes nothing, not even the lock
            self._writable("set a key")
        self._set_through(key, value)

    def _set_through(self, key: Hashable, value: Any) -> None:
        """``c[key] = value`` with ``write_through``: a small value is kept in
        the journal, a large one written to its file or slot, before this
        returns; then it is kept in memory, clean. If it cannot be written,
        this raises and the key keeps its stored value."""
        self._refuse_in_child("set a key")  # (every such set writes)
        try:
            size = nbytes(value)
            data = self.codec.dumps(value) if size <= SMALL_VALUE else None
            memory, ledger = self.memory, self.ledger
            with self.lock:
                store = self.store
                if data is not None:
                    if size > memory.budget:
                        # First: if it raises, nothing changes; it may raise
                        # the budget (as for a value not written through).
                        self._on_overflow(key)
                    if store.max_disk is not None and store.unindexed_bytes + \
                            len(data) > store.max_disk - store.disk_usage:
                        # The journal keeps every version until it is folded:
                        # fold it before it takes the chest over max_disk.
                        self.write_keys()
                    store.write_through(key, data)  # may raise: nothing changed
                    self.stats.bytes_written += len(data)
                    budget = memory.budget
                    if size <= budget and \
                            memory.replace(key, value, size, clean=True):
                        # Replaced in memory (a counter): the policy records a use.
                        if ledger.unwritable:
                            ledger.unwritable.pop(key, None)
                    else:
                        if key in self._keys:  # (a new key has nothing to drop)
                            self._drop_value(key, file=False)  # stored: nothing lost
                        if size <= budget:
                            memory.keep(key, value, size, clean=True)
                    ledger.tokens[key] = bytes_token(data)
                    if ledger.read_sizes:
                        ledger.read_sizes.pop(key, None)
                    if ledger.spilled_sizes:  # (of an older value)
                        ledger.spilled_sizes.pop(key, None)
                else:
                    if size > memory.budget:
                        self._on_overflow(key)  # first: if it raises, no change
                    # Written first: if that fails, the key keeps its value
                    # (which, for write(), may be in memory only: dropped
                    # first, it was lost).
                    self._write(key, value, size, replacing=True)
                    if size <= memory.budget:  # (on_overflow may have changed it)
                        memory.keep(key, value, size, clean=True)
                self._keys[key] = next(self._versions)
                self._changed = True
                self._closed = False
                over = memory.used > memory.budget
                fold = store.unindexed_bytes > JOURNAL_FOLD
        except Exception as e:
            if hasattr(e, "add_note"):  # Python 3.11+: say which key, and that
                e.add_note(f"chest at {self.path}: key {key!r} was not set: it "
                           f"cannot be written through; the key keeps "
                           f"its earlier value")
            raise
        # Set: what follows may raise, but not undo it.
        if fold:
            self.write_keys()  # the journal must not grow without bound
        if over:
            self.shrink()

    def __delitem__(self, key: Hashable) -> None:
        with self.lock:
            if key not in self._keys:
                raise KeyError(key)
            if self._guarded:
                self._writable("delete a key")
            self._refuse_in_child("delete a key")
            try:
                self.store.forget(key)  # first: if it fails, nothing has changed
            except OSError as e:
                # (A deletion is recorded in the journal: on a disk with no
                # room at all, even that small write fails.)
                if hasattr(e, "add_note"):  # Python 3.11+
                    e.add_note(f"chest at {self.path}: key {key!r} was not deleted: "
                               f"its deletion cannot be recorded in "
                               f"{self.store.journal_path}; the key keeps its value"
                               + ("; the disk is full: free room on it, then delete "
                                  "again" if is_disk_full(e) else ""))
                raise
            self._drop_value(key)
            del self._keys[key]
            self._changed = True
            self._closed = False

    def popitem(self) -> tuple:
        """Remove and return the last inserted ``(key, value)``, as a dict does."""
        with self.lock:
            if not self._keys:
                raise KeyError("popitem(): chest is empty")
            key = next(reversed(self._keys))
            value = self[key]
            del self[key]
            return key, value

    def pop(self, key: Hashable, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value, else ``default`` (KeyError
        without one), as one step: a thread popping the same key meanwhile
        gets the default, not a KeyError."""
        with self.lock:
            if key not in self._keys:
                if default is _MISSING:
                    raise KeyError(key)
                return default
            value = self[key]
            del self[key]
            return value

    def setdefault(self, key: Hashable, default: Any = None) -> Any:
        """``c[key]``, set to ``default`` first if missing, as one step (two
        threads' ``setdefault(k, []).append(x)`` keep both appends)."""
        with self.lock:
            if key in self._keys:
                return self[key]
            self[key] = default
            return default

    def clear(self) -> None:
        """Delete every key (without loading values from disk)."""
        with self.lock:
            for key in list(self._keys):
                del self[key]

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __iter__(self) -> Iterator[Hashable]:
        # The keys when the loop starts, less those deleted meanwhile: a
        # change during the loop (from it, or from another thread) never
        # raises, as it would for a dict; new keys are not visited.
        with self.lock:
            keys = list(self._keys)
        return _still_in(keys, self)

    def __len__(self) -> int:
        return len(self._keys)

    def __reversed__(self) -> Iterator[Hashable]:
        with self.lock:
            keys = list(self._keys)
        return _still_in(reversed(keys), self)

    def __ior__(self, other: Any) -> "Chest":
        self.update(other)
        return self

    def __or__(self, other: Any) -> "Chest":
        """``c | other``: a new temporary chest with this chest's items, then
        ``other``'s (as ``dict | dict``)."""
        if not isinstance(other, Mapping):
            return NotImplemented
        new = self.copy()
        new.update(other)
        return new

    def __ror__(self, other: Any) -> "Chest":
        if not isinstance(other, Mapping):
            return NotImplemented
        new = self.copy(empty=True)
        new.update(other)
        self._copy_items_into(new)  # (values of its own, as copy() gives)
        return new

    def _copy_items_into(self, new: "Chest") -> None:
        """Give ``new`` this chest's items as values of its own: files
        hard-linked, others read again or deep-copied; keys deleted
        meanwhile (by another thread) are passed over."""
        for key in list(self._keys):
            source = self._file_of(key)
            if source is not None:
                try:
                    if key in new:
                        del new[key]
                    new._link(key, source)
                    continue
                except FileNotFoundError:
                    pass  # changed meanwhile
            value = self._fresh_copy(key)
            if value is not _MISSING:  # (not deleted meanwhile)
                new[key] = value

    def copy(self, path: Optional[Union[str, os.PathLike]] = None,
             empty: bool = False) -> "Chest":
        """A new chest with the same items, budget and format: temporary
        unless given a ``path``. Value files are hard-linked (copied across
        file systems): the two are independent afterwards, as a chest never
        changes a file in place. ``empty``: the same settings, no items."""
        refuse_if_held_here(path, "copy")
        new = type(self)(
            path=path, available_memory=self._available_memory, dump=self.dump,
            load=self.load, key_to_filename=self._key_to_filename, open=self.open,
            open_many=self.open_many, mode=self.mode,
            policy=self.policy.name if self.policy.name in POLICIES
            else type(self.policy)(),
            durable=self.store.durable, file_mode=self.file_mode,
            packed=self.store.packed, packed_limit=self.packed_limit,
            write_through=self.write_through and path is not None)
        _must_be_new(new, "copy")
        if not empty:
            self._copy_items_into(new)
        return new

    __copy__ = copy

    def __reduce_ex__(self, protocol: Any) -> Any:
        # (Without this: "cannot pickle '_thread.RLock' object".)
        raise TypeError(f"a chest owns its folder {self.path} and cannot be pickled "
                        f"(nor deep-copied): pickle dict(chest), or reopen it with "
                        f"Chest(path=...); chest.copy() makes a new chest")

    def _file_of(self, key: Hashable) -> Optional[str]:
        """The file that holds ``key``'s current value (for a link), if it is
        not in memory, not packed and not in the journal."""
        with self.lock:
            if key in self.inmem or key in self.flight or \
                    key not in self.store.files or key in self.store.slots or \
                    key in self.store.journaled:
                return None
            return self.store.filename(key)

    def _fresh_copy(self, key: Hashable) -> Any:
        """``key``'s value as an object of its own (shared with nothing):
        read again from disk, or a deep copy of the one in memory; _MISSING
        if the key was deleted meanwhile (by another thread)."""
        while True:
            with self.lock:
                if key not in self._keys:
                    return _MISSING
                version = self._keys[key]
                value = self.inmem.get(key, self.flight.values.get(key, _MISSING))
                place = self.store.place(key)
                filename = "" if place is not None or key not in self.store.files \
                    else self.store.filename(key)
            if value is not _MISSING:
                break
            try:
                return self.io.read(key, filename, place)[0]
            except ValueFileError:
                with self.lock:
                    now = self.store.place(key)
                    if self._keys.get(key, _MISSING) == version and now == place \
                            and key in self.store.files:
                        raise
                # (set, deleted or moved while it was read: again)
        try:
            return copy.deepcopy(value)
        except Exception:
            # (A lock, a generator: kept in memory, as it cannot be written;
            # shared then, as dict.copy() shares every value.)
            return value

    @classmethod
    def fromkeys(cls, keys: Iterable[Hashable], value: Any = None,
                 path: Optional[Union[str, os.PathLike]] = None, **kwargs: Any) -> "Chest":
        """A new chest (temporary unless given a ``path``) with ``keys``, each
        set to ``value``; ``kwargs`` as for :class:`Chest`."""
        refuse_if_held_here(path, "fromkeys")
        new = cls(path=path, **kwargs)
        _must_be_new(new, "fromkeys")
        for key in keys:
            new[key] = value
        return new

    def keys(self) -> KeysView:
        """The keys (reversible, with ``.mapping``, as a dict's view)."""
        return KeysView(self)

    def values(self) -> ValuesView:
        """The values (reversible, with ``.mapping``; keys deleted during a
        loop are passed over)."""
        return ValuesView(self)

    def items(self) -> ItemsView:
        """The ``(key, value)`` pairs; ``x in c.items()`` is False (not an
        error) for an ``x`` that is not a pair, as for a dict."""
        return ItemsView(self)

    def __repr__(self) -> str:
        on_disk = len(self._keys) - len(self.inmem)
        unwritable = (f", {len(self.ledger.unwritable)} cannot be written"
                      if self.ledger.unwritable else "")
        return (
            f"<Chest at {self.path}: {len(self._keys)} keys, {len(self.inmem)} in "
            f"memory ({format_bytes(self.memory.used, self._binary_units)} of "
            f"{format_budget(self._available_memory, self._binary_units)}{unwritable}), "
            f"{on_disk} on disk only "
            f"({format_bytes(self.store.disk_usage, self._binary_units)} in files); "
            f"{self.stats}>"
        )

    __str__ = __repr__

    # -- the memory tier ---------------------------------------------------------
    def _drop_value(self, key: Hashable, file: bool = True) -> None:
        """Forget ``key``'s current value in memory and, if ``file``, on disk
        (lock held)."""
        if file and key in self.store.files:
            self.store.retire(key)  # first: if it fails, nothing has changed
            self.ledger.spilled_sizes.pop(key, None)
        self.memory.drop(key)
        self.flight.discard(key)  # (and its queued pickle, of the old value)
        self.ledger.forget(key)

    def _store_oversized(self, key: Hashable, value: Any, size: int) -> None:
        """Store a value larger than the whole budget straight on disk (lock held)."""
        try:
            self._write(key, value, size)
        except Exception as e:
            self.memory.hold(key, value, size)
            self.ledger.mark_unwritable(key, e)
            if isinstance(e, BoundToMemoryError):
                return  # it must stay in memory: nothing went wrong
            warnings.warn(
                f"chest at {self.path}: the value of key {key!r} is larger than "
                f"the budget but cannot be written ({e!r}); it stays in memory",
                ChestWarning, stacklevel=3)

    def _write(self, key: Hashable, value: Any, size: int, replacing: bool = False) -> None:
        """Write ``key``'s value (``size`` bytes in memory) to its file now
        (lock held); ``replacing``: a new value, the old one's (in memory,
        in flight, what is known of it) dropped once the new is stored."""
        filename = None if self.io.packs(size) else self.store.prepare(key)
        written, token = self.io.write_temp(key, filename, value, size)
        try:
            self.store.commit(key, written)
        except BaseException:
            self.store.discard(written)
            raise
        if replacing:
            self._drop_value(key, file=False)  # (its stored copy was replaced)
        self.eviction.count_write(key, written, size, token)

    def shrink(self) -> None:
        """Move values to disk until ``memory_usage <= available_memory``.

        Values that cannot be written stay in memory (and over budget);
        eviction moves on to the next one. Writing happens outside the lock.
        """
        self.eviction.wait_behind()
        self.eviction.shrink()

    def evict(self) -> int:
        """Move the next value (by the eviction policy) from memory to disk.

        Returns the bytes freed in memory, or -1 if no value could be moved.
        Never raises: a value that cannot be written stays in memory and
        the next one is tried. This is what dask.distributed's memory monitor
        calls to spill. When nothing is left to move, the memory allocators
        keep after it was freed goes back to the system (see
        :class:`~chest.worker.FreedMemory`): what a paused worker needs.
        """
        try:
            freed = self.eviction.evict_next()
        except Exception as e:
            logger.warning("chest at %s: eviction failed: %r", self.path, e)
            freed = -1
        if freed < 0 or not self.memory.values:
            FREED_MEMORY.release()
        return freed

    def _load(self, key: Hashable, read: bool) -> Any:
        """Load ``key``'s value into memory (see :meth:`Loading.load`)."""
        return self.loading.load(key, read, self._reopened)

    def _reopened(self) -> None:
        """A value came back to memory: the caller may change it in place,
        so the next close flushes (lock held)."""
        self._closed = False

    # -- dask.distributed's spilling interface -----------------------------------
    @property
    def fast(self) -> Dict[Hashable, Any]:
        """The values in memory (what a distributed worker may ask to evict).

        Read while empty, it gives freed memory back to the system (see
        :class:`~chest.worker.FreedMemory`: at most once a second). A
        worker reads it only when its process is over its spill threshold,
        and stops there if it is empty: a worker paused with nothing in its
        store stays paused unless its memory goes down by itself. One stalled
        so, with dask's own SpillBuffer, until giving memory back took it
        from 273 to 244 MiB and it resumed."""
        inmem = self.inmem
        if not inmem:
            FREED_MEMORY.release()
        return inmem

    @property
    def slow(self) -> OnDiskKeys:
        """The keys whose values are on disk only (sized and iterable)."""
        return OnDiskKeys(self._keys, self.inmem, self.lock)

    @property
    def spilled_total(self) -> SpilledSize:
        """Bytes of the values on disk only: ``(memory, disk)``.

        ``memory`` is what they would take in memory (their size when they
        were evicted, or their file size after a reopen), ``disk`` the bytes
        of their files.
        """
        with self.lock:
            files = self.store.files
            disk = sum(size for key, size in files.items() if key not in self.inmem)
            memory = sum(self.ledger.spilled_sizes.get(key, size)
                         for key, size in files.items() if key not in self.inmem)
        return SpilledSize(memory, disk)

    @property
    def cumulative_metrics(self) -> Dict[Tuple[str, str], float]:
        """Disk traffic in dask.distributed's metric format."""
        return disk_metrics(self.stats)

    # -- the original chest's methods ---------------------------------------------
    def key_to_filename(self, key: Hashable) -> str:
        """The path of ``key``'s file (or of the one it would get). A packed
        value has no file of its own: see ``packed``."""
        with self.lock:
            if key in self._keys and key not in self.store.slots and \
                    key not in self.store.journaled:
                return self.store.prepare(key)
            return self.store.filename(key)

    def move_to_disk(self, key: Hashable) -> None:
        """Write ``key``'s value to disk and remove it from memory.

        Raises the error of ``dump`` (the value stays in memory) if it cannot
        be written.
        """
        with self.lock:
            if key not in self.inmem:
                if key in self.flight or key in self.store.files:
                    return
                raise KeyError(key)
            self._writable("move a value to disk")
            self._on_overflow(key)
            value = self.inmem.get(key, _MISSING)
            if value is _MISSING:
                return  # the callback deleted (or moved) it: nothing to move
            if not self.ledger.is_clean(key, value, self.store.files):
                try:
                    self._write(key, value, self._sizes[key])
                except Exception as e:
                    self.ledger.mark_unwritable(key, e)
                    raise
            self._forget_in_memory(key)

    def _forget_in_memory(self, key: Hashable) -> None:
        """Drop ``key``'s value from memory; its file or slot holds it (lock held)."""
        self.ledger.unwritable.pop(key, None)
        self.memory.drop(key)

    def _pack_all(self) -> None:
        """Write the packable values in memory in one commit of the packed
        engine, and drop them from memory, with the small ones their file or
        slot already holds (lock held). The others, and any value this
        cannot write, are left to :meth:`move_to_disk`."""
        if self.store.packed is None or self.store.packed in self.store.broken or \
                self._on_overflow is not _do_nothing:  # (called key by key)
            return
        batch = []
        clean = []
        files = self.store.files
        for key, value in self.inmem.items():
            if self._sizes[key] > SMALL_VALUE:
                continue
            if self.ledger.is_clean(key, value, files):
                # (Dropped here, not checked again by move_to_disk: closing
                # 10,000 items of a List written through checked each twice.)
                clean.append(key)
                continue
            try:
                data = self.codec.dumps(value)
            except Exception:
                continue  # move_to_disk raises it, and records it
            if len(data) < self.packed_limit:
                batch.append((key, data))
        for key in clean:
            self._forget_in_memory(key)
        if len(batch) < 2:
            return
        try:
            written = self.store.pack_many([data for _, data in batch])
        except Exception:
            return  # each is tried alone
        for (key, data), w in zip(batch, written):
            try:
                self.store.commit(key, w)
            except Exception:
                self.store.discard(w)
                continue
            self.eviction.count_write(key, w, self._sizes[key], bytes_token(data))
            self._forget_in_memory(key)

    def get_from_disk(self, key: Hashable) -> None:
        """Load ``key``'s value into memory (no effect if it is there)."""
        if key not in self.inmem:
            self._load(key, read=False)

    def prefetch(self, keys: Any) -> None:
        """Load ``keys`` (a list, or one key) into memory, as far as the budget
        allows."""
        if isinstance(keys, list) or not isinstance(keys, Hashable):
            keys = list(keys)
        else:
            keys = [keys]
        if self.open_many is open_many:
            for key in keys:
                self.get_from_disk(key)
            return
        with self.lock:
            missing = [k for k in keys if k not in self._keys]
            if missing:
                raise KeyError(missing[0])
            keys = [k for k in keys if k not in self.inmem and k in self.store.files]
            for key in [k for k in keys if self.store.place(k) is not None]:
                self.get_from_disk(key)  # packed or in the journal: no file to open
            keys = [k for k in keys if self.store.place(k) is None]
            self.loading.load_files(keys, self.open_many, self.load, self.mode,
                                    self._reopened)  # (as a read)
        self.shrink()

    def flush(self) -> None:
        """Write every in-memory value to disk and write the index.

        Afterwards memory is empty, except for values that could not be
        written: they stay in memory and :class:`~chest.errors.UnwritableValuesError`
        lists them once everything else is done. Everything written before a
        flush returns is found again when the chest is reopened.
        """
        self.eviction.wait_behind()
        with self.lock:
            if self._guarded and not self.readonly and self._all_stored():
                # Closed before, and only read since: nothing to write, so
                # the writer's lock is not taken again (another chest may
                # hold it: close() after a read raised for it).
                for key in list(self.inmem):
                    self._forget_in_memory(key)
                return
            self._writable("flush")
            failures = self._write_all()
            if failures and self.store.retired_files and \
                    any(is_disk_full(e) for e in failures.values()):
                # Files of deleted and overwritten keys are kept until the
                # index no longer needs them. Those of deleted keys go now
                # (the journal has their deletion), then the index is
                # written, which frees the others, and the values are tried
                # again (also if there is no room for the index itself).
                self.store.free_deleted()
                try:
                    self.write_keys(failures)
                except IndexWriteError:
                    pass
                failures = self._write_all()
            if self._changed or self.store.unindexed_writes or \
                    not os.path.exists(self.store.index_path):
                self.write_keys(failures)
            if failures:
                raise UnwritableValuesError(self.path, failures, self.store.files)

    def _all_stored(self) -> bool:
        """Is everything already as a flush would leave it on disk: no key
        changed, nothing in flight, and every value in memory what its file
        or slot holds (lock held)?"""
        store = self.store
        return (not self._changed and not self.flight and not store.unindexed_writes
                and not self.ledger.unwritable and os.path.exists(store.index_path)
                and all(self.ledger.is_clean(k, v, store.files)
                        for k, v in list(self.inmem.items())))

    def _write_all(self) -> Dict[Hashable, BaseException]:
        """Write every value in memory or in flight; those that could not be
        written, with their errors (lock held)."""
        failures: Dict[Hashable, BaseException] = {}
        self.eviction.commit_packing(self.flight.take_queue())
        for key in list(self.flight.values):
            # Another thread is writing it; write it now, its commit will
            # see the key at a new version and back off.
            value, size, data = self.flight.take_back(key)
            self._keys[key] = next(self._versions)
            if data is not None and not self.codec.unchanged(bytes_token(data), value):
                value = self.codec.loads(data)
                size = nbytes(value)
            try:
                self._write(key, value, size)
            except Exception as e:
                self.eviction.keep_unwritable(key, value, size, e)
                failures[key] = e
        self._pack_all()
        for key in list(self.inmem):
            if key not in self.inmem:
                continue  # an on_overflow callback deleted (or moved) it meanwhile
            try:
                self.move_to_disk(key)
            except Exception as e:
                failures[key] = e
        return failures

    def write_keys(self, unwritten: Optional[Dict[Hashable, BaseException]] = None
                   ) -> None:
        """Write the index of the keys whose values are on disk.

        Raises :class:`~chest.errors.IndexWriteError` naming the index and
        what is not saved if it cannot be written (``unwritten``: the values
        that could not be written either).
        """
        with self.lock:
            self._writable("write the index")
            # Keys whose new value could not be written keep their flushed one.
            try:
                self.store.write_index(self._keys)
            except OSError as e:
                raise IndexWriteError(self.path, self.store.index_path, describe(e),
                                      unwritten or {}) from e
            self._changed = any(k not in self.store.files for k in self._keys)

    def drop(self) -> None:
        """Remove the chest's files, and its folder if nothing else is left in
        it (files the chest did not write stay); the chest is empty."""
        self.eviction.wait_behind(shrink=False)  # (nothing to write: all goes)
        with self.lock:
            if self.readonly or not self.session.in_owner:
                # (A forked child removed its parent's whole chest.)
                self._writable("drop the chest")
            if self.session.locked or os.path.isdir(self.store.path):
                # Also after close(): the lock is taken again, and refused if
                # another chest wrote the folder since, whose files would go.
                # (A folder removed since has nothing left to remove.)
                self._writable("drop the chest")
            else:
                self._left_as = (None, None)  # (it leaves nothing there)
            self.store.drop()
            self._release_writer_lock()
            self.memory.clear()
            self._keys.clear()
            self.flight.clear()
            self.ledger.clear()
            self._changed = False

    def update(  # (overwrite=: chest 0.2's API)
            self, other: Any = (), /, overwrite: bool = True, **kwargs: Any) -> None:
        """Add the contents of ``other`` (a mapping, pairs, or another chest).

        From another chest with the same file format, files are hard-linked
        (copied where links fail, e.g. across file systems) instead of being
        loaded and written again. With ``overwrite=False`` keys already here
        keep their value.
        """
        if self._guarded:
            self._writable("update")
        self._refuse_in_child("update")
        if isinstance(other, Chest) and other is not self:
            self._update_from_chest(other, overwrite)
        else:
            if hasattr(other, "items"):
                items = other.items()
            elif hasattr(other, "keys"):  # as dict.update: keys() and []
                items = ((key, other[key]) for key in other.keys())
            else:
                items = other
            for key, value in items:
                if overwrite or key not in self:
                    self[key] = value
        for key, value in kwargs.items():
            if overwrite or key not in self:
                self[key] = value

    def _update_from_chest(self, other: "Chest", overwrite: bool) -> None:
        same_format = self.codec.reads_files_of(other.codec)
        with other.lock:
            # (key, value) or (key, file to link), in the other chest's order.
            entries: List[Tuple[Hashable, Any, Optional[str]]] = []
            for key in other._keys:
                if key in other.inmem:
                    entries.append((key, other.inmem[key], None))
                elif key in other.flight:
                    entries.append((key, other.flight.values[key], None))
                elif same_format and key in other.store.files and \
                        key not in other.store.slots and key not in other.store.journaled:
                    entries.append((key, None, other.store.filename(key)))
                else:
                    entries.append((key, _MISSING, None))
        for key, value, source in entries:
            if not overwrite and key in self:
                continue
            if source is None:
                self[key] = other[key] if value is _MISSING else value
                continue
            try:
                self._link(key, source)
            except FileNotFoundError:
                self[key] = other[key]  # other changed it meanwhile

    def _link(self, key: Hashable, source: str) -> None:
        """Make ``key``'s file a link or copy of ``source`` (another chest's)."""
        with self.lock:
            self._writable("update")
            written = self.store.link_temp(source, self.store.prepare(key))
            try:
                # Replaces the key's file at once: if it fails (a full disk,
                # max_disk), the key keeps its value.
                self.store.commit(key, written)
            except BaseException:
                self.store.discard(written)
                raise
            self._drop_value(key, file=False)
            self.ledger.spilled_sizes.pop(key, None)
            self._keys[key] = next(self._versions)
            self._changed = True
            self._closed = False

    # -- closing --------------------------------------------------------------
    def close(self) -> None:
        """Flush a chest with a path; remove a temporary chest's folder.

        A chest with a path whose folder was removed or moved away is not
        written again. Values that cannot be written are reported with a
        warning. A closed chest can still be used; closing it again (or
        garbage collection) writes what changed since.
        """
        if not self.session.in_owner:
            return
        self.eviction.wait_behind()
        if self._closed:
            # Nothing changed since, but reading may have opened files again.
            with self.lock:
                self.store.close()
            return
        self._closed = True
        self.session.unwatch(self)
        if self.session.temporary:
            self.drop()
            return
        with self.lock:
            try:
                if os.path.isdir(self.store.path) and not self.readonly and (
                        self._changed or self.inmem or self.flight):
                    self.flush()
            except UnwritableValuesError as e:
                warnings.warn(str(e), ChestWarning, stacklevel=2)
            except FolderChangedError as e:
                # Closed before, then used (a value read and changed in
                # place), while another chest wrote the folder: nothing of
                # this one is written over it; what is lost is said.
                changed = [k for k, v in list(self.inmem.items())
                           if not self.ledger.is_clean(k, v, self.store.files)]
                if changed or self._changed:
                    warnings.warn(f"{e}. Not saved: the values of "
                                  f"{', '.join(map(repr, changed[:5]))}"
                                  f"{' and others' if len(changed) > 5 else ''}, "
                                  f"changed since it was closed", ChestWarning,
                                  stacklevel=2)
            except BaseException:
                self._closed = False  # not saved: closing again tries again
                raise
            finally:
                self.store.close()
                self._release_writer_lock()
            # (A flush after an earlier close takes the writer's lock again,
            # which opens the chest: closed again now, or its values that
            # cannot be written were flushed, and warned of, once more at
            # garbage collection and at exit.)
            self._closed = True
            self.session.unwatch(self)

    def _refuse_in_child(self, action: str) -> None:
        """:meth:`_writable`'s refusal in a child forked from C (uWSGI's
        prefork, say), which runs no at-fork hook to guard its chests: asked
        of the system (0.3 us) before a change reaches the disk. (There a
        set retired its parent's file of the key, or wrote a value over the
        budget into its parent's folder; a deletion or a set written
        through appended to its parent's journal.) A set that stays in
        memory does not ask: eviction and flush do."""
        if not self.session.in_owner:
            self._writable(action)

    def _is_guarded(self) -> bool:
        """Must a change first ask :meth:`_writable`?"""
        return self._guarded

    def _writable(self, action: str) -> None:
        """Refuse ``action`` on a read-only chest, or in a forked child (its
        parent's folder is not its own: written by both, the parent would
        read the child's values); after ``close()``, take the writer's lock
        again before writing. Under the chest's lock (a set calls it without:
        two threads setting keys of a closed chest both took the writer's lock
        again, and one was left held by no one, the chest unable to write)."""
        with self.lock:
            if self.readonly:
                raise ReadOnlyError(self.path, action)
            if not self.session.in_owner:
                raise ReadOnlyError(self.path, (
                    f"{action} in a forked child process (the chest belongs to "
                    f"process {self.session.owner_pid}: reopen it here with "
                    f"readonly=True, or make this process a chest of its own)"))
            if self._budget_of_worker is not None:
                self._adopt_worker_budget()
            if not self.session.locked and not self.session.temporary:
                if self._left_as is not None and any(self._left_as) and \
                        not os.path.isdir(self.store.path):
                    # Removed (or moved away) since it was closed: not made again
                    # empty, as if it had never held anything (close() does not
                    # write it again either).
                    raise FolderChangedError(self.path, action)
                self.session.lock()
                left_as, self._left_as = self._left_as, None
                if left_as is not None and self.store.disk_mark() != left_as:
                    # Another chest wrote the folder since this one let it go:
                    # this one's index would undo its changes (and drop() delete
                    # its files).
                    self._left_as = left_as
                    self.session.unlock()
                    raise FolderChangedError(self.path, action)
                self.session.watch(self)
                self._closed = False  # open again: close() must release the lock
            self._guarded = False

    def _adopt_worker_budget(self) -> None:
        """Take the budget of the dask.distributed worker whose folder this
        chest lives in, as dask's own SpillBuffer does: its ``memory_limit``
        times ``distributed.worker.memory.target`` (or ``.spill``). Keeps
        the default if there is no such worker, or it has no limit."""
        folder, self._budget_of_worker = self._budget_of_worker, None
        budget = None if folder is None else worker_budget(folder)
        if budget is not None:
            self._available_memory = budget

    def _release_writer_lock(self) -> None:
        if self.session.locked:
            # What this chest leaves on disk: taking the lock again, it
            # writes only if no other chest wrote the folder meanwhile.
            self._left_as = self.store.disk_mark()
            self.session.unlock()
            self._guarded = True

    def __enter__(self) -> "Chest":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            # Nothing can be raised from __del__; at interpreter shutdown the
            # modules used here may already be gone (the atexit hook below
            # closed every chest with a path before that).
            pass


def _still_in(keys: Iterable[Hashable], c: "Chest") -> Iterator[Hashable]:
    """``keys`` that are still in chest ``c`` when the loop reaches them.
    (It holds ``c``: a temporary chest nothing else holds, ``s - t`` looped
    over at once, must not be closed, emptied, under the loop.)"""
    current = c._keys
    for key in keys:
        if key in current:
            yield key
