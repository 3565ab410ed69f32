"""Errors and warnings raised by chest; each message names the key, file or path."""
from __future__ import annotations

import errno
from typing import Any, Container, Dict, Hashable, Mapping, Optional, Tuple


def describe(error: BaseException) -> str:
    """An error's type and message, without the file name that the chest's
    own error names already: ``"IsADirectoryError: Is a directory"``."""
    if isinstance(error, OSError) and error.strerror:
        return f"{type(error).__name__}: {error.strerror}"
    return f"{type(error).__name__}: {error}"


class ChestError(Exception):
    """Base class of every error that chest raises itself."""


class ValueFileError(ChestError, OSError):
    """A key's value file is missing, truncated or cannot be loaded.

    Not a ``KeyError``: the key is known, its data is damaged, and ``in`` /
    ``get`` must not read that as "missing".
    """

    def __init__(self, key: Hashable, filename: str, reason: str) -> None:
        self.key = key
        self.filename = filename
        self.reason = reason
        super().__init__(f"cannot read key {key!r} from {filename}: {reason}")

    def __str__(self) -> str:
        return f"cannot read key {self.key!r} from {self.filename}: {self.reason}"

    def __reduce__(self) -> Tuple[Any, ...]:
        return type(self), (self.key, self.filename, self.reason)


class IndexFileError(ChestError):
    """The ``.keys`` index of a chest directory cannot be read."""

    def __init__(self, filename: str, reason: str) -> None:
        self.filename = filename
        self.reason = reason
        super().__init__(f"cannot read the chest index {filename}: {reason}")

    def __reduce__(self) -> Tuple[Any, ...]:
        return type(self), (self.filename, self.reason)


def _listed(failures: Mapping[Hashable, BaseException]) -> str:
    detail = "; ".join(f"{k!r}: {e!r}" for k, e in list(failures.items())[:5])
    more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
    return detail + more


class UnwritableValuesError(ChestError):
    """Some in-memory values could not be written; they are still in memory.

    ``failures`` maps each key to its error. A key whose file still holds
    an earlier copy (a value read back, then not written again) says so.
    """

    def __init__(self, path: str, failures: dict,
                 on_disk: Container[Hashable] = ()) -> None:
        self.path = path
        self.failures = failures
        older = sum(1 for key in failures if key in on_disk)
        where = (f"; {older} of them keep the copy their file held before"
                 if older else "")
        super().__init__(
            f"{len(failures)} value(s) of the chest at {path} could not be written "
            f"and stay in memory only{where}: {_listed(failures)}"
        )

    def __reduce__(self) -> Tuple[Any, ...]:
        return type(self), (self.path, self.failures)


class IndexWriteError(ChestError, OSError):
    """The ``.keys`` index could not be written (a folder made read-only, a
    full disk): what changed since the last flush is not saved in it.

    Values evicted since then are in the journal, if it could be written,
    and reopening finds them; ``unwritten`` lists the values that could not
    be written either (they stay in memory).
    """

    def __init__(self, path: str, filename: str, reason: str,
                 unwritten: Optional[Dict[Hashable, BaseException]] = None) -> None:
        self.path = path
        self.filename = filename
        self.reason = reason
        self.unwritten = dict(unwritten or {})
        super().__init__(errno.EIO, self.__str__())

    def __str__(self) -> str:
        values = (f"; {len(self.unwritten)} value(s) could not be written either and "
                  f"stay in memory only: {_listed(self.unwritten)}"
                  if self.unwritten else "")
        return (f"cannot save the chest at {self.path}: its index {self.filename} "
                f"cannot be written ({self.reason}), so the keys set or deleted since "
                f"the last flush are not saved in it{values}")

    def __reduce__(self) -> Tuple[Any, ...]:
        return type(self), (self.path, self.filename, self.reason, self.unwritten)


class ChestLockedError(ChestError):
    """Another process has the chest open for writing."""

    def __init__(self, path: str, holder: str, waited: float = 0.0) -> None:
        self.path = path
        self.holder = holder
        self.waited = waited
        wait = (f"waited {waited:g} s for it; close it there, wait longer"
                if waited > 0 else "close it there, pass lock_timeout= to wait")
        super().__init__(
            f"the chest at {path} is open for writing by {holder}; {wait}, or open "
            f"it with readonly=True")

    def __reduce__(self) -> Tuple[Any, ...]:
        return type(self), (self.path, self.holder, self.waited)


class ReadOnlyError(ChestError):
    """A change was asked of a chest opened with ``readonly=True``."""

    def __init__(self, path: str, action: str) -> None:
        self.path = path
        self.action = action
        super().__init__(f"cannot {action}: the chest at {path} is read-only")

    def __reduce__(self) -> Tuple[Any, ...]:
        return type(self), (self.path, self.action)


class DiskBudgetError(ChestError, OSError):
    """Writing a value would take the chest's files over ``max_disk``."""

    def __init__(self, path: str, key: Hashable, needed: int, max_disk: int) -> None:
        self.path = path
        self.key = key
        self.needed = needed
        self.max_disk = max_disk
        super().__init__(errno.ENOSPC, self.__str__())

    def __str__(self) -> str:
        return (f"writing key {self.key!r} would take the chest at {self.path} to "
                f"{self.needed} bytes on disk, over max_disk={self.max_disk}")

    def __reduce__(self) -> Tuple[Any, ...]:
        return type(self), (self.path, self.key, self.needed, self.max_disk)


class BoundToMemoryError(ChestError, TypeError):
    """A value holds an object whose identity matters: it stays in memory.

    Its class defines a finalizer (``__del__``, such as partd's ``File``,
    which deletes its data when garbage-collected), or was named with
    :func:`chest.keep_in_memory`. Writing such a value to disk and dropping it
    from memory would run the finalizer and break the copy read back.
    """

    def __init__(self, cls: type, why: str) -> None:
        self.cls = cls
        self.why = why
        name = f"{cls.__module__}.{cls.__qualname__}"
        super().__init__(f"the value holds a {name}, {why}: it stays in memory "
                         f"(see chest.keep_in_memory)")

    def __reduce__(self) -> Tuple[Any, ...]:
        return type(self), (self.cls, self.why)


class FolderError(ChestError):
    """A path is not a chest's folder or cannot be read (``readonly=True``
    on a folder that does not exist, say), or a command of ``python -m
    chest`` cannot go on: a writer holds the lock that ``repair`` needs, or
    a repair is refused. The message names the folder and says which."""


class FolderChangedError(FolderError):
    """A chest closed (or dropped) was to write again, but another chest
    wrote its folder meanwhile: what this one holds is out of date, and
    writing it would undo the other's changes. Nothing is written; reopen
    the chest to see the folder as it is."""

    def __init__(self, path: str, action: str) -> None:
        self.path = path
        self.action = action
        super().__init__(
            f"cannot {action}: the chest at {path} was changed by another "
            f"chest (or removed) since this one was closed or dropped, and this one's "
            f"keys are out of date; nothing was written: reopen it "
            f"(Chest({path!r})) to see its changes")

    def __reduce__(self) -> Tuple[Any, ...]:
        return type(self), (self.path, self.action)


class ChestWarning(UserWarning):
    """Something went wrong where raising would not reach you: in the
    background, at garbage collection, at exit, or in ``close()`` (values
    that could not be written: the message names them; they were in memory
    only), or a chest others could change was opened."""
