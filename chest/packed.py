"""Packed storage: many small values in one embedded database in the folder.

A packed engine is a table of *slots* (integers the store hands out, never
reused) to bytes: exactly what ``dump`` wrote, so ``pickle.loads`` of a row
or record returns the value. Each :meth:`~PackedEngine.put` is committed
before it returns: it survives ``kill -9`` of the process (and, with
``durable=True``, a power loss), and a reader in another process sees whole
values only. Which key a slot holds is the store's business (its index and
journal); a slot the store does not name after a crash is removed when the
chest is reopened, as a temporary file would be.

Engines, measured here (one run, pickled 66-byte dicts, one commit per
write, Python + engine only, write / random read): SQLite (stdlib
``sqlite3``, WAL, ``synchronous=NORMAL``) 21.9 / 5.6 us, LMDB
(``sync=False``) 5.2 / 1.8 us, one file per value 46 / 6.6 us.

- :class:`SQLiteEngine` (``packed="sqlite"``): ``.packed.sqlite3`` in the
  folder, WAL mode; ``durable=True`` sets ``synchronous=FULL``.
- :class:`LMDBEngine` (``packed="lmdb"``, needs the ``lmdb`` package, the
  ``chest[lmdb]`` extra): ``.packed.lmdb``; ``durable=True`` syncs each
  commit.

Examples
--------
>>> import tempfile
>>> engine = open_engine("sqlite", tempfile.mkdtemp())
>>> engine.put(1, b"one")
>>> engine.put(2, b"two")
>>> engine.get(1), engine.get(3)
(b'one', None)
>>> engine.delete([1])
>>> sorted(engine.slots())
[(2, 3)]
>>> engine.close()
"""
from __future__ import annotations

import errno
import os
import sqlite3
import threading
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple, Type

from .files import FILE_MODE
from .lmdbfile import missing_page

try:  # an extra: chest[lmdb]
    import lmdb
except ImportError:  # pragma: no cover - depends on the installation
    lmdb = None  # type: ignore[assignment]

__all__ = ["PackedEngine", "SQLiteEngine", "LMDBEngine", "ENGINES", "open_engine",
           "engine_files"]


class PackedEngine:
    """Slots to bytes in one file of a chest's folder (the contract).

    Every method is safe to call from several threads at once; ``put`` and
    ``delete`` are committed when they return. The engine's own errors come
    out as ``OSError`` naming its file (``ENOSPC`` when the disk is full).
    """

    #: What ``Chest(packed=...)`` calls the engine; also its place in the index.
    name = ""
    #: The engine's file in the chest's folder.
    filename = ""
    #: Suffixes of the files the engine keeps beside it (locks, logs).
    companions: Tuple[str, ...] = ()
    #: The engine's file (absolute).
    path: str

    def __init__(self, folder: str, readonly: bool = False, durable: bool = False,
                 file_mode: int = FILE_MODE) -> None:
        """Open (or, unless ``readonly``, create) the engine's file in
        ``folder``; ``durable``: sync every commit to the disk."""
        raise NotImplementedError

    def put(self, slot: int, data: bytes) -> None:
        """Store ``data`` under ``slot`` (a new slot), committed."""
        raise NotImplementedError

    def put_many(self, items: Iterable[Tuple[int, bytes]]) -> None:
        """Store every ``(slot, data)`` in one commit (a commit costs more
        than a small put: ~20 us with SQLite here)."""
        raise NotImplementedError

    def get(self, slot: int) -> Optional[bytes]:
        """The bytes of ``slot``; None if there is no such slot."""
        raise NotImplementedError

    def delete(self, slots: Iterable[int]) -> None:
        """Remove ``slots`` (missing ones are ignored), in one commit."""
        raise NotImplementedError

    def slots(self, start: int = 0) -> Iterator[Tuple[int, int]]:
        """Every ``(slot, size in bytes)`` from slot ``start`` on, in slot order."""
        raise NotImplementedError

    def last_slot(self) -> int:
        """The highest slot there is; 0 if there is none."""
        raise NotImplementedError

    def close(self) -> None:
        """Let go of the file (idempotent)."""
        raise NotImplementedError


#: The SQLite connections a forked child inherited from its parent: never
#: used there (SQLite forbids carrying one across fork()), nor closed (that
#: could checkpoint or remove the parent's log); only kept from being
#: freed. The child opens its own, read-only. (LMDB environments: see
#: _Environments._here.)
_INHERITED: List[Any] = []


