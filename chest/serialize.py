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

import pickle
from typing import IO, Any

import cloudpickle

__all__ = ["dump", "load", "PROTOCOL"]

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


def load(file: IO[bytes]) -> Any:
    """Read one value written by :func:`dump` from a binary ``file``."""
    return pickle.load(file)
