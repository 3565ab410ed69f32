"""A chest's value format: ``dump`` / ``load``, the ``open`` of its files and
their mode, and what follows from them.

:class:`Codec` turns a value into the bytes its file holds and back, and
gives the token that tells a value read from a file unchanged since (see
:mod:`chest.fingerprint`). With the defaults (pickle protocol 5 through
plain unbuffered files) the fast paths of :mod:`chest.serialize` apply; a
user's format (``json.dump`` / ``json.load`` in mode ``'t'``, say) goes
through an in-memory file. :func:`open_many` is the default way
:meth:`Chest.prefetch <chest.Chest.prefetch>` opens many files at once.

>>> import json
>>> codec = Codec(json.dump, json.load, mode="t")
>>> codec.dumps({"a": [1, 2]})
b'{"a": [1, 2]}'
>>> codec.loads(b'{"a": [1, 2]}')
{'a': [1, 2]}
>>> Codec().default, codec.default
(True, False)
"""
from __future__ import annotations

import builtins
import io
import pickle
from contextlib import contextmanager
from typing import IO, Any, Callable, Hashable, Iterator, List, Optional, Union

from . import serialize
from .fingerprint import bytes_token, fingerprint, unchanged

__all__ = ["Codec", "open_many"]


@contextmanager
def open_many(filenames: List[str], mode: str = "rb") -> Iterator[List[IO[Any]]]:
    """Open every file of ``filenames``; close them all on leaving."""
    files: List[IO[Any]] = []
    try:
        for filename in filenames:
            files.append(builtins.open(filename, mode=mode))
        yield files
    finally:
        for f in files:
            f.close()


class Codec:
    """How a chest's values are written and read: values to bytes and back,
    and the token that knows a value unchanged."""

    def __init__(self, dump: Callable[[Any, IO[Any]], None] = serialize.dump,
                 load: Callable[[IO[Any]], Any] = serialize.load,
                 open: Callable[..., IO[Any]] = builtins.open,
                 open_many: Callable[..., Any] = open_many, mode: str = "b") -> None:
        if mode not in ("b", "t"):
            raise ValueError(f"mode must be 'b' (binary) or 't' (text), not {mode!r}")
        self.dump = dump
        self.load = load
        self.open = open
        self.open_many = open_many
        self.mode = mode
        #: The default pickle format through plain files: the fast paths of
        #: :mod:`chest.serialize` apply (bytes in one call, arrays streamed).
        self.default = (open is builtins.open and dump is serialize.dump
                        and load is serialize.load and mode == "b")
        #: ``dumps(value)``: what ``dump`` writes of ``value``, as bytes;
        #: ``loads(data)``: what ``load`` reads from them. The defaults are
        #: :mod:`chest.serialize`'s own (no call in between: 0.1 us a value).
        self.dumps: Callable[[Any], bytes] = \
            serialize.dumps if self.default else self._dumps_through_file
        self.loads: Callable[[bytes], Any] = \
            serialize.loads if self.default else self._loads_through_file

    def _dumps_through_file(self, value: Any) -> bytes:
        buffer: Union[io.StringIO, io.BytesIO] = \
            io.StringIO() if self.mode == "t" else io.BytesIO()
        self.dump(value, buffer)
        data = buffer.getvalue()
        return data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data

    def _loads_through_file(self, data: bytes) -> Any:
        return self.load(io.StringIO(data.decode("utf-8", "surrogatepass"))
                         if self.mode == "t" else io.BytesIO(data))

    def token(self, value: Any) -> Optional[Hashable]:
        """For a value read with this format: its fingerprint, else the hash
        of what ``dump`` writes of it now (a json value, say), so that
        evicting it unchanged writes nothing. None if ``dump`` cannot write
        to memory."""
        token = fingerprint(value)
        if token is None:
            try:
                token = bytes_token(self.dumps(value))
            except Exception:
                return None
        return token

    def unchanged(self, token: Hashable, value: Any) -> bool:
        """Does ``value`` still match ``token`` (its file's, see
        :func:`chest.fingerprint.unchanged`): would it be written as it is?"""
        if self.default and type(token) is tuple and token[0] == "bytes":
            # Pickled by C alone: dump writes the same bytes for any value C's
            # pickler takes (its checks only refuse some), and a value read
            # back is one that was written. (0.4 us less than dumps: a
            # small value read evicts another, checked so, on every read.)
            try:
                data = pickle.dumps(value, protocol=serialize.PROTOCOL)
            except Exception:
                return unchanged(token, value, self.dumps)
            if bytes_token(data) != token:
                return False
            if serialize.names_a_class(data):
                # It may hold an object bound to memory (registered after
                # the file was written): dump, which refuses those, decides.
                return unchanged(token, value, self.dumps)
            return True
        return unchanged(token, value, self.dumps)

    def reads_files_of(self, other: "Codec") -> bool:
        """Can this format read the files ``other`` writes as they are (so
        that they may be hard-linked from one chest to the other)?"""
        return (other.dump is self.dump and other.load is self.load
                and other.mode == self.mode and other.open is self.open)
