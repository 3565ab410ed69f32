"""The default ``dump`` and ``load`` of a chest: pickle protocol 5.

Protocol 5 lets the pickler hand a numpy array's memory straight to the file
(no copy into a bytes object) and lets the unpickler read straight into the
new array, so with an unbuffered file a value moves at disk speed. Values
that plain pickle refuses (lambdas, classes defined in a function) go
through cloudpickle; its output is ordinary pickle data, so a value file is
always readable with ``pickle.load`` alone (cloudpickle installed).

Examples
--------
>>> import io
>>> f = io.BytesIO()
>>> dump(lambda x: x + 1, f)
>>> _ = f.seek(0)
>>> load(f)(1)
2
"""
from __future__ import annotations

import io
import mmap
import pickle
import weakref
from typing import IO, Any, Dict, Optional, Set, Union

import cloudpickle

from .errors import BoundToMemoryError
from .fingerprint import FileMap

__all__ = ["dump", "load", "load_mapped", "dumps", "loads", "names_a_class", "PROTOCOL",
           "keep_in_memory", "BoundToMemoryError"]

PROTOCOL = 5


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


_BOUND_NAMES: Set[str] = set()
_BOUND_TYPES: Set[type] = {weakref.finalize}
_CHECKED: Dict[type, Optional[str]] = {}  # type -> why it is bound, or None


def keep_in_memory(cls: Union[type, str]) -> Union[type, str]:
    """Never write values holding a ``cls`` (a type or ``"module.QualName"``)
    to disk: they stay in memory, over the budget if need be.

    Classes that define ``__del__`` are kept in memory without being named
    here; name the others whose objects must not be copied, e.g. handles
    whose resources a ``weakref.finalize`` frees. Usable as a decorator.

    >>> class Handle:
    ...     pass
    >>> _ = keep_in_memory(Handle)
    >>> dumps([Handle()])
    Traceback (most recent call last):
    ...
    chest.errors.BoundToMemoryError: the value holds a ...Handle, named with chest.keep_in_memory: it stays in memory (see chest.keep_in_memory)
    """
    if isinstance(cls, str):
        _BOUND_NAMES.add(cls)
    else:
        _BOUND_TYPES.add(cls)
    _CHECKED.clear()
    return cls


def _why_bound(cls: type) -> Optional[str]:
    """Why objects of ``cls`` must stay in memory; None if they need not."""
    try:
        return _CHECKED[cls]
    except KeyError:
        pass
    why = None
    if cls in _BOUND_TYPES or _qualname(cls) in _BOUND_NAMES or any(
            base in _BOUND_TYPES or _qualname(base) in _BOUND_NAMES
            for base in cls.__mro__[1:]):
        why = "named with chest.keep_in_memory"
    elif getattr(cls, "__del__", None) is not None:
        why = "whose __del__ would run once the chest dropped it from memory"
    _CHECKED[cls] = why
    return why


def _check(obj: Any) -> Any:
    # Called by the pickler for every object but None, bools and exact
    # ints, floats, str, bytes, dicts, lists, tuples, sets: ~1 us more per
    # small value, nothing measurable for arrays (one call each).
    why = _why_bound(type(obj))
    if why is not None:
        raise BoundToMemoryError(type(obj), why)
    return NotImplemented


class _Pickler(pickle.Pickler):
    """pickle's C pickler, refusing objects that must stay in memory."""

    def reducer_override(self, obj: Any) -> Any:
        return _check(obj)


class _CloudPickler(cloudpickle.Pickler):
    """cloudpickle's pickler, refusing objects that must stay in memory."""

    def reducer_override(self, obj: Any) -> Any:
        _check(obj)
        return super().reducer_override(obj)


def _is_plain_file(file: IO[bytes]) -> bool:
    """Can ``file`` be cut back after a failed pickle (a file on disk opened
    by ``open`` or chest itself)?"""
    return isinstance(file, (io.FileIO, io.BufferedWriter, io.BufferedRandom))


