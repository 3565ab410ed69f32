"""Value files: written whole under a temporary name, then renamed.

The primitives the store writes and reads its files with: temporary names
(``.tmp.<name>.<12 hex digits>``, so writers in several processes never
pick the same), retired copies (``.old.<name>``), an unbuffered file whose
``write`` writes everything or raises, one-call reads of small files, the
permission bits of a chest's files and folders.

Examples
--------
>>> folder_mode(0o600), folder_mode(0o640)
(448, 488)
>>> is_temp_name(temp_name("/c", "x").rpartition("/")[2])
True
"""
from __future__ import annotations

import errno
import io
import os
import re
import stat
from typing import IO, Any, NamedTuple, Optional

__all__ = ["TMP_PREFIX", "OLD_PREFIX", "FILE_MODE", "TEMP_EXTRA", "Written", "RawFile",
           "size_of_open_file", "temp_name", "is_temp_name", "read_whole", "open_raw",
           "folder_mode", "make_folder", "others_can_write",
           "remove_quietly", "sync_dir"]

TMP_PREFIX = ".tmp."

OLD_PREFIX = ".old."

#: Permission bits of a chest's files unless told otherwise: its values are
#: often private, and are unpickled when read (see :func:`others_can_write`).
FILE_MODE = 0o600

TEMP_EXTRA = len(".tmp.") + 13  # what a temporary name adds: prefix, ".", 12 hex

# What _temp_name makes: the prefix, the base, 48 random bits in hex.
_TEMP_NAME = re.compile(r"\.tmp\..+\.[0-9a-f]{12}\Z", re.DOTALL)


class Written(NamedTuple):
    """A value file written under a temporary name, ready to :meth:`Store.commit`."""

    tmp: str
    filename: str
    size: int
    seconds: float


class RawFile(io.FileIO):
    """An unbuffered binary file whose ``write`` writes everything or raises.

    pickle streams large buffers straight through it, and ignores what
    ``write`` returns: a short write (a full disk) must not go unnoticed.
    """

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        total = len(view)
        while view:
            written = super().write(view)
            if not written:
                raise OSError(errno.ENOSPC, "no space left to write", self.name)
            view = view[written:]
        return total


def size_of_open_file(f: Any) -> Optional[int]:
    """The size of the file behind ``f``; None if it has none (a user's
    ``open`` may return any file-like object)."""
    try:
        return os.fstat(f.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        return None


def temp_name(folder: str, base: str) -> str:
    """A fresh temporary name beside ``base``: 48 random bits, so writers in
    several processes (or forks) never pick the same one."""
    return os.path.join(folder, f"{TMP_PREFIX}{base}.{os.urandom(6).hex()}")



def is_temp_name(base: str) -> bool:
    """Is ``base`` (a file's name, without its folder) a temporary name as
    :func:`temp_name` makes them?"""
    return bool(_TEMP_NAME.match(base))


def read_whole(filename: str, size_hint: int) -> bytes:
    """The content of a file, read with bare system calls: a file object costs
    about as much as the read itself for a small file."""
    fd = os.open(filename, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        data = os.read(fd, size_hint + 1)
        if len(data) == size_hint:
            # Asked for one byte more than the file should hold and got one
            # less: a regular file reads short only at its end.
            return data
        parts = [data]
        while parts[-1]:  # until the end of the file, whatever the hint said
            parts.append(os.read(fd, max(size_hint, 64 * 1024)))
    finally:
        os.close(fd)
    return b"".join(parts)


def open_raw(filename: str, mode: str, file_mode: int = 0o600) -> IO[Any]:
    """An unbuffered binary file: pickle streams large buffers straight through."""
    return RawFile(filename, mode.replace("b", ""),
                    opener=lambda path, flags: os.open(path, flags, file_mode))


def folder_mode(file_mode: int) -> int:
    """The mode of a chest's folders for files of ``file_mode``: searchable
    by whoever may read the files (0o600 -> 0o700, 0o640 -> 0o750)."""
    return file_mode | (file_mode & 0o444) >> 2

def make_folder(path: str, file_mode: int = FILE_MODE, top: Optional[str] = None,
                durable: bool = False) -> None:
    """Make folder ``path`` (and its missing parents up to ``top``) with the
    mode of a chest's folders; parents above ``top`` as ``os.makedirs``
    would. ``durable``: sync the folder each new one up to ``top`` is in
    (else a power loss may take a new folder away, with the synced files in
    it)."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent and parent != path and not os.path.isdir(parent):
        if top is not None and os.path.commonpath([parent, top]) == top and parent != top:
            make_folder(parent, file_mode, top, durable)
        else:
            os.makedirs(parent, exist_ok=True)
    mode = folder_mode(file_mode)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        return
    if file_mode != FILE_MODE:
        os.chmod(path, mode)  # the umask may have taken bits the user asked for
    if durable:
        sync_dir(parent or os.curdir)

def others_can_write(path: str, file_mode: int = FILE_MODE) -> Optional[str]:
    """Why users other than this one could change ``path`` (a chest's folder,
    index or journal); None if they cannot (or it is missing).

    A group allowed by ``file_mode`` (0o660, say) is not "other".
    """
    try:
        info = os.stat(path)
    except OSError:
        return None
    if info.st_uid not in (os.geteuid(), 0):
        return f"it belongs to user id {info.st_uid}"
    if info.st_mode & 0o002:
        return f"anyone may write it (mode {stat.S_IMODE(info.st_mode):o})"
    if info.st_mode & 0o020 and not file_mode & 0o020:
        return f"its group may write it (mode {stat.S_IMODE(info.st_mode):o})"
    return None

def remove_quietly(path: str) -> None:
    """Remove a file if it is there; cleaning up must not hide the error
    being handled."""
    try:
        os.remove(path)
    except OSError:
        pass


def sync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
