"""What a chest knows of its keys' stored copies, beside the values.

:class:`Ledger` keeps, per key: the token of the bytes its file (or slot)
holds, by which a value in memory is known to need no write (see
:mod:`chest.fingerprint`); the size a value read back from those bytes took
in memory, so that reading it again does not size it again; its size in
memory when it was written (``spilled_total``); the error of a value that
could not be written (eviction passes it over); and, weakly, a large value
that left memory while something else still held it (a read takes that
object back instead of loading a copy). It keeps books only: no lock (the
caller holds the chest's), no I/O.

>>> from chest.codec import Codec
>>> ledger = Ledger(Codec())
>>> data = Codec().dumps([1, 2])
>>> from chest.fingerprint import bytes_token
>>> ledger.wrote("k", 72, bytes_token(data))
>>> ledger.is_clean("k", [1, 2], {"k": len(data)}), ledger.is_clean("k", [1], {"k": 9})
(True, False)
>>> ledger.kept_read("k", 88, bytes_token(data)); ledger.read_size("k", bytes_token(data))
88
>>> ledger.forget("k"); ledger.is_clean("k", [1, 2], {"k": len(data)})
False
"""
from __future__ import annotations

import copy
import weakref
from typing import Any, Dict, Hashable, Mapping, Optional

from .codec import Codec
from .fingerprint import fingerprint
from .sizeof import nbytes
from .valueio import SMALL_VALUE

__all__ = ["Ledger"]


class Ledger:
    """Per key: the token and read size of its stored copy, its size when
    written, the error of a failed write, and a large value let go."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        #: key -> fingerprint of the value its file holds, where known (taken
        #: when the file was written or first read).
        self.tokens: Dict[Hashable, Any] = {}
        # key -> the size of its value as read back from the bytes its token
        # is of (dropped whenever the token changes): read again, it is not
        # sized again (3 us of a small packed read's 22). Not the size it
        # was set with: a list or dict unpickled holds more room (a small
        # record 559 -> 607 bytes, 1,000 lists 171 -> 195 kB).
        self.read_sizes: Dict[Hashable, int] = {}
        self._generation = nbytes.generation  # (of the sizes kept there)
        #: key -> its size in memory when it was written (``spilled_total``).
        self.spilled_sizes: Dict[Hashable, int] = {}
        #: key in memory whose last write failed -> the error; eviction skips
        #: it until it is set again or flushed.
        self.unwritable: Dict[Hashable, BaseException] = {}
        #: Large values evicted from memory that something else still holds
        #: (a running task, a transfer): read again, the key gets the same
        #: object back instead of a second copy from disk (see :meth:`let_go`).
        self.left: "weakref.WeakValueDictionary[Hashable, Any]" = \
            weakref.WeakValueDictionary()

    def mark_unwritable(self, key: Hashable, error: BaseException) -> None:
        """``key``'s value could not be written: ``error``, kept without its
        traceback (whose frames hold the chest: kept with them, a chest
        dropped without close() lived, and held its folder's lock, until
        the garbage collector found the cycle)."""
        self.unwritable[key] = _detached(error)

    def is_clean(self, key: Hashable, value: Any, files: Mapping[Hashable, int]) -> bool:
        """Does ``key``'s file (one of ``files``) hold ``value`` as it is now?"""
        token = self.tokens.get(key)
        return token is not None and key in files and self.codec.unchanged(token, value)

    def wrote(self, key: Hashable, size: int, token: Any) -> None:
        """``key``'s value, ``size`` bytes in memory, was written; its bytes'
        token (None: unknown)."""
        self.spilled_sizes[key] = size
        self.read_sizes.pop(key, None)
        if token is None:
            self.tokens.pop(key, None)
        else:
            self.tokens[key] = token

    def kept_read(self, key: Hashable, size: int, token: Any, value: Any = None) -> None:
        """A value read back from ``key``'s stored bytes (their ``token``,
        taken now from ``value`` if None) takes ``size`` bytes in memory."""
        known = self.tokens.get(key)
        if known is None or (token is not None and token != known):
            # Not known, or other bytes than those last known (another chest
            # wrote the key since this one was closed): the value read is
            # what its stored copy holds now (kept, it looked changed in
            # place, and a chest only read warned that it was not saved).
            token = fingerprint(value) if token is None else token
            if token is None:
                return
            self.tokens[key] = known = token
        if token == known:
            if self._generation != nbytes.generation:
                # A sizing function registered since: sized again.
                self.read_sizes.clear()
                self._generation = nbytes.generation
            self.read_sizes[key] = size

    def read_size(self, key: Hashable, token: Any) -> Optional[int]:
        """The size a value read from the bytes of ``token`` took when last
        read, if they are still ``key``'s and no sizing was registered since."""
        if token is None or self.tokens.get(key) != token or \
                self._generation != nbytes.generation:
            return None
        return self.read_sizes.get(key)

    def let_go(self, key: Hashable, value: Any, size: int) -> None:
        """``key``'s large ``value`` has left memory, its file holding it:
        remember it weakly, so that while anything else holds it, a read
        takes it back instead of loading a second copy (as dask's
        SpillBuffer does)."""
        if size > SMALL_VALUE:
            try:
                self.left[key] = value
            except TypeError:  # (no weak references to it: a list, a dict)
                pass

    def changed(self, key: Hashable) -> None:
        """``key``'s stored bytes changed (or it left): what was known of them
        goes; its size when written and its failed write stay."""
        self.tokens.pop(key, None)
        self.read_sizes.pop(key, None)

    def forget(self, key: Hashable) -> None:
        """``key`` was set again or deleted: nothing is known of it (but its
        size when written, dropped with its file)."""
        if self.left:
            self.left.pop(key, None)
        if self.unwritable:
            self.unwritable.pop(key, None)
        self.tokens.pop(key, None)
        self.read_sizes.pop(key, None)

    def clear(self) -> None:
        self.tokens.clear()
        self.read_sizes.clear()
        self.spilled_sizes.clear()
        self.unwritable.clear()
        self.left.clear()


def _detached(error: BaseException) -> BaseException:
    """A copy of ``error`` without a traceback, cause or context; ``error``
    itself if it cannot be copied so (what is raised keeps its traceback)."""
    try:
        copied = copy.copy(error)
    except Exception:
        return error
    if type(copied) is not type(error) or str(copied) != str(error):
        return error
    copied.__traceback__ = None
    copied.__cause__ = copied.__context__ = None
    return copied
