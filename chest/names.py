"""File names for keys: what a key suggests, what is safe, what is free.

``key_to_filename`` suggests a name: identifier-like strings keep their
own, tuples become nested folders (every folder prefixed with ``_``),
anything else gets a hash that includes the key's type (so ``1`` and ``'1'``
differ). :func:`safe_name` says whether a name may be used at all: not
empty, not hidden, not absolute, not climbing out of the folder, no part
too long. :class:`NameTable` gives the keys of one folder names that
stay unique: the store (:mod:`chest.store`) keeps one.

Examples
--------
>>> key_to_filename("x")
'x'
>>> key_to_filename(("a", "b"))
'_a/b'
>>> key_to_filename(1) != key_to_filename("1")
True
>>> safe_name("../x") is None
True
>>> import tempfile
>>> table = NameTable(tempfile.mkdtemp(), key_to_filename)
>>> table.relative(table.prepare("x"))
'x'
>>> table.relative(table.prepare("X")) == hashed_name("X")   # "x" in another case
True
>>> table.release("x"); table.relative(table.filename("x"))   # reserved still
'x'
>>> table.settle(); "x" in table.names, table.relative(table.prepare("x"))
(False, 'x')
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
from typing import Any, Callable, Dict, Hashable, List, Optional, Set

from .files import TEMP_EXTRA

__all__ = ["key_to_filename", "hashed_name", "safe_name", "fold", "IDENTIFIER",
           "MAX_NAME", "MAX_PATH", "NameTable"]

#: Longest name (in bytes) of one path component; file systems allow 255.
MAX_NAME = 200

#: Longest path (in bytes) the system takes (Linux: 4096 with the final NUL).
MAX_PATH = os.pathconf("/", "PC_PATH_MAX") if hasattr(os, "pathconf") else 4096

IDENTIFIER = re.compile(r"[_a-zA-Z]\w*\Z", re.ASCII)


def _token(key: Any) -> str:
    """A text that differs for keys that differ, including in type."""
    if isinstance(key, tuple):
        return "(" + ",".join(_token(k) for k in key) + ")"
    if isinstance(key, frozenset):
        return "{" + ",".join(sorted(_token(k) for k in key)) + "}"
    cls = type(key)
    return f"{cls.__module__}.{cls.__qualname__}:{key!r}"

def hashed_name(key: Hashable) -> str:
    """A 32-hex-digit name derived from the key and its type."""
    return hashlib.blake2b(_token(key).encode("utf-8", "surrogatepass"),
                           digest_size=16).hexdigest()

def key_to_filename(key: Hashable) -> str:
    """The file name a key suggests, relative to the chest's folder.

    Identifier-like strings keep their name, tuples become nested folders
    (every folder prefixed with ``_``), other keys get a hashed name.
    """
    if isinstance(key, str) and IDENTIFIER.match(key) and len(key) <= MAX_NAME:
        return key
    if isinstance(key, tuple) and key:
        names = ["_" + key_to_filename(k) for k in key[:-1]]
        return "/".join(names + [key_to_filename(key[-1])])
    return hashed_name(key)


def safe_name(name: Any) -> Optional[str]:
    """``name`` as '/'-separated components if it is safe to use, else None."""
    if not isinstance(name, str) or not name:
        return None
    parts = name.replace(os.sep, "/").split("/")
    for part in parts:
        if (not part or part.startswith(".") or "\\" in part or "\0" in part
                or len(part.encode("utf-8", "surrogatepass")) > MAX_NAME):
            return None
    return "/".join(parts)


def fold(name: str) -> str:
    """The form of ``name`` two names that a file system may take for one share."""
    return name.casefold()


class NameTable:
    """The file name of each key of one folder, kept unique and safe.

    A key's suggested name (``key_to_filename``) is used if it is safe, fits
    in a path (also as a temporary name), and is free: not another key's
    (also when the two differ only in case: a file system may take them for
    one), not a folder of another key's names, not a file the table does not
    own. Otherwise the key gets a hashed name. A key that no longer has a
    file *releases* its name: reserved for it until :meth:`settle` (after
    the index on disk no longer names it: a crash must not pair the old
    index with another key's new file under that name).
    """

    def __init__(self, folder: str,
                 key_to_filename: Callable[[Hashable], str] = key_to_filename) -> None:
        self.folder = folder
        self._prefix = os.path.join(folder, "")  # ends with a separator
        self.key_to_filename = key_to_filename
        #: key -> name relative to the folder ('/'-separated), for keys given one.
        self.names: Dict[Hashable, str] = {}
        #: key that no longer has a file -> its name, reserved until :meth:`settle`.
        self.released: Dict[Hashable, str] = {}
        self._taken: Dict[str, Hashable] = {}  # folded name -> key owning it
        self._folders: Dict[str, int] = {}  # folded folder -> names under it
        self._emptied: Set[str] = set()  # folders no name is under any more

    def full_path(self, name: str) -> str:
        """Absolute path of a relative name."""
        return self._prefix + (name if os.sep == "/" else name.replace("/", os.sep))

    def relative(self, path: str) -> str:
        """The relative ('/'-separated) name of an absolute path in the folder."""
        name = path[len(self._prefix):]
        return name if os.sep == "/" else name.replace(os.sep, "/")

    def filename(self, key: Hashable) -> str:
        """Absolute path of ``key``'s file, or of the one it would get."""
        name = self.names.get(key)
        if name is None:
            name = self.released.get(key) or self._choose(key)
        return self.full_path(name)

    def prepare(self, key: Hashable) -> str:
        """Give ``key`` a name if it has none yet; its absolute file path."""
        name = self.names.get(key)
        if name is None:
            name = self.released.pop(key, None) or self._choose(key)
            self.claim(key, name)
        return self.full_path(name)

    def _choose(self, key: Hashable) -> str:
        suggested = safe_name(self.key_to_filename(key))
        if suggested is not None and self._fits(suggested) and \
                self._is_free(suggested, key):
            return suggested
        base = hashed_name(key)
        for i in range(1000):
            name = f"{base}-{i}" if i else base
            if self._is_free(name, key):
                return name
        raise OSError(errno.EEXIST, f"no free file name for key {key!r} in {self.folder}")

    def _fits(self, name: str) -> bool:
        """Is the path of ``name``, also as a temporary name, short enough for
        the system (a tuple key of many parts may not be)?"""
        length = len(self._prefix.encode("utf-8", "surrogatepass")) + \
            len(name.encode("utf-8", "surrogatepass")) + TEMP_EXTRA
        return length < MAX_PATH

    def _is_free(self, name: str, key: Hashable) -> bool:
        folded = fold(name)
        owner = self._taken.get(folded, key)
        if owner is not key and owner != key:
            return False
        if folded in self._folders:
            return False
        parts = folded.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in self._taken:
                return False
        # A file we do not own (a stray or the user's) is never overwritten.
        return folded in self._taken or not os.path.lexists(self.full_path(name))

    def claim(self, key: Hashable, name: str) -> None:
        """``name`` is ``key``'s (as an index or the journal says)."""
        self.names[key] = name
        folded = fold(name)
        if folded in self._taken:
            return
        self._taken[folded] = key
        parts = folded.split("/")
        for i in range(1, len(parts)):
            folder = "/".join(parts[:i])
            self._folders[folder] = self._folders.get(folder, 0) + 1

    def unclaim(self, name: str) -> None:
        """``name`` is free again (its folders, if now empty, are noted)."""
        folded = fold(name)
        if self._taken.pop(folded, None) is None:
            return
        parts = folded.split("/")
        for i in range(1, len(parts)):
            folder = "/".join(parts[:i])
            count = self._folders[folder] - 1
            if count:
                self._folders[folder] = count
            else:
                del self._folders[folder]
                self._emptied.add("/".join(name.split("/")[:i]))

    def drop(self, key: Hashable) -> None:
        """``key`` has no name, at once (replaying the journal)."""
        name = self.names.pop(key, None)
        if name is not None:
            self.unclaim(name)

    def release(self, key: Hashable) -> None:
        """``key`` no longer has a file: its name stays reserved for it until
        :meth:`settle`."""
        name = self.names.pop(key, None)
        if name is not None:
            self.released[key] = name

    def settle(self) -> None:
        """The index on disk names no released name any more: free them."""
        for key, name in self.released.items():
            if self.names.get(key) != name:
                self.unclaim(name)
        self.released.clear()

    def emptied(self) -> List[str]:
        """The folders (relative) no name is under any more, deepest first;
        forgotten here once given."""
        folders = [f for f in sorted(self._emptied, key=lambda f: -f.count("/"))
                   if fold(f) not in self._folders]
        self._emptied.clear()
        return folders

    def clear(self) -> None:
        """No key has a name."""
        self.names.clear()
        self.released.clear()
        self._taken.clear()
        self._folders.clear()
        self._emptied.clear()
