"""File names for keys: what a key suggests, what is safe, what is free.

``key_to_filename`` suggests a name: identifier-like strings keep their
own, tuples become nested folders (every folder prefixed with ``_``),
anything else gets a hash that includes the key's type (so ``1`` and ``'1'``
differ). :func:`safe_name` says whether a name may be used at all: not
empty, not hidden, not absolute, not climbing out of the folder, no part
too long. The store (:mod:`chest.store`) then keeps names unique.

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
"""
from __future__ import annotations

import hashlib
import os
import re
from typing import Any, Hashable, Optional

__all__ = ["key_to_filename", "hashed_name", "safe_name", "fold", "IDENTIFIER",
           "MAX_NAME", "MAX_PATH"]

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