def dump(value: Any, file: IO[bytes]) -> None:
    """Write ``value`` to a binary ``file`` with pickle, or cloudpickle if needed.

    Raises :class:`BoundToMemoryError` for a value holding an object that
    must stay in memory (see :func:`keep_in_memory`).
    """
    if not _is_plain_file(file):
        # A gzip or other wrapped file cannot be cut back after pickle has
        # failed half-way: pickle in memory, then write the bytes.
        file.write(dumps(value))
        return
    start = file.tell()
    try:
        _Pickler(file, PROTOCOL).dump(value)
    except (OSError, BoundToMemoryError):
        raise
    except Exception as pickle_error:
        # pickle may have written part of the value before it failed.
        file.seek(start)
        file.truncate()
        try:
            _CloudPickler(file, PROTOCOL).dump(value)
        except (OSError, BoundToMemoryError):
            raise
        except Exception:
            raise pickle_error from None


# Values of these types hold nothing that could be bound to memory: pickled
# directly (0.3 us against 1.5 us with the checking pickler, for an int).
_PLAIN = frozenset({int, float, str, bytes, bool, type(None), complex})


# Protocol 5 names a class only with STACK_GLOBAL (or an EXT code of
# copyreg's registry): a pickle without these bytes holds builtins only.
_NAMES_A_CLASS = b"\x82\x83\x84\x93"


def names_a_class(data: bytes) -> bool:
    """May the pickle ``data`` name a class (else it holds builtins only)?"""
    # (Deleting them and comparing lengths: 0.29 us for a small record's
    # 64 bytes, against 0.56 for a regular expression's search.)
    return len(data.translate(None, _NAMES_A_CLASS)) != len(data)


def dumps(value: Any) -> bytes:
    """What :func:`dump` would write, as bytes."""
    t = type(value)
    if t in _PLAIN:
        return pickle.dumps(value, protocol=PROTOCOL)
    if t is dict or t is list or t is tuple:
        # A record of builtins (the common small value) needs no check for
        # objects bound to memory: pickled by C alone, then its bytes are
        # searched for a class (1.2 us for a small dict, against 3.3 with
        # the checking pickler). Those bytes may also be a str's or an
        # int's: then the value is pickled again, with the check.
        try:
            data = pickle.dumps(value, protocol=PROTOCOL)
        except Exception:
            data = None
        if data is not None and not names_a_class(data):
            return data
    f = io.BytesIO()
    try:
        _Pickler(f, PROTOCOL).dump(value)
    except BoundToMemoryError:
        raise
    except Exception as pickle_error:
        f = io.BytesIO()
        try:
            _CloudPickler(f, PROTOCOL).dump(value)
        except BoundToMemoryError:
            raise
        except Exception:
            raise pickle_error from None
    return f.getvalue()


loads = pickle.loads


def load(file: IO[bytes]) -> Any:
    """Read one value written by :func:`dump` from a binary ``file``.

    Large numpy arrays are read straight into memory that numpy allocates
    (huge pages where the system offers them: several times faster to fill
    than the ``bytearray`` pickle would make); any other data is read by
    ``pickle.load``.
    """
    return _load(file, mapped=False)


def load_mapped(file: IO[bytes]) -> Any:
    """As :func:`load`, but large numpy arrays are read-only memory maps of
    the file (as ``np.load(mmap_mode='r')``): nothing is read until used.

    The map keeps the file's data alive even if the file is then replaced or
    removed.
    """
    return _load(file, mapped=True)


def _load(file: IO[bytes], mapped: bool) -> Any:
    if hasattr(file, "readinto") and hasattr(file, "seek"):
        start = file.tell()
        try:
            return _load_into_numpy_memory(file, mapped)
        except _NoFastPath:
            file.seek(start)
    return pickle.load(file)


class _NoFastPath(Exception):
    pass


_PROTO_5_FRAME = b"\x80\x05\x95"
_BYTEARRAY8 = 0x96
_NEXT_BUFFER = b"\x97"
_FROMBUFFER = {("numpy._core.numeric", "_frombuffer"),
               ("numpy.core.numeric", "_frombuffer")}
#: Most bytes of opcodes (not array data) parsed in Python before giving up.
_MAX_PARSED = 1 << 20
#: Values whose first buffer is smaller are read by pickle.load. Measured
#: here: below 32 MiB, malloc reuses freed memory and pickle.load is up to
#: 2x faster (it parses in C; a pandas frame of 4 MB, 1.2 against 2.1 ms);
#: from 32 MiB on, each bytearray is fresh memory, filled 2.3x slower than
#: numpy's (32 MiB: 32 against 14 ms).
_FAST_FROM = 32 * 2**20