#: SQLite's page cache, outside the chest's budget: 8 MiB (SQLite's default
#: is 2 MiB; diskcache sets 32 MiB and a 64 MiB memory map). A random read
#: of a small value in 100,000 took 7.5 us with it, 9 with the default.
#: (No memory map: a database file cut short under it would kill the process
#: with SIGBUS, where a read now raises an error naming the file.)
CACHE_PRAGMA = "PRAGMA cache_size=-8192"

#: The write-ahead log's size after a checkpoint (``journal_size_limit``),
#: and the most it keeps after a large commit (see SQLiteEngine._cut_log).
WAL_LIMIT = 4 * 2**20
#: How long a commit waits for a lock (the sqlite3 module's default, 5 s).
BUSY_TIMEOUT_MS = 5000


def as_os_error(error: BaseException, path: str) -> OSError:
    """An engine's error as an ``OSError`` naming the engine's file: ENOSPC
    for a full disk (so the chest keeps the value in memory and says so),
    EIO otherwise."""
    if isinstance(error, OSError):
        return error
    text = str(error)
    full = any(word in text.lower() for word in ("full", "no space", "quota"))
    return OSError(errno.ENOSPC if full else errno.EIO,
                   f"{type(error).__name__}: {text}", path)


def engine_files(name: str) -> Tuple[str, ...]:
    """The files an engine may keep in a chest's folder."""
    cls = ENGINES[name]
    return (cls.filename,) + tuple(cls.filename + s for s in cls.companions)


