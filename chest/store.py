"""The directory of a chest: which key is in which file, and the index.

The store maps each key to a file name relative to the chest's folder
(suggested by :mod:`chest.names`, kept unique there by its
:class:`~chest.names.NameTable`), writes values through a temporary file
renamed into place (primitives in :mod:`chest.files`) or into a slot of a
packed engine (:mod:`chest.engines`), records each write
and deletion in the journal (:mod:`chest.journal`) and keeps the ``.keys``
index (format in :mod:`chest.index`). On opening it replays the journal and
cleans what a crash left. It knows nothing of memory budgets.

Names
    A suggested name that is unsafe, too long (also as a whole path),
    already used by another key (also when it differs only in case), a
    folder of another key, or already a file the store does not own is
    replaced by a hashed one. Names are recorded in the index, so a chest
    reopens whatever function made them. The name of a deleted key stays
    reserved until the next index write.

Overwrites
    When a key's value changes in memory, its file is *retired*: renamed to
    a hidden ``.old.<name>`` beside it. A user reading the key's file never
    sees the old value, yet the flushed value survives a crash until the next
    index write deletes it.
"""
from __future__ import annotations

import builtins
import errno
import gc
import logging
import os
import shutil
import time
import warnings
from typing import (IO, Any, Callable, Dict, Hashable, Iterable, List, Optional,
                    Set, Tuple, Union)

from .engines import Engines, Packed
from .errors import (ChestWarning, DiskBudgetError, IndexFileError, ValueFileError,
                     describe)
from .files import (FILE_MODE, OLD_PREFIX, TMP_PREFIX, Written,
                    is_temp_name, make_folder, open_raw, read_whole, remove_quietly,
                    size_of_open_file, sync_dir, temp_name)
from .index import (INDEX_MAGIC, INDEX_NAME, Place, Slot, as_key, holds_a_chest,
                    is_valid_place, parse_index, write_index_file)
from .journal import (IN_JOURNAL, JOURNAL_NAME, Journal, UnpicklableKeyError,
                      read_journal_file_bytes, read_journal_records)
from .packed import ENGINES, PackedEngine, engine_files, open_engine
from .names import NameTable, fold, key_to_filename, safe_name

logger = logging.getLogger(__name__)

__all__ = ["Store", "key_to_filename", "INDEX_NAME", "write_index_file", "Written",
           "Packed", "Keep", "KEEP"]


class Keep:
    """``packed=``'s default: new small values go where the folder's index
    says they did; in a folder without one (a new chest), to ``new`` (an
    engine's name, or None: files)."""

    def __init__(self, new: Optional[str] = None) -> None:
        if new is not None and new not in ENGINES:
            raise ValueError(f"packed must be one of {sorted(ENGINES)} or None, "
                             f"not {new!r}")
        self.new = new

    def __repr__(self) -> str:
        return "KEEP" if self.new is None else f"Keep({self.new!r})"


#: ``Store(packed=KEEP)``: as the index says; files in a new folder.
KEEP = Keep()



