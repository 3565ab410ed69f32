"""A chest's hold on its folder, from opening to closing.

:class:`Session` owns what ties a chest to its folder and to the process
that opened it, apart from the values:

- the folder itself: a temporary one (made here, removed when the chest is
  closed or garbage-collected), or the user's (made private to the user if
  new; a reader's must exist, so that a typo does not open an empty chest);
- the writer's lock (:mod:`chest.lock`), taken when a writer opens the
  folder, given back by ``close()`` and taken again by the next change;
- the warning when another user could change the folder, the index or the
  journal (reading a value unpickles it);
- the end: chests with a path still open at interpreter exit are closed
  (flushed) by an ``atexit`` hook while the interpreter is whole, and a
  forked child neither flushes nor removes its parent's chest.

>>> s = Session(None)
>>> s.temporary, os.path.isdir(s.path), s.locked
(True, True, False)
>>> s.end()
>>> os.path.exists(s.path)
False
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import warnings
import weakref
from typing import Any, Iterable, Optional, Union

from .errors import ChestWarning, FolderError
from .files import FILE_MODE, make_folder, others_can_write
from .folder import check_folder
from .lock import WriterLock, hold_alone

__all__ = ["Session"]


class Session:
    """A chest's folder, its writer's lock, and how it ends: removed if
    temporary, flushed at exit if not.

    ``path`` None makes a temporary folder (in ``parent`` if given). With
    ``readonly`` the folder must exist and no lock is ever taken.
    """

    def __init__(self, path: Optional[Union[str, os.PathLike]], *,
                 readonly: bool = False, lock_timeout: float = 0.0,
                 file_mode: int = FILE_MODE,
                 parent: Optional[Union[str, os.PathLike]] = None) -> None:
        #: The process that opened the chest: only it flushes or removes it.
        self.owner_pid = os.getpid()
        if isinstance(path, str) and not path:
            path = None  # (chest 0.2.3's "path or a temporary folder")
        #: A folder made here for this chest, removed when it ends.
        self.temporary = path is None
        self.readonly = readonly
        if isinstance(lock_timeout, bool) or not isinstance(lock_timeout, (int, float)):
            # (Before any folder is made: a bad keyword leaves nothing behind.)
            raise TypeError(f"lock_timeout must be a number of seconds, not "
                            f"{lock_timeout!r}")
        self.lock_timeout = lock_timeout
        self.file_mode = file_mode
        self._writer_lock: Optional[WriterLock] = None
        #: Does this chest hold its folder's lock alone in this process, also
        #: when it takes it again after close() (see :meth:`hold_alone`)?
        self.alone = False
        self._finalizer: Optional[weakref.finalize] = None
        if path is not None:
            self.path = os.fspath(path)
            if not isinstance(self.path, str):
                raise TypeError(f"a chest's path is a str or os.PathLike of one, "
                                f"not {type(path).__name__}: {path!r}")
            if readonly:
                check_folder(self.path)  # a typo must not open an empty chest
        else:
            self.path = tempfile.mkdtemp(".chest", dir=parent)
        #: The folder, whatever the working directory is later: the lock is
        #: taken again after a close() on the folder the values are in (a
        #: relative path after a chdir locked another folder, and left this
        #: one open to a second writer).
        self.folder = os.path.abspath(self.path)

    @property
    def locked(self) -> bool:
        """Does this chest hold its folder's writer's lock?"""
        return self._writer_lock is not None

    @property
    def in_owner(self) -> bool:
        """Is this the process that opened the chest (not a forked child)?"""
        # (Asked of the system each time, 0.3 us: a pid kept and set again
        # by os.register_at_fork missed a fork() made from C, as uWSGI's
        # prefork makes, whose child then wrote into its parent's chest.)
        return os.getpid() == self.owner_pid

    def lock(self) -> None:
        """Make a writer's folder (private to the user) if it is not there,
        and take its writer's lock; nothing for a temporary folder, a
        reader, or a lock already held. Raises
        :class:`~chest.errors.ChestLockedError` if another writer has it."""
        if self.temporary or self.readonly or self._writer_lock is not None:
            return
        try:
            make_folder(self.folder, self.file_mode)
        except FileExistsError:
            raise FolderError(f"{self.path} is a file, not a folder: a chest's "
                              f"path is a folder it owns") from None
        self._writer_lock = WriterLock(self.folder, self.lock_timeout)
        if self.alone:
            try:
                self.hold_alone()
            except BaseException:
                self.unlock()
                raise

    def hold_alone(self) -> None:
        """Let no other chest in this process share the writer's lock this
        chest holds, now and whenever it takes it again (ValueError if one
        does: see :func:`chest.lock.hold_alone`)."""
        if self._writer_lock is None:
            return
        if self._writer_lock.shared:
            raise ValueError(f"the chest at {self.path} is open for writing in this "
                             f"process already; one with packed values or "
                             f"write_through, or a List or Set, does not share its "
                             f"folder (both would give out the same slots, or one's "
                             f"flush drop the other's journal): close the other "
                             f"first, or open this one with readonly=True")
        hold_alone(self.folder)
        self.alone = True

    def unlock(self) -> None:
        """Give the writer's lock back (if held)."""
        if self._writer_lock is not None:
            self._writer_lock.release()
            self._writer_lock = None

    def warn_if_others_can_write(self, names: Iterable[str]) -> None:
        """Warn, naming the path, if another user could change the folder or
        one of the files ``names`` in it: whoever can write a chest's files
        can run code in the process that reads its values."""
        if self.temporary:
            return
        for name in ("", *names):
            path = os.path.join(self.folder, name) if name else self.folder
            why = others_can_write(path, self.file_mode)
            if why is not None:
                warnings.warn(
                    f"chest at {self.path}: another user could change {path} ({why}); "
                    f"opening a chest trusts its files as code, as pickle.load does",
                    ChestWarning, stacklevel=4)
                return

    def watch(self, chest: Any) -> None:
        """See that ``chest`` ends well: its temporary folder removed when
        it is garbage-collected, or (a writer's chest with a path) closed at
        interpreter exit. Again after :meth:`unwatch`: a closed chest that
        is changed is open again."""
        if self.temporary:
            if self._finalizer is None:
                self._finalizer = weakref.finalize(
                    chest, _remove_folder, self.folder, self.owner_pid)
        elif not self.readonly:
            _OPEN[id(chest)] = chest

    def unwatch(self, chest: Any) -> None:
        """``chest`` is closing: nothing is left to do for it at exit."""
        _OPEN.pop(id(chest), None)
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None

    def end(self) -> None:
        """Give the lock back and remove a temporary folder (also when the
        chest could not be opened: nothing is left behind)."""
        self.unlock()
        if self.temporary and self.in_owner:
            shutil.rmtree(self.path, ignore_errors=True)


def _remove_folder(path: str, owner_pid: int) -> None:
    if os.getpid() == owner_pid:
        shutil.rmtree(path, ignore_errors=True)


# Chests with a path, closed (flushed) at exit while the interpreter is whole.
_OPEN: "weakref.WeakValueDictionary[int, Any]" = weakref.WeakValueDictionary()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_OPEN.clear)


@atexit.register
def _close_open_chests() -> None:
    for chest in list(_OPEN.values()):
        try:
            chest.close()
        except Exception as e:  # pragma: no cover - best effort at exit
            warnings.warn(f"could not close the chest at {chest.path}: {e!r}",
                          ChestWarning)