def _load_into_numpy_memory(file: IO[bytes], mapped: bool) -> Any:
    """Unpickle, handing the data of numpy arrays over as out-of-band buffers.

    pickle writes a large buffer as an unframed ``BYTEARRAY8`` header and the
    data, right after a frame. Each such buffer that is the first argument of
    numpy's ``_frombuffer`` is replaced by ``NEXT_BUFFER`` and read into a
    numpy buffer (or a view of the file mapped in memory, if ``mapped``);
    the rest of the stream is what ``pickle.load`` would read.
    """
    try:
        import numpy
    except ImportError:
        raise _NoFastPath from None
    head = file.read(11)
    if len(head) != 11 or head[:3] != _PROTO_5_FRAME:
        raise _NoFastPath
    parts = [head[:2]]
    buffers: list = []
    stack = _OpcodeStack()
    size = int.from_bytes(head[3:], "little")
    first = True
    mapping = None
    while True:
        body = _read_exact(file, size)
        following = file.read(9)
        is_buffer = len(following) == 9 and following[0] == _BYTEARRAY8
        if first and not (is_buffer and (
                mapped or int.from_bytes(following[1:], "little") >= _FAST_FROM)):
            raise _NoFastPath  # no large buffer up front: plain pickle.load
        first = False
        if not stack.feed(body):
            raise _NoFastPath
        parts.append(body)
        if is_buffer:
            n = int.from_bytes(following[1:], "little")
            if stack.calls_frombuffer():
                if mapped:
                    if mapping is None:
                        try:
                            mapping = FileMap(file.fileno(), 0,
                                              access=mmap.ACCESS_READ)
                        except (OSError, ValueError):  # not a file on disk
                            raise _NoFastPath from None
                    offset = file.tell()
                    if offset + n > len(mapping):
                        raise _NoFastPath
                    buffer = numpy.frombuffer(mapping, numpy.uint8, n, offset)
                    file.seek(n, io.SEEK_CUR)
                else:
                    buffer = numpy.empty(n, numpy.uint8)
                    _readinto_exact(file, memoryview(buffer))  # type: ignore[arg-type]
                parts.append(_NEXT_BUFFER)
                buffers.append(buffer)
            else:
                parts += [following, _read_exact(file, n)]
            stack.push(None)
            following = file.read(9)
        if len(following) < 9 or following[0] != 0x95:
            parts.append(following + file.read())
            break
        size = int.from_bytes(following[1:], "little")
    return pickle.loads(b"".join(parts), buffers=buffers)


class _OpcodeStack:
    """Just enough of the unpickler's stack and memo to recognise a call of
    numpy's ``_frombuffer`` right before a ``BYTEARRAY8``."""

    def __init__(self) -> None:
        self.stack: list = []
        self.memo: list = []
        self.parsed = 0

    def push(self, value: Any) -> None:
        self.stack.append(value)
        del self.stack[:-4]

    def feed(self, ops: bytes) -> bool:
        """Follow complete opcodes; False if they cannot be followed."""
        import pickletools

        self.parsed += len(ops)
        if self.parsed > _MAX_PARSED:
            return False
        self.last = None
        try:
            for op, arg, _ in pickletools.genops(ops + b"."):
                name = op.name
                if name == "STOP":
                    break
                self.last = name
                if name == "MEMOIZE":
                    self.memo.append(self.stack[-1] if self.stack else None)
                elif name in ("BINGET", "LONG_BINGET"):
                    self.push(self.memo[int(arg)])  # type: ignore[arg-type]
                elif name == "STACK_GLOBAL":
                    module, attr = ([None, None] + self.stack)[-2:]
                    self.push(("global", module, attr))
                elif name == "MARK":
                    pass
                elif op.stack_after and not op.stack_before:
                    self.push(arg if isinstance(arg, str) else None)
                else:
                    self.push(None)
        except Exception:
            return False
        return True

    def calls_frombuffer(self) -> bool:
        """Is the value about to be pushed the first argument of _frombuffer?"""
        top = self.stack[-1] if self.stack else None
        return self.last == "MARK" and isinstance(top, tuple) and \
            (top[1], top[2]) in _FROMBUFFER


def _read_exact(file: IO[bytes], n: int) -> bytes:
    data = file.read(n)
    if len(data) != n:
        raise _NoFastPath
    return data


def _readinto_exact(file: IO[bytes], view: memoryview) -> None:
    done = 0
    while done < len(view):
        n = file.readinto(view[done:])  # type: ignore[attr-defined]
        if not n:
            raise _NoFastPath
        done += n
