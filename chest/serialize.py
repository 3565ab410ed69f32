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
from typing import IO, Any

import cloudpickle

__all__ = ["dump", "load", "load_mapped", "dumps", "loads", "PROTOCOL"]

PROTOCOL = 5


def dump(value: Any, file: IO[bytes]) -> None:
    """Write ``value`` to a binary ``file`` with pickle, or cloudpickle if needed."""
    start = file.tell()
    try:
        pickle.dump(value, file, protocol=PROTOCOL)
    except OSError:
        raise
    except Exception as pickle_error:
        # pickle may have written part of the value before it failed.
        file.seek(start)
        file.truncate()
        try:
            cloudpickle.dump(value, file, protocol=PROTOCOL)
        except OSError:
            raise
        except Exception:
            raise pickle_error from None


def dumps(value: Any) -> bytes:
    """What :func:`dump` would write, as bytes."""
    try:
        return pickle.dumps(value, protocol=PROTOCOL)
    except Exception as pickle_error:
        try:
            return cloudpickle.dumps(value, protocol=PROTOCOL)
        except Exception:
            raise pickle_error from None


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
        if first and not is_buffer:
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
                            mapping = mmap.mmap(file.fileno(), 0,
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
                    _readinto_exact(file, memoryview(buffer))
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
                    self.push(self.memo[arg])
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