class SQLiteEngine(PackedEngine):
    """Slots in a SQLite table (the standard library's ``sqlite3``).

    WAL mode: a reader in another process reads beside the writer; each
    ``put`` is its own transaction (about 20 us here). ``durable``:
    ``synchronous=FULL`` (each commit is fsynced), else ``NORMAL``
    (committed data survives a crash of the process, not of the system).
    """

    name = "sqlite"
    filename = ".packed.sqlite3"
    companions: Tuple[str, ...] = ("-wal", "-shm", "-journal")

    def __init__(self, folder: str, readonly: bool = False, durable: bool = False,
                 file_mode: int = FILE_MODE) -> None:
        self.path = os.path.join(folder, self.filename)
        self.readonly = readonly
        self._lock = threading.Lock()
        self._db: Optional[sqlite3.Connection] = None
        # One cursor for every get, under the lock (a new one each read cost
        # 1.1 us of a random small read's 7.9 here).
        self._reader: Optional[sqlite3.Cursor] = None
        self._pid = os.getpid()  # (the process the connection is for)
        try:
            if readonly:
                self._db = self._open_read_only()
                return
            if not os.path.exists(self.path):
                # Made with the chest's permissions (sqlite3 would use the umask;
                # SQLite gives its -wal and -shm files the database's mode).
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, file_mode)
                try:
                    os.fchmod(fd, file_mode)  # what the umask took
                finally:
                    os.close(fd)
            self._db = sqlite3.connect(self.path, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            # The write-ahead log is cut back to 4 MiB after each checkpoint
            # (it keeps its largest size otherwise).
            self._db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
            self._db.execute(CACHE_PRAGMA)
            self._db.execute("CREATE TABLE IF NOT EXISTS packed "
                             "(slot INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        except sqlite3.Error as e:
            if self._db is not None:
                self._db.close()
            raise as_os_error(e, self.path) from e

    def _open_read_only(self) -> sqlite3.Connection:
        uri = "file:" + self.path + "?mode=ro"
        db = sqlite3.connect(uri, uri=True, isolation_level=None,
                             check_same_thread=False)
        db.execute(CACHE_PRAGMA)
        try:
            db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.OperationalError:
            # A read-only folder or file system: WAL mode needs to write its
            # -shm file to read. With no -wal there is no writer to read
            # beside: read the file as it is.
            db.close()
            if os.path.exists(self.path + "-wal"):
                raise
            db = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None,
                                 check_same_thread=False)
            db.execute(CACHE_PRAGMA)
        return db

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise ValueError(f"the packed values of {self.path} are closed")
        if self._pid != os.getpid():  # a forked child: one of its own
            _INHERITED.append(self._db)
            self._reader = None
            self._db = None
            self.readonly = True
            self._db = self._open_read_only()
            self._pid = os.getpid()
        return self._db

    def put(self, slot: int, data: bytes) -> None:
        with self._lock:
            db = self._connection()
            try:
                db.execute("INSERT OR REPLACE INTO packed (slot, data) VALUES (?, ?)",
                           (slot, data))
            except sqlite3.Error as e:
                raise as_os_error(e, self.path) from e

    def put_many(self, items: Iterable[Tuple[int, bytes]]) -> None:
        rows = list(items)
        with self._lock:
            db = self._connection()
            try:
                db.execute("BEGIN")
                try:
                    db.executemany("INSERT OR REPLACE INTO packed (slot, data) "
                                   "VALUES (?, ?)", rows)
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.Error as e:
                raise as_os_error(e, self.path) from e
            self._cut_log(db)

    def _cut_log(self, db: sqlite3.Connection) -> None:
        """After a large commit (a flush packs every small value in memory
        in one, and deletes its retired slots in another), copy the
        write-ahead log into the database and cut it back: it kept the size
        of the largest commit until a later one (17.9 MiB after a flush of
        50,000 small values, 35.8 after 100,000). Lock held; never raises."""
        try:
            if os.path.getsize(self.path + "-wal") <= WAL_LIMIT:
                return
            # (Not waiting for readers in other processes: what they still
            # read stays in the log, and the next large commit tries again.)
            db.execute("PRAGMA busy_timeout=0")
            try:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        except (OSError, sqlite3.Error):
            pass

    def get(self, slot: int) -> Optional[bytes]:
        with self._lock:
            reader = self._reader
            if reader is None or self._pid != os.getpid():
                reader = self._connection().cursor()
                self._reader = reader
            try:
                # (All rows: the statement ends, so the cursor holds no read
                # transaction open between gets.)
                rows = reader.execute("SELECT data FROM packed WHERE slot = ?",
                                      (slot,)).fetchall()
            except sqlite3.Error as e:
                raise as_os_error(e, self.path) from e
        return bytes(rows[0][0]) if rows else None

    def delete(self, slots: Iterable[int]) -> None:
        rows = [(slot,) for slot in slots]
        if not rows:
            return
        with self._lock:
            db = self._connection()
            try:
                db.execute("BEGIN")
                try:
                    db.executemany("DELETE FROM packed WHERE slot = ?", rows)
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.Error as e:
                raise as_os_error(e, self.path) from e
            self._cut_log(db)

    def slots(self, start: int = 0) -> Iterator[Tuple[int, int]]:
        rows = self._query("SELECT slot, length(data) FROM packed WHERE slot >= ? "
                           "ORDER BY slot", (start,))
        return iter([(int(slot), int(size)) for slot, size in rows])

    def last_slot(self) -> int:
        rows = self._query("SELECT max(slot) FROM packed", ())
        return int(rows[0][0] or 0) if rows else 0

    def _query(self, sql: str, args: Tuple[Any, ...]) -> List[Tuple[Any, ...]]:
        with self._lock:
            try:
                return self._connection().execute(sql, args).fetchall()
            except sqlite3.Error as e:
                if "no such table" in str(e):
                    return []  # made by a writer that has not written yet
                raise as_os_error(e, self.path) from e

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._reader = None
                if self._pid == os.getpid():
                    self._db.close()
                else:
                    _INHERITED.append(self._db)  # (a forked child: see there)
                self._db = None


class _Environments:
    """LMDB refuses to open one database twice in a process: chests on one
    folder (a writer and a reader, say) share one environment, opened for
    writing as soon as one of them writes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # real path -> [environment, opened read-only, users], of process _pid
        self._open: Dict[str, list] = {}
        self._pid = os.getpid()

    def _here(self) -> Dict[str, list]:
        """The environments of this process (lock held). A forked child
        closes those it inherited before it opens its own: lmdb refuses to
        open a file whose environment is open in the process, and closing
        one touches only what belongs to the process that closes it (its
        own reader slots, its copies of the maps and descriptors: LMDB's
        mdb_env_close0), where reading through it filled the parent's
        reader table ("MDB_READERS_FULL" after ~250 reads, for both)."""
        if self._pid != os.getpid():
            for env, _, _ in self._open.values():
                try:
                    env.close()
                except lmdb.Error:
                    pass
            self._open = {}
            self._pid = os.getpid()
        return self._open

    def acquire(self, path: str, readonly: bool, durable: bool, file_mode: int) -> list:
        """The shared ``[environment, opened read-only, users]`` of ``path``:
        its environment is the one open now (reopened for writing if a
        writer came after a reader)."""
        real = os.path.realpath(path)
        with self._lock:
            held = self._here().get(real)
            if held is not None and (readonly or not held[1]):
                held[2] += 1
                return held
            if held is not None:  # a reader has it: open it for writing
                held[0].close()
            if os.path.exists(path) and os.path.getsize(path) == 0:
                # (LMDB writes its meta pages as it makes the file: an empty
                # one was emptied. A writer made a new database over it, its
                # values then "missing"; a reader said "Bad file descriptor".)
                raise OSError(errno.EIO, "the database is empty (0 bytes): cut short "
                                         "or damaged", path)
            if not readonly:
                _reserve_lock_file(path + "-lock", file_mode)
            try:
                env = lmdb.open(path, subdir=False, map_size=LMDBEngine.MAP_SIZE,
                                readonly=readonly, lock=True, sync=durable,
                                metasync=durable, max_dbs=0, mode=file_mode,
                                create=not readonly)
            except lmdb.Error as e:
                raise as_os_error(e, path) from e
            try:
                _check_length(env, path)
            except OSError:
                env.close()
                raise
            if not readonly:
                _cover_last_page(env, path)
                for name in (path, path + "-lock"):  # what the umask took
                    try:
                        if os.stat(name).st_mode & 0o777 != file_mode:
                            os.chmod(name, file_mode)
                    except OSError:
                        pass
            if held is not None:
                held[0], held[1] = env, False
                held[2] += 1
            else:
                held = self._open[real] = [env, readonly, 1]
            return held

    def release(self, path: str) -> None:
        real = os.path.realpath(path)
        with self._lock:
            held = self._here().get(real)
            if held is None:
                return
            held[2] -= 1
            if held[2] == 0:
                if not held[1]:
                    _cover_last_page(held[0], path)
                held[0].close()
                del self._open[real]


_ENVIRONMENTS = _Environments()

#: What LMDB's lock file takes with its default 126 readers (64 bytes each,
#: and a header), rounded up to whole pages.
LOCK_FILE_BYTES = 16384


def _reserve_lock_file(name: str, file_mode: int) -> None:
    """Give LMDB's lock file its disk blocks before LMDB maps it: LMDB
    writes it through a memory map, and on a full disk the first such write
    killed the process with SIGBUS (every value still in memory lost). Now
    a full disk is an OSError here."""
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is None:  # (macOS): nothing to reserve with
        return
    fd = os.open(name, os.O_RDWR | os.O_CREAT, file_mode)
    try:
        fallocate(fd, 0, max(os.fstat(fd).st_size, LOCK_FILE_BYTES))
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):
            return  # a file system that cannot: as before
        raise OSError(e.errno, f"no room for LMDB's lock file: {e.strerror}",
                      name) from e
    finally:
        os.close(fd)


def _check_length(env: Any, path: str) -> None:
    """OSError if the database's file is shorter than the pages its last
    commit refers to (cut short by a copy, a full disk, a person): LMDB
    reads them through a memory map, and reading past the file's end killed
    the process with SIGBUS. A file shorter than its last page number says
    is walked (:mod:`chest.lmdbfile`): LMDB counts pages a commit took and
    freed unwritten, and the file of a cleanly closed chest was taken for
    one cut short (its values unreadable, ``repair`` dropping them all)."""
    need = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    size = os.path.getsize(path)
    if size >= need:
        return
    missing = missing_page(path)
    if missing is not None:
        raise OSError(errno.EIO, f"the database is cut short: {size} bytes, without "
                                 f"{missing} that its last commit refers to", path)


def _cover_last_page(env: Any, path: str) -> None:
    """Make the file as long as its last page number says (the pages past
    its end are free ones, never read: a hole), so that the next opening
    needs no walk. Never raises."""
    try:
        need = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        if os.path.getsize(path) < need:
            os.truncate(path, need)
    except (OSError, lmdb.Error):
        pass


class LMDBEngine(PackedEngine):
    """Slots in an LMDB database (the ``lmdb`` package, ``chest[lmdb]``).

    Keys are slots as 8 big-endian bytes, so records are in slot order. A
    reader in another process reads beside the writer; chests on one folder
    in one process share one environment (LMDB allows one). ``durable``:
    each commit is synced; otherwise committed data survives a crash of the
    process (the pages are written, not synced).
    """

    name = "lmdb"
    filename = ".packed.lmdb"
    companions: Tuple[str, ...] = ("-lock",)
    #: Most bytes the database may grow to (address space, not disk).
    MAP_SIZE = 1 << 40

    def __init__(self, folder: str, readonly: bool = False, durable: bool = False,
                 file_mode: int = FILE_MODE) -> None:
        if lmdb is None:
            raise ImportError("packed='lmdb' needs the lmdb package: "
                              "pip install 'chest[lmdb]'")
        self.path = os.path.join(folder, self.filename)
        self.readonly = readonly
        # (Looked up once: os.path.realpath costs more than a read.)
        self._held = _ENVIRONMENTS.acquire(self.path, readonly, durable, file_mode)
        self._closed = False
        self._pid = os.getpid()  # (the process the environment is for)

    def _environment(self) -> Any:
        if self._closed:
            raise ValueError(f"the packed values of {self.path} are closed")
        if self._pid != os.getpid():  # a forked child: one of its own
            self.readonly = True
            self._held = _ENVIRONMENTS.acquire(self.path, True, False, FILE_MODE)
            self._pid = os.getpid()
        return self._held[0]

    def put(self, slot: int, data: bytes) -> None:
        if self.readonly:
            raise ValueError(f"the packed values of {self.path} are open read-only")
        try:
            with self._environment().begin(write=True) as txn:
                txn.put(slot.to_bytes(8, "big"), data)
        except lmdb.Error as e:
            raise as_os_error(e, self.path) from e

    def put_many(self, items: Iterable[Tuple[int, bytes]]) -> None:
        if self.readonly:
            raise ValueError(f"the packed values of {self.path} are open read-only")
        try:
            with self._environment().begin(write=True) as txn:
                for slot, data in items:
                    txn.put(slot.to_bytes(8, "big"), data)
        except lmdb.Error as e:
            raise as_os_error(e, self.path) from e

    def get(self, slot: int) -> Optional[bytes]:
        try:
            # (Aborted, not ended by ``with``: a read transaction's commit
            # cost 1 us more, half of what a small read costs LMDB.)
            txn = self._environment().begin(buffers=False)
            try:
                data = txn.get(slot.to_bytes(8, "big"))
            finally:
                txn.abort()
        except lmdb.Error as e:
            raise as_os_error(e, self.path) from e
        return None if data is None else bytes(data)

    def delete(self, slots: Iterable[int]) -> None:
        keys = [slot.to_bytes(8, "big") for slot in slots]
        if not keys:
            return
        try:
            with self._environment().begin(write=True) as txn:
                for key in keys:
                    txn.delete(key)
        except lmdb.Error as e:
            raise as_os_error(e, self.path) from e

    def slots(self, start: int = 0) -> Iterator[Tuple[int, int]]:
        found = []
        try:
            with self._environment().begin(buffers=True) as txn:
                cursor = txn.cursor()
                if cursor.set_range(start.to_bytes(8, "big")):
                    for key, value in cursor:
                        found.append((int.from_bytes(key, "big"), len(value)))
        except lmdb.Error as e:
            raise as_os_error(e, self.path) from e
        return iter(found)

    def last_slot(self) -> int:
        try:
            with self._environment().begin() as txn:
                cursor = txn.cursor()
                return int.from_bytes(cursor.key(), "big") if cursor.last() else 0
        except lmdb.Error as e:
            raise as_os_error(e, self.path) from e

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _ENVIRONMENTS.release(self.path)


ENGINES: Dict[str, Type[PackedEngine]] = {"sqlite": SQLiteEngine, "lmdb": LMDBEngine}


def open_engine(name: str, folder: str, readonly: bool = False, durable: bool = False,
                file_mode: int = FILE_MODE) -> PackedEngine:
    """Open the packed engine ``name`` ("sqlite" or "lmdb") of ``folder``."""
    try:
        cls = ENGINES[name]
    except KeyError:
        raise ValueError(f"packed must be one of {sorted(ENGINES)} or None, "
                         f"not {name!r}") from None
    return cls(folder, readonly=readonly, durable=durable, file_mode=file_mode)