class Store:
    """The files of one chest directory.

    Parameters
    ----------
    path : str
        The chest's folder; created if missing.
    dump, load : callables
        ``dump(value, file)`` and ``load(file)``.
    key_to_filename : callable
        Suggests a relative file name for a key.
    open : callable
        ``open(filename, mode=...)`` for value files.
    mode : {'b', 't'}
        Binary or text value files.
    unbuffered : bool
        Open value files without Python-level buffering (the default pickle
        dump/load stream large buffers and gain from it).
    durable : bool
        ``fsync`` every file and its folder, so data survives power loss.
    packed : str, optional
        The engine (``"sqlite"``, ``"lmdb"``) of values written with
        :meth:`pack_temp`; ``KEEP`` (the default) keeps the one the index
        names (``Keep(new)``: ``new`` in a folder without an index), None
        writes files only. Values already packed stay readable
        whatever this says.

    Examples
    --------
    >>> import pickle, tempfile
    >>> s = Store(tempfile.mkdtemp(), pickle.dump, pickle.load)
    >>> filename = s.prepare("x")
    >>> s.commit("x", s.write_temp(filename, [1, 2, 3]))
    >>> s.read("x")[0]
    [1, 2, 3]
    >>> s.write_index(["x"])
    >>> Store(s.path, pickle.dump, pickle.load).files
    {'x': ...}
    >>> s.drop()
    """

    def __init__(
        self,
        path: str,
        dump: Callable[[Any, IO[Any]], None],
        load: Callable[[IO[Any]], Any],
        key_to_filename: Callable[[Hashable], str] = key_to_filename,
        open: Callable[..., IO[Any]] = builtins.open,
        mode: str = "b",
        unbuffered: bool = False,
        durable: bool = False,
        journal: bool = False,
        readonly: bool = False,
        max_disk: Optional[int] = None,
        file_mode: int = FILE_MODE,
        packed: Union[str, None, Keep] = KEEP,
        packed_limit: int = 32 * 1024,
    ) -> None:
        if mode not in ("b", "t"):
            raise ValueError(f"mode must be 'b' (binary) or 't' (text), not {mode!r}")
        self.path = os.path.abspath(path)
        self.dump = dump
        self.load = load
        self.key_to_filename = key_to_filename
        self.open = open
        self.mode = mode
        self.unbuffered = unbuffered and mode == "b"
        #: Permission bits of the files the store makes (folders: folder_mode).
        self.file_mode = file_mode
        # Files made by a user's open (or with bits a umask may take) are
        # given their mode after they are made.
        self._chmod = file_mode != FILE_MODE or not self.unbuffered
        self.durable = durable
        self.readonly = readonly
        #: Most bytes the value files may take (None: no limit).
        self.max_disk = max_disk
        #: Bytes of the value files of the keys in ``files``.
        self.disk_usage = 0
                #: Files written or deleted since the index was written.
        self.unindexed_writes = False
        #: Bytes of values kept in the journal since the index was written.
        self.unindexed_bytes = 0
        #: The file name of each key (see :class:`~chest.names.NameTable`).
        self.table = NameTable(self.path, key_to_filename)
        #: key -> name relative to ``path`` ('/'-separated), for keys given one.
        self.names: Dict[Hashable, str] = self.table.names
        #: key -> size in bytes of its stored copy, for keys whose file or
        #: packed slot holds their value.
        self.files: Dict[Hashable, int] = {}
        #: key -> ``(engine, slot)``, for keys whose stored copy is packed
        #: (they have no name in ``names``).
        self.slots: Dict[Hashable, Slot] = {}
        #: key -> ``(offset, length)`` of its value in the journal, for keys
        #: written through (:meth:`write_through`) since the index was written.
        self.journaled: Dict[Hashable, Tuple[int, int]] = {}
        self._journal_values: Dict[Hashable, bytes] = {}  # a reader's copies
        #: Values of fewer bytes are packed when the journal is folded.
        self.packed_limit = packed_limit
        #: key -> place, as in the index on disk.
        self.indexed: Dict[Hashable, Place] = {}
        self._indexed_sizes: Dict[Hashable, int] = {}
        self._retired: Dict[str, str] = {}  # retired path -> live path
        self._known_dirs = {self.path}
        self._indexed_paths: Set[str] = set()  # full paths the index on disk names
        self._retired_at_index: Set[str] = set()  # retired names it lists
        self._retired_at_index_slots: Set[Slot] = set()  # retired slots it lists
        self._retired_slots: Set[Slot] = set()  # slots the index on disk names
        #: key -> its file name in a chest 0.2 index that this chest would
        #: not make (see _legacy_name): given a name of its own on opening.
        self._legacy_names: Dict[Hashable, str] = {}
        #: The packed engines of the folder and their slots' numbering.
        self.engines = Engines(self.path, readonly=readonly, durable=durable,
                               file_mode=file_mode)
        #: engine -> why it could not be read when the store opened.
        self.broken: Dict[str, str] = self.engines.broken
        self.packed: Optional[str] = None  # set below, once the index is read
        if not readonly:
            make_folder(self.path, file_mode)
            if durable:
                # The folder's own entry (the session made it): without this,
                # a power loss could take the new folder away, synced files
                # and all.
                try:
                    sync_dir(os.path.dirname(os.path.abspath(self.path)))
                except OSError:
                    pass  # (a folder this user may not read: as before)
        self._read_index()
        unindexed = not self._index_found and \
            not os.path.exists(os.path.join(self.path, JOURNAL_NAME))
        if not isinstance(packed, Keep):
            if packed is not None and packed not in ENGINES:
                raise ValueError(f"packed must be one of {sorted(ENGINES)} or None, "
                                 f"not {packed!r}")
            self.packed = packed
        elif not self._index_found:
            self.packed = packed.new  # (also over a journal left by a crash)
        self.journal = Journal(os.path.join(self.path, JOURNAL_NAME), durable,
                               file_mode) if journal and not readonly else None
        if self.journal is not None and not self._index_found:
            # Before a database first holds anything, so that a folder with
            # values in it always has an index or a journal (see
            # _refuse_values_without_index); once there is an index, it is
            # never removed.
            self.engines.before_first_open = self.journal.touch
        if unindexed:
            self._refuse_values_without_index()
        journaled = self._replay_journal() if journal else []
        replayed = bool(journaled)
        if not readonly:
            self._recover(journaled)
            self._journaled_keys = {key for key, _, _ in journaled}
            # Every slot the journal names, also one deleted since: a reader
            # that read the journal may look for it, so it is never handed
            # out again (it was, after a kill -9: the reader then got
            # another key's value).
            places: List[Any] = [place for _, place, _ in journaled]
            self._journal_slot_max: int = max(
                (p[1] for p in places if type(p) is tuple and len(p) == 2
                 and p[0] in ENGINES and type(p[1]) is int), default=-1)
            self._recover_slots()
            separated = self._separate_shared_files()
            renamed = self._adopt_legacy_names()
            if unindexed and journal:
                # A new chest (with a path) writes its index at once, naming
                # its engine: killed before its first flush, it reopened with
                # the engine of whoever reopened it (a List made with files
                # came back packed, a packed chest as files, and repair made
                # a file of each value). If it cannot (a full disk, a folder
                # it may not write), the chest opens all the same, as it
                # did: its values stay in memory, and the first flush says
                # why it cannot write.
                try:
                    self.write_index([])
                except OSError:
                    pass
            elif replayed or separated or renamed:
                # Make the recovery durable; this also empties the journal.
                try:
                    self.write_index(list(self.files))
                except OSError as e:
                    self.close()
                    raise OSError(
                        e.errno, f"cannot open the chest at {self.path} for writing: "
                                 f"the changes since its last flush, in its journal, "
                                 f"are saved in its index first, and that failed "
                                 f"({describe(e)}); nothing is lost: open it again "
                                 f"once there is room, or now with readonly=True",
                        self.index_path) from e
            for old in renamed:  # (the index written names them no more)
                try:
                    os.remove(old)
                except FileNotFoundError:
                    pass
        self.engines.opened()

    def _adopt_legacy_names(self) -> List[str]:
        """Give each key whose chest 0.2 file name this chest would not make
        (over 200 bytes, or starting with a dot) a name of its own: a hard
        link (or copy) now, the old name removed once an index that no longer
        names it is written (the caller does). The old names, absolute.
        (If that cannot be done, a full disk, opening for writing fails: an
        index names only names this chest makes, and a reader opens.)"""
        old_names = []
        for key, name in self._legacy_names.items():
            if self.names.get(key) != name:
                continue
            source = self.full_path(self.names.pop(key))
            self.commit(key, self.link_temp(source, self.prepare(key)))
            old_names.append(source)
        self._legacy_names.clear()
        return old_names

    def _separate_shared_files(self) -> bool:
        """Give every key its own file where a chest 0.2 index had two keys
        share one (its ``1`` and ``'1'`` had one name): the later keys get a
        hard link (or copy) of the file under a name of their own, so that
        setting one no longer changes, or loses, the other. True if any."""
        owners: Dict[str, Hashable] = {}
        shared = []
        for key, name in self.names.items():
            owner = owners.setdefault(fold(name), key)
            if owner is not key:
                shared.append(key)
        for key in shared:
            source = self.full_path(self.names.pop(key))
            self.commit(key, self.link_temp(source, self.prepare(key)))
        return bool(shared)

    # -- names ---------------------------------------------------------------
    def full_path(self, name: str) -> str:
        """Absolute path of a relative name."""
        return self.table.full_path(name)

    def filename(self, key: Hashable) -> str:
        """Absolute path of ``key``'s file, or of the one it would get."""
        return self.table.filename(key)

    def prepare(self, key: Hashable) -> str:
        """Give ``key`` a name if it has none yet; its absolute file path."""
        return self.table.prepare(key)

    # -- values --------------------------------------------------------------
    def _open(self, filename: str, mode: str) -> IO[Any]:
        if self.unbuffered:
            return open_raw(filename, mode + "b", self.file_mode)
        return self.open(filename, mode=mode + self.mode)

    def _ensure_dir(self, folder: str) -> None:
        if folder not in self._known_dirs:
            make_folder(folder, self.file_mode, top=self.path, durable=self.durable)
            self._known_dirs.add(folder)

    def write_temp(self, filename: str, value: Any) -> Written:
        """Write ``value`` to a temporary file beside ``filename``.

        Returns what :meth:`commit` needs. Nothing is left on disk if it
        fails. Safe to call without the chest's lock.
        """
        folder, base = os.path.split(filename)
        tmp = temp_name(folder, base)
        start = time.perf_counter()
        try:
            try:
                f = self._open(tmp, "w")
            except FileNotFoundError:
                # The folder is new, or was removed behind our back.
                self._known_dirs.discard(folder)
                self._ensure_dir(folder)
                f = self._open(tmp, "w")
            with f:
                self.dump(value, f)
                if self.durable:
                    f.flush()
                    os.fsync(f.fileno())
            if self._chmod:
                os.chmod(tmp, self.file_mode)
            size = os.stat(tmp).st_size
        except BaseException:
            remove_quietly(tmp)
            raise
        return Written(tmp, filename, size, time.perf_counter() - start)

    def write_bytes_temp(self, filename: str, data: bytes) -> Written:
        """As :meth:`write_temp`, for a value already serialised to ``data``:
        one ``write`` call."""
        folder, base = os.path.split(filename)
        tmp = temp_name(folder, base)
        start = time.perf_counter()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            try:
                fd = os.open(tmp, flags, self.file_mode)
            except FileNotFoundError:
                self._known_dirs.discard(folder)
                self._ensure_dir(folder)
                fd = os.open(tmp, flags, self.file_mode)
            try:
                if self.file_mode != FILE_MODE:
                    os.fchmod(fd, self.file_mode)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if self.durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            self.discard(tmp)
            raise
        return Written(tmp, filename, len(data), time.perf_counter() - start)

    def read_bytes(self, key: Hashable, filename: str) -> Tuple[bytes, float]:
        """The content of ``key``'s file: ``(data, seconds)``."""
        start = time.perf_counter()
        try:
            data = read_whole(filename, self.files.get(key, 0))
        except FileNotFoundError:
            old = self._flushed_copy(filename)
            if old is None:
                raise ValueFileError(key, filename, self._missing_why()) from None
            return self.read_bytes(key, old)
        except OSError as e:  # a folder now, under a file now, unreadable
            raise ValueFileError(key, filename, describe(e)) from e
        if self._replaced_since_opened(key, len(data)):
            old = self._flushed_copy_or_raise(key, filename, len(data))
            return self.read_bytes(key, old)
        return data, time.perf_counter() - start

    def _missing_why(self) -> str:
        """Why a key's file is missing, as far as this store can tell."""
        if self.readonly:
            return ("the file is missing: the writer may have deleted or moved the "
                    "key after this read-only chest was opened; reopen the chest to "
                    "read it as it is now")
        return "the file is missing"

    def _replaced_since_opened(self, key: Hashable, size: int) -> bool:
        """For a reader beside a writer: is the file not the one its index
        lists (another size)? The writer may have replaced it since."""
        return self.readonly and self.files.get(key, size) != size

    def _flushed_copy_or_raise(self, key: Hashable, filename: str, size: int) -> str:
        old = self._flushed_copy(filename)
        if old is not None and old != filename:
            return old
        raise ValueFileError(
            key, filename, f"the writer changed the file after this read-only chest "
            f"was opened ({size} bytes, its index says {self.files[key]}): reopen "
            f"the chest to read it as it is now")

    def _flushed_copy(self, filename: str) -> Optional[str]:
        """For a reader beside a writer: the retired file that still holds
        the flushed value of a file the writer has replaced since."""
        folder, base = os.path.split(filename)
        old = os.path.join(folder, OLD_PREFIX + base)
        return old if self.readonly and os.path.exists(old) else None

    def link_temp(self, source: str, filename: str) -> Written:
        """Hard-link (or, across file systems, copy) ``source`` beside ``filename``.

        Returns what :meth:`write_temp` returns.
        """
        folder, base = os.path.split(filename)
        self._ensure_dir(folder)
        tmp = temp_name(folder, base)
        start = time.perf_counter()
        try:
            os.link(source, tmp)
            if os.stat(tmp).st_mode & 0o777 != self.file_mode:
                # A link would share the other chest's permissions: copy.
                os.remove(tmp)
                raise OSError(errno.EPERM, "another file mode", source)
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise
            try:
                shutil.copyfile(source, tmp)
                os.chmod(tmp, self.file_mode)
                if self.durable:
                    with builtins.open(tmp, "rb") as f:
                        os.fsync(f.fileno())
            except BaseException:
                remove_quietly(tmp)
                raise
        seconds = time.perf_counter() - start
        return Written(tmp, filename, os.stat(tmp).st_size, seconds)

    def commit(self, key: Hashable, written: Union[Written, Packed],
               record: bool = True) -> None:
        """Make a value written under a temporary name (or in a new slot)
        ``key``'s stored copy.

        A file is renamed into place, replacing an older file of the key
        atomically: a reader or a crash sees the old value or the new one,
        never a mix or nothing. An older copy elsewhere (a slot, or a file
        when the new one is packed) is retired. The journal records it,
        unless ``record`` is False (a slot that only an index written next
        names: see :meth:`_fold_journal`).
        """
        old_size = self.files.get(key, 0)
        if self.max_disk is not None and \
                self.disk_usage - old_size + written.size > self.max_disk:
            raise DiskBudgetError(self.path, key,
                                  self.disk_usage - old_size + written.size,
                                  self.max_disk)
        place: Place = written.place if isinstance(written, Packed) else self.names[key]
        # The journal first: if it cannot be written nothing has changed; a
        # record whose rename then fails points at the key's older file or
        # at none, and replay handles both.
        if self.journal is not None and record:
            self.journal.append(key, place, written.size)
        if isinstance(written, Written):
            os.replace(written.tmp, written.filename)
            self.journaled.pop(key, None)
            old_slot = self.slots.pop(key, None)
            if old_slot is not None:
                self._retire_slot(key, old_slot)
        else:
            if key in self.files:
                self._retire_copy(key)
            self.slots[key] = written.place
            self.table.release(key)
        self.unindexed_writes = True
        self.files[key] = written.size
        self.disk_usage += written.size - old_size
        if self.durable and isinstance(written, Written):
            self._sync_dir(os.path.dirname(written.filename))

    def discard(self, written: Union[Written, Packed, str]) -> None:
        """Remove a value written that will not be committed (or a file)."""
        if isinstance(written, Packed):
            engine_name, slot = written.place
            try:
                self.engine(engine_name).delete([slot])
            except Exception:
                pass  # cleaning up must not hide the error being handled
        else:
            remove_quietly(written if isinstance(written, str) else written.tmp)

    def read(self, key: Hashable,
             filename: Optional[str] = None) -> Tuple[Any, int, float]:
        """Load ``key``'s value: ``(value, bytes read, seconds)``.

        Raises :class:`~chest.errors.ValueFileError` naming the key and the
        file when the file is missing or cannot be loaded.
        """
        if filename is None:
            filename = self.full_path(self.names[key])
        start = time.perf_counter()
        try:
            with self._open(filename, "r") as f:
                size = size_of_open_file(f) if self.readonly else None
                replaced = size is not None and self._replaced_since_opened(key, size)
                if not replaced:
                    value = self.load(f)
        except FileNotFoundError:
            old = self._flushed_copy(filename)
            if old is None:
                raise ValueFileError(key, filename, self._missing_why()) from None
            return self.read(key, old)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as e:
            raise ValueFileError(key, filename, describe(e)) from e
        if replaced:
            assert size is not None  # (replaced implies a size)
            return self.read(key, self._flushed_copy_or_raise(key, filename, size))
        return value, self.files.get(key, 0), time.perf_counter() - start

    def retire(self, key: Hashable) -> None:
        """Take ``key``'s stored copy out of the way; its value is outdated.

        A file (or slot) the index on disk refers to is kept, under a hidden
        name, until the next :meth:`write_index`, so a crash before then
        loses nothing.
        """
        if key in self.files:
            self._retire_copy(key)
            self.disk_usage -= self.files.pop(key)

    def _retire_copy(self, key: Hashable) -> None:
        if self.journaled.pop(key, None) is not None:
            return  # the journal keeps it until the next index write
        place = self.slots.pop(key, None)
        if place is not None:
            self._retire_slot(key, place)
        else:
            self._retire_path(self.full_path(self.names[key]))

    def _retire_path(self, filename: str) -> None:
        folder, base = os.path.split(filename)
        old = os.path.join(folder, OLD_PREFIX + base)
        if old in self._retired or filename not in self._indexed_paths:
            # Not what the index on disk refers to, or its flushed value is
            # already kept aside: no need to keep this one.
            try:
                os.remove(filename)
            except FileNotFoundError:
                pass
            return
        try:
            os.replace(filename, old)
        except FileNotFoundError:
            return
        self._retired[old] = filename

    def free_deleted(self) -> int:
        """Remove the retired files of deleted keys now, not at the next
        index write: on a full disk, room for the values (and the index)
        that are waiting. Safe with a journal: it recorded each deletion,
        so a crash before the index is written drops those keys. How many."""
        if self.journal is None:
            return 0
        deleted = {self.full_path(name) for key, name in self.table.released.items()
                   if key not in self.names and key not in self.slots}
        freed = [old for old, live in self._retired.items() if live in deleted]
        for old in freed:
            self.discard(old)
            del self._retired[old]
        return len(freed)

    @property
    def retired_files(self) -> int:
        """How many retired files wait for the next :meth:`write_index`."""
        return len(self._retired)

    def forget(self, key: Hashable) -> None:
        """Drop ``key``: retire its stored copy, keep its name reserved until
        the next index write (a crash must not pair the old index with a new
        file)."""
        if (key in self.names or key in self.slots or key in self.journaled) and \
                self.journal is not None:
            try:
                self.journal.append(key, None, 0)  # first: if it fails, no change
            except UnpicklableKeyError:
                # Its value's write failed on the same record (its file, if
                # written, was discarded): nothing on disk names the key.
                pass
        self.retire(key)
        self.table.release(key)

    # -- values kept in the journal (write-through) ----------------------------
    def write_through(self, key: Hashable, data: bytes) -> None:
        """Make ``data`` (what ``dump`` wrote) ``key``'s stored copy with one
        append to the journal: in the operating system's hands (on the disk,
        with ``durable``) when this returns. The next :meth:`write_index`
        moves it to a file or a slot. If it raises, nothing has changed.
        """
        journal = self.journal
        if journal is None:
            raise ValueError(f"the chest at {self.path} keeps no journal")
        size = len(data)
        old_size = self.files.get(key, 0)
        if self.max_disk is not None and \
                self.disk_usage - old_size + size > self.max_disk:
            raise DiskBudgetError(self.path, key,
                                  self.disk_usage - old_size + size, self.max_disk)
        offset = journal.append(key, None, size, data)
        if key not in self.journaled and key in self.files:  # a file or a slot
            self._retire_copy(key)
            self.table.release(key)
        self.journaled[key] = (offset, size)
        self.unindexed_bytes += size
        self.files[key] = size
        self.disk_usage += size - old_size
        self.unindexed_writes = True

    def place(self, key: Hashable) -> Optional[Tuple[Any, ...]]:
        """Where ``key``'s value is if not in a file of its own: its slot
        ``(engine, number)``, or ``(IN_JOURNAL, offset, length)`` for a
        value kept in the journal; None for a file (or no stored copy)."""
        slot = self.slots.get(key)
        if slot is not None:
            return slot
        journaled = self.journaled.get(key)
        return None if journaled is None else (IN_JOURNAL, *journaled)

    def read_journaled(self, key: Hashable, place: Tuple[int, int]) -> Tuple[bytes, float]:
        """The bytes of a value kept in the journal at ``place`` (offset,
        length): ``(data, seconds)``."""
        start = time.perf_counter()
        if self.journal is None:  # a reader: what the journal held when it opened
            data = self._journal_values.get(key)
            if data is None or len(data) != place[1]:
                raise ValueFileError(key, os.path.join(self.path, JOURNAL_NAME),
                                     "not in the journal as this read-only chest "
                                     "read it; reopen the chest")
            return data, time.perf_counter() - start
        try:
            data = self.journal.read(*place)
        except Exception as e:
            raise ValueFileError(key, os.path.join(self.path, JOURNAL_NAME),
                                 describe(e)) from e
        return data, time.perf_counter() - start

    def _fold_journal(self) -> None:
        """Move the values kept in the journal to slots (small ones, if
        packed) or files, each recorded, so the index can name them."""
        if not self.journaled or self.journal is None:
            return
        items = [(key, self.journal.read(*place)) for key, place in self.journaled.items()]
        packing = self.packed is not None and self.packed not in self.broken
        small = [(k, d) for k, d in items if packing and len(d) < self.packed_limit]
        if small:
            # Not recorded in the journal: until the index naming them is
            # written, the journal still holds these values themselves (it
            # is emptied only after), so a crash before then replays them
            # from there and removes the slots as no key's. (Their records
            # were a quarter of closing a List of 10,000 items written
            # through, just before the index that replaces them.)
            for (key, _), written in zip(small, self.pack_many([d for _, d in small])):
                self.commit(key, written, record=False)
        for key, data in items:
            if key in self.journaled:  # not packed above
                self.commit(key, self.write_bytes_temp(self.prepare(key), data))

    # -- packed values ---------------------------------------------------------
    def engine(self, name: str) -> PackedEngine:
        """The packed engine ``name`` of this folder, opened on first use."""
        return self.engines.engine(name)

    def packed_path(self, name: str) -> str:
        """The file of packed engine ``name`` in the folder."""
        return self.engines.path_of(name)

    def pack_temp(self, data: bytes) -> Packed:
        """Write ``data`` to a new slot of the packed engine, committed but
        named by no record yet (reopening after a crash removes it).

        Returns what :meth:`commit` needs. Safe to call without the chest's
        lock.
        """
        assert self.packed is not None, "no packed engine"
        return self.engines.put(self.packed, data)

    def pack_many(self, datas: List[bytes]) -> List[Packed]:
        """As :meth:`pack_temp` for many values, in one commit of the engine."""
        assert self.packed is not None, "no packed engine"
        return self.engines.put_many(self.packed, datas)

    def read_packed(self, key: Hashable, place: Slot) -> Tuple[bytes, float]:
        """The bytes of ``key``'s packed value in ``place``: ``(data, seconds)``.
        Safe to call without the chest's lock."""
        return self.engines.read(key, place)

    def _retire_slot(self, key: Hashable, place: Slot) -> None:
        """An older copy in a slot: kept until the next index write if the
        index on disk names it (a crash must find the flushed value), else
        removed now."""
        if self.indexed.get(key) == place:
            self._retired_slots.add(place)
        elif not self.engines.delete(place[0], [place[1]]):
            self._retired_slots.add(place)  # the next index write tries again

    def _refuse_values_without_index(self) -> None:
        """A folder with neither an index nor a journal, but a packed
        database holding values: its index was lost (the journal is made
        before a database is first written, and removed only once an index
        is written). Opening it as a new chest would remove those values as
        written by no key: an IndexFileError instead, naming both files."""
        for name in ENGINES:
            db = self.packed_path(name)
            if not os.path.exists(db):
                continue
            try:
                # Opened apart and read-only: the store's own engine would
                # start a journal, and that would hide the loss next time.
                engine = open_engine(name, self.path, readonly=True)
                try:
                    count = sum(1 for _ in engine.slots(0))
                finally:
                    engine.close()
            except OSError as e:
                self.broken.setdefault(name, describe(e))
                continue
            if count:
                raise IndexFileError(
                    self.index_path,
                    f"missing, but {db} holds {count} values whose keys only the "
                    f"index knew; restore {INDEX_NAME}, or move the database aside "
                    f"to use the folder as a new chest")

    def _recover_slots(self) -> None:
        """Remove the slots no key names: written since the index by a
        process that died before it recorded them, or retired by the last
        index write and not yet removed; number new slots after all."""
        # Slots the journal gave keys: the only live ones numbered from the
        # mark on (the index names slots below it only).
        live = {self.slots.get(key) for key in self._journaled_keys}
        replaced = [place for place in
                    (self.indexed.get(key) for key in self._journaled_keys)
                    if isinstance(place, tuple) and place not in live]
        highest = max([self.engines.mark - 1, self._journal_slot_max,
                       *(place[1] for place in live if place is not None)])
        for name in ENGINES:
            if not self.engines.exists(name):
                continue
            stored = self.engines.written_since_mark(name)
            orphans = [n for n in stored if (name, n) not in live]
            # Retired by the last index write, and not given to a key since.
            orphans += [n for engine, n in self._retired_at_index_slots
                        if engine == name and (name, n) not in live]
            # The indexed slots of keys the journal set again or deleted.
            orphans += [old[1] for old in replaced if old[0] == name]
            try:
                highest = max([highest, self.engine(name).last_slot(), *stored])
                if orphans:
                    self.engine(name).delete(orphans)
            except OSError as e:
                self.broken.setdefault(name, describe(e))
        self.engines.next_slot = highest + 1

    # -- the index -----------------------------------------------------------
    @property
    def journal_path(self) -> str:
        """Absolute path of the journal."""
        return os.path.join(self.path, JOURNAL_NAME)

    @property
    def index_path(self) -> str:
        """Absolute path of the ``.keys`` index."""
        return os.path.join(self.path, INDEX_NAME)

    def disk_mark(self) -> Tuple[Optional[Tuple[int, ...]], ...]:
        """The index and the journal as they are on disk now (inode, size,
        times of each; None for one not there, or an empty journal, which
        a read opens): another writer's change to the folder (a flush, a
        close, a value spilled) changes it."""
        marks: List[Optional[Tuple[int, ...]]] = []
        for filename in (self.index_path, self.journal_path):
            try:
                info = os.stat(filename)
            except FileNotFoundError:
                marks.append(None)
            else:
                marks.append(None if info.st_size == 0 and filename == self.journal_path
                              else (info.st_ino, info.st_size, info.st_mtime_ns,
                                    info.st_ctime_ns))
        return tuple(marks)

    def write_index(self, keys: Iterable[Hashable]) -> None:
        """Atomically write the index of ``keys``, then delete retired files
        and free the names of forgotten keys.

        A key without a file keeps its entry of the previous index, and its
        retired file is kept: its new value could not be written, and the
        flushed one must survive.
        """
        self._fold_journal()  # first: the index names files and slots only
        kept: Set[Any] = set()
        files, slots, names = self.files, self.slots, self.names
        keys = list(keys)
        if all(key in files for key in keys):  # the common case, in C
            sizes = [files[key] for key in keys]
            places = [slots[key] if key in slots else names[key] for key in keys]
        else:
            stored = [key for key in keys if key in files or key in self.indexed]
            keys, places, sizes = stored, [], []
            for key in keys:
                size = files.get(key)
                if size is not None:
                    places.append(slots[key] if key in slots else names[key])
                    sizes.append(size)
                    continue
                place = self.indexed[key]
                places.append(place)
                sizes.append(self._indexed_sizes.get(key, 0))
                kept.add(place if isinstance(place, tuple) else self.full_path(place))
        # The retired files about to go are listed in the index: if the
        # process dies before they are removed, reopening knows them as ours.
        leaving = [old for old, live in self._retired.items() if live not in kept]
        leaving_slots = self._retired_slots - kept
        mark = self.engines.next_mark()
        write_index_file(self.path, durable=self.durable,
                         retired=[self.table.relative(old) for old in leaving],
                         file_mode=self.file_mode, packed=self.packed,
                         next_slot=mark, retired_slots=leaving_slots,
                         columns=(keys, places, sizes))
        self.engines.mark = mark
        self._remember_index(keys, places, sizes)
        for old in leaving:
            self.discard(old)
            del self._retired[old]
        for engine_name in {name for name, _ in leaving_slots}:
            if not self.engines.delete(engine_name, [slot for name, slot in leaving_slots
                                                    if name == engine_name]):
                leaving_slots = {place for place in leaving_slots
                                 if place[0] != engine_name}
        self._retired_slots -= leaving_slots
        self.table.settle()
        self._remove_empty_folders()
        if self.journal is not None:
            self.journal.clear()
        self.unindexed_writes = False
        self.unindexed_bytes = 0

    def _remember_index(self, keys: List[Hashable], places: List[Place],
                        sizes: List[int]) -> None:
        """What the index on disk now says (dicts made in C)."""
        self.indexed = dict(zip(keys, places))
        self._indexed_sizes = dict(zip(keys, sizes))
        self._indexed_paths = {self.full_path(p) for p in places
                               if not isinstance(p, tuple)} \
            if self.names or self.table.released else set()

    def _remove_empty_folders(self) -> None:
        """Remove the folders of tuple keys that are all gone, deepest first,
        so that a chest used as a cache does not pile up empty folders."""
        for folder in self.table.emptied():
            path = self.full_path(folder)
            try:
                os.rmdir(path)  # fails if a user's file (or anything) is left
            except OSError:
                continue
            self._known_dirs.discard(path)

    def _read_index(self) -> None:
        # Loading makes a few objects per key and keeps them all: the
        # garbage collector would walk every one of them again and again
        # (a million keys: 3.6 s to reopen with it, 1.7 s without).
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._read_index_file()
        finally:
            if collecting:
                gc.enable()

    def _read_index_file(self) -> None:
        filename = self.index_path
        self._index_found = False
        self._retired_at_index = set()
        self._indexed_paths = set()
        try:
            with builtins.open(filename, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            self._indexed_paths = set()
            return
        self._index_found = True
        if data.startswith(INDEX_MAGIC):
            content = parse_index(filename, data[len(INDEX_MAGIC):])
            keys, places, sizes = content.keys, content.places, content.sizes
            self._retired_at_index = content.retired
            self.packed = content.packed
            self.engines.mark = content.next_slot
            self._retired_at_index_slots = content.retired_slots
        else:
            entries = self._parse_legacy_index(filename)
            keys = [key for key, _, _ in entries]
            places = [place for _, place, _ in entries]
            sizes = [size for _, _, size in entries]
        self.files = dict(zip(keys, sizes))
        kinds = set(map(type, places))  # (in C; a packed chest has slots only)
        if kinds == {tuple}:
            self.slots = dict(zip(keys, places))  # type: ignore[arg-type]
        elif tuple in kinds:
            self.slots = {key: place for key, place in zip(keys, places)
                          if isinstance(place, tuple)}
        if kinds - {tuple}:
            for key, place in zip(keys, places):
                if not isinstance(place, tuple):
                    self.table.claim(key, place)
        self.disk_usage = sum(sizes)
        self._remember_index(keys, places, sizes)

    def _parse_legacy_index(self, filename: str) -> List[Tuple[Hashable, str, int]]:
        """Read the ``.keys`` of a chest made by chest 0.2.x (the user's dump)."""
        try:
            with self.open(filename, mode="r" + self.mode) as f:
                items = self.load(f)
            pairs = [(as_key(k), name) for k, name in items]
        except Exception as e:
            raise IndexFileError(
                filename, f"not a chest index ({type(e).__name__}: {e})") from e
        entries = []
        for key, name in pairs:
            if not isinstance(name, str):
                raise IndexFileError(filename, f"bad file name {name!r} of key {key!r}")
            if os.path.isabs(name):
                name = os.path.relpath(name, self.path)
            safe = safe_name(name) or self._legacy_name(key, name, filename)
            if safe is None:
                continue  # (warned: left out, its file left where it is)
            try:
                size = os.stat(self.full_path(safe)).st_size
            except FileNotFoundError:
                continue  # chest 0.2 listed keys that were never written
            entries.append((key, safe, size))
        return entries

    def _legacy_name(self, key: Hashable, name: str, filename: str) -> Optional[str]:
        """A chest 0.2 file name this chest would not make, as it can be
        kept: ``./x`` and ``d//x`` as ``x`` and ``d/x``; a name inside the
        folder over 200 bytes (chest 0.2 named an identifier key by itself)
        or starting with a dot, kept to be given a name of its own on
        opening; None, with a warning, for a name outside the folder or one
        of this chest's own (the key is left out, its file left alone: one
        such name no longer refuses the whole chest)."""
        parts = [p for p in name.replace(os.sep, "/").split("/") if p not in ("", ".")]
        joined = "/".join(parts)
        if parts and safe_name(joined) == joined:
            return joined
        if parts and all(p != ".." and "\0" not in p and "\\" not in p
                         and len(p.encode("utf-8", "surrogatepass")) <= 255
                         and not p.startswith((TMP_PREFIX, OLD_PREFIX, ".packed."))
                         and p not in (INDEX_NAME, JOURNAL_NAME) for p in parts):
            self._legacy_names[key] = joined
            return joined
        warnings.warn(f"chest at {self.path}: its chest 0.2 index {filename} names "
                      f"the file {name!r} for key {key!r}, outside the folder or one "
                      f"of the chest's own: the key is left out (its file, if any, is "
                      f"left where it is)", ChestWarning, stacklevel=2)
        return None

    def _replay_journal(self) -> List[Tuple[Hashable, Optional[str], int]]:
        """Add the keys written (and drop those deleted) since the index was
        written, as the journal recorded them; the records."""
        filename = os.path.join(self.path, JOURNAL_NAME)
        # One read for the records and the values in them: the writer
        # empties the journal (and refills it) as it flushes, and a reader
        # that read the file again for the values kept bytes of another
        # record (another key's value, when the lengths matched).
        blob = read_journal_file_bytes(filename)
        records, end = read_journal_records(blob)
        if end < len(blob) and not self.readonly:
            # A record torn by a crash (or damaged) ends what replay reads:
            # cut off, or every record appended after it would be lost at
            # the next crash (a journal with no whole record is not folded
            # into the index, which would have emptied it).
            self._cut_journal(filename, end)
        if self.readonly and any(type(p) is tuple and p[0] == IN_JOURNAL
                                 for _, p, _ in records):
            # A reader keeps the values the journal holds now: an offset
            # read later could hold another key's value.
            for key, place, _ in records:
                if type(place) is tuple and place[0] == IN_JOURNAL:
                    self._journal_values[key] = blob[place[1]:place[1] + place[2]]
        # Where each key is in the chest's order: a key set after the index
        # goes where it first appears, also if that record's file is gone
        # since (overwritten, then written again later).
        order: Dict[Hashable, None] = dict.fromkeys(self.files) if records else {}
        for key, place, _ in records:
            if place is not None and not is_valid_place(place) and not (
                    type(place) is tuple and place[0] == IN_JOURNAL):
                continue  # not a place this store writes: ignore the record
            if place is None:
                order.pop(key, None)
            elif key not in order:
                order[key] = None
            old = self.names.get(key)
            if place is None:
                self.table.drop(key)
                self.slots.pop(key, None)
                self.journaled.pop(key, None)
                self.disk_usage -= self.files.pop(key, 0)
                continue
            if isinstance(place, tuple) and len(place) == 3 and place[0] == IN_JOURNAL:
                self.table.drop(key)
                self.slots.pop(key, None)
                self.journaled[key] = (place[1], place[2])
                size = place[2]
            elif isinstance(place, tuple):
                size = self.engines.size(place)
                if size is None:
                    continue  # written, then retired and removed: never flushed
                self.table.drop(key)
                self.journaled.pop(key, None)
                self.slots[key] = place
            else:
                try:
                    size = os.stat(self.full_path(place)).st_size
                except FileNotFoundError:
                    continue  # written, then deleted or overwritten: never flushed
                if old is not None and old != place:
                    self.table.unclaim(old)
                self.slots.pop(key, None)
                self.journaled.pop(key, None)
                self.table.claim(key, place)
            self.disk_usage += size - self.files.get(key, 0)
            self.files[key] = size
        if records and list(self.files) != [k for k in order if k in self.files]:
            self.files = {k: self.files[k] for k in order if k in self.files}
        return records

    def _cut_journal(self, filename: str, end: int) -> None:
        """Cut the journal's file to its first ``end`` bytes (synced with
        ``durable``: a torn record must not come back before later ones)."""
        if self.journal is not None:
            self.journal.close()  # (opened again: where it ends is asked then)
        fd = os.open(filename, os.O_WRONLY)
        try:
            os.ftruncate(fd, end)
            if self.durable:
                os.fsync(fd)
        finally:
            os.close(fd)

    def _recover(self, journaled: List[Tuple[Hashable, Optional[str], int]]) -> None:
        """Clean what a crash may have left: temporary files, retired files
        whose key's file is missing (put back), or no longer needed.

        Only what this chest wrote is touched: a retired ``.old.<name>`` of
        a name its index or journal gives (or that the index lists as about
        to be removed), a ``.tmp.<name>.<12 hex digits>``
        as :func:`_temp_name` makes them. Folders holding a chest of their
        own (an index or a journal) are not entered, and a user's files are
        left alone.
        """
        known: Optional[Set[Any]] = None  # made at the first .old. file seen
        live_paths: Dict[str, Hashable] = {}
        for folder, dirs, bases in os.walk(self.path):
            dirs[:] = [d for d in dirs if not holds_a_chest(os.path.join(folder, d))]
            rel = os.path.relpath(folder, self.path)
            prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for base in bases:
                if base.startswith(TMP_PREFIX) and is_temp_name(base):
                    self.discard(os.path.join(folder, base))
                    continue
                if not base.startswith(OLD_PREFIX):
                    continue
                if known is None:
                    known = set(self.indexed.values())
                    known.update(name for _, name, _ in journaled if name is not None)
                    known.update(self.names.values())
                    live_paths = {self.full_path(name): key
                                  for key, name in self.names.items() if key in self.files}
                if prefix + base[len(OLD_PREFIX):] in known or \
                        prefix + base in self._retired_at_index:
                    full = os.path.join(folder, base)
                    live = os.path.join(folder, base[len(OLD_PREFIX):])
                    if live in live_paths and not os.path.exists(live):
                        os.replace(full, live)
                        # Its size, not the index's: the copy put back may be
                        # a later one (a file update() linked over the
                        # flushed one, retired by a set before the crash).
                        key = live_paths[live]
                        size = os.stat(live).st_size
                        self.disk_usage += size - self.files[key]
                        self.files[key] = size
                    else:
                        self.discard(full)
        # A file the index names that the journal moved its key away from
        # (to the journal, a slot, another name) or deleted: retired, as it
        # would have been had the process not died between the journal's
        # record and the retiring (it was left for good, an orphan).
        named = set(self.names.values())
        for place in set(self.indexed.values()):
            if isinstance(place, str) and place not in named:
                self._retire_path(self.full_path(place))

    def _sync_dir(self, folder: str) -> None:
        sync_dir(folder)

    def drop(self) -> None:
        """Remove the chest's files and the folders it made, then its folder
        if nothing else is left in it; forget every key. Files it did not
        write stay (``rmtree`` of a chest at ``"."`` removed the user's)."""
        self.close()
        self._remove_own_files()
        self.table.clear()
        self.files.clear()
        self.slots.clear()
        self.journaled.clear()
        self._retired_slots.clear()
        self.indexed.clear()
        self._indexed_paths = set()
        self._retired.clear()
        self._known_dirs.clear()
        self.disk_usage = 0
        self.close()

    def _remove_own_files(self) -> None:
        """What :meth:`drop` removes: value files by their names, the index,
        the journal, the packed databases, leftovers of the chest's writes,
        and folders left empty; not a folder holding another chest."""
        own = {self.full_path(name) for name in self.names.values()}
        own.update(self._retired)
        tops = {INDEX_NAME, JOURNAL_NAME, INDEX_NAME + ".damaged"}
        for engine in ENGINES:
            tops.update(engine_files(engine))
        folders = []
        for folder, dirs, files in os.walk(self.path):
            dirs[:] = [d for d in dirs if not holds_a_chest(os.path.join(folder, d))]
            folders.append(folder)
            for name in files:
                path = os.path.join(folder, name)
                if path in own or is_temp_name(name) or name.startswith(OLD_PREFIX) \
                        or (folder == self.path and (name in tops or ".damaged" in name
                                                     and name.startswith("."))):
                    remove_quietly(path)
        for folder in reversed(folders):  # (the deepest first; the chest's last)
            try:
                os.rmdir(folder)  # only if empty: a user's files stay
            except OSError:
                pass

    def close(self) -> None:
        """Release the journal's file descriptor and the packed engines
        (opened again if the store is used again)."""
        if self.journal is not None:
            self.journal.close()
        self.engines.close()


