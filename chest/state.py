"""A small state in one YAML file: every change on disk when the call returns.

:class:`State` is persistedstate's kind of object done with chest's care: a
mapping with attribute access (``s.last_id = 5``), whose path is one UTF-8
YAML file a person can read and edit before opening, and which is the whole
state at every moment (copy it, also while the state is open, and you copy
the state).

How a change is kept
    The file is a YAML block mapping. A change appends one line to it,
    ``key: value`` (one ``write``; ``durable=True`` also fsyncs it): YAML
    readers take the last of repeated keys, so the file still reads as the
    new state. A deletion, or more appended lines than the document itself
    (and at least 64 KiB), rewrites the file whole (written beside it,
    renamed into place); so does :meth:`State.close`, which leaves a plain
    mapping with sorted keys (``bool: true``, ``string: Ahoi``). Scalars are
    written without PyYAML (an increment of a counter costs a few us); other
    values in YAML's flow style.
Values YAML cannot carry
    Tuples, sets, frozensets and bytes get tags of their own (``!tuple``,
    ``!set``, ``!frozenset``, ``!bytes``); anything else a ``!pickle`` tag
    (base64). They round-trip; opening the file trusts it as code, as
    opening a chest does.
Dicts and lists in it
    come back as views whose changes are written (``s.items.append(x)``,
    ``s["cfg"]["n"] += 1``, ``del``, ``insert``, ``setdefault``): each
    change appends the whole top-level value it is in.
A crash
    A line cut short by a crash (power loss without ``durable``) is dropped
    when the file is opened; every change whose call returned is there.

Needs PyYAML (``pip install 'chest[yaml]'``).

Examples
--------
>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "state.yaml")
>>> s = State(path, last_id=0, seen=[])
>>> s.last_id += 1
>>> s.seen.append("a")
>>> s.close()
>>> print(open(path).read(), end="")
last_id: 1
seen:
- a
>>> State(path, last_id=100).last_id     # defaults only fill missing keys
1
"""
from __future__ import annotations

import base64
import fcntl
import functools
import json
import os
import pickle
import re
import threading
from collections.abc import MutableMapping, MutableSequence
from typing import Any, Callable, Dict, Iterator, List, Optional, Union

from .errors import ChestLockedError, FolderError
from .files import FILE_MODE, remove_quietly, sync_dir, temp_name
from .lock import lock_holder

try:  # an extra: chest[yaml]
    import yaml
    _Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    _Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
except ImportError:  # pragma: no cover - depends on the installation
    yaml = None  # type: ignore[assignment]

__all__ = ["State"]

#: Appended lines may take this many bytes before the file is rewritten whole
#: (and more than the document itself).
FOLD_AFTER = 64 * 1024
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SCALARS = (bool, int, float, str, type(None))


# -- YAML with the tags of the values it cannot carry ------------------------------
if yaml is not None:
    class _StateLoader(_Loader):
        """YAML's safe loader, and chest's tags."""

    class _StateDumper(_Dumper):
        """YAML's safe dumper, and chest's tags."""

    def _sequence(tag: str, make: Callable[[list], Any]) -> None:
        _StateLoader.add_constructor(
            tag, lambda loader, node: make(loader.construct_sequence(node, deep=True)))

    _sequence("!tuple", tuple)
    _sequence("!set", set)
    _sequence("!frozenset", frozenset)
    _StateLoader.add_constructor(
        "!bytes", lambda loader, node: base64.b64decode(loader.construct_scalar(node)))
    _StateLoader.add_constructor(
        "!pickle", lambda loader, node: pickle.loads(
            base64.b64decode(loader.construct_scalar(node))))
    _StateDumper.add_representer(
        tuple, lambda d, v: d.represent_sequence("!tuple", list(v)))
    _StateDumper.add_representer(
        set, lambda d, v: d.represent_sequence("!set", sorted(v, key=repr)))
    _StateDumper.add_representer(
        frozenset, lambda d, v: d.represent_sequence("!frozenset", sorted(v, key=repr)))
    _StateDumper.add_representer(
        bytes, lambda d, v: d.represent_scalar("!bytes", base64.b64encode(v).decode()))
    _StateDumper.add_multi_representer(
        object, lambda d, v: d.represent_scalar(
            "!pickle", base64.b64encode(pickle.dumps(v, protocol=5)).decode()))


def _scalar(value: Any) -> Optional[str]:
    """A scalar as YAML, written without PyYAML (None if not a plain scalar)."""
    t = type(value)
    if t is bool:
        return "true" if value else "false"
    if t is int:
        return str(value)
    if t is float:
        if value != value or value in (float("inf"), float("-inf")):
            return None  # (.nan, .inf: PyYAML)
        return repr(value)
    if value is None:
        return "null"
    if t is str:
        return json.dumps(value)  # a JSON string is a YAML double-quoted scalar
    return None


@functools.lru_cache(maxsize=1024)
def _key(key: str) -> str:
    return key if _PLAIN_KEY.match(key) and key not in (
        "true", "false", "null", "yes", "no", "on", "off", "y", "n") else json.dumps(key)


def _line(key: str, value: Any) -> str:
    """``key: value``, one line of a YAML block mapping."""
    text = _scalar(value)
    if text is None:
        text = yaml.dump(_plain(value), Dumper=_StateDumper, default_flow_style=True,
                         width=2**31 - 1, allow_unicode=True).rstrip("\n")
        if text.endswith("\n..."):  # a document end marker after a scalar
            text = text[:-4]
        text = text.replace("\n", " ")
    return f"{_key(key)}: {text}\n"


def _plain(value: Any) -> Any:
    """``value`` without the state's views (what they show)."""
    if isinstance(value, _View):
        return _plain(value._target)
    if type(value) is dict:
        return {k: _plain(v) for k, v in value.items()}
    if type(value) is list:
        return [_plain(v) for v in value]
    return value


# -- views of dicts and lists in the state ------------------------------------------
class _View:
    """A dict or list inside the state: changes are written through."""

    def __init__(self, state: "State", top: str, target: Any) -> None:
        self._state = state
        self._top = top
        self._target = target

    def _wrap(self, value: Any) -> Any:
        return self._state._view(self._top, value)

    def _changed(self) -> None:
        self._state._write_key(self._top)

    def __eq__(self, other: object) -> bool:
        return self._target == (other._target if isinstance(other, _View) else other)

    def __repr__(self) -> str:
        return repr(self._target)

    __hash__ = None  # type: ignore[assignment]


class _DictView(_View, MutableMapping):
    def __getitem__(self, key: Any) -> Any:
        return self._wrap(self._target[key])

    def __setitem__(self, key: Any, value: Any) -> None:
        with self._state._lock:
            self._target[key] = _plain(value)
            self._changed()

    def __delitem__(self, key: Any) -> None:
        with self._state._lock:
            del self._target[key]
            self._changed()

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._target))

    def __len__(self) -> int:
        return len(self._target)


class _ListView(_View, MutableSequence):
    def __getitem__(self, i: Any) -> Any:
        return self._wrap(self._target[i])

    def __setitem__(self, i: Any, value: Any) -> None:
        with self._state._lock:
            self._target[i] = _plain(list(value)) if isinstance(i, slice) else _plain(value)
            self._changed()

    def __delitem__(self, i: Any) -> None:
        with self._state._lock:
            del self._target[i]
            self._changed()

    def __len__(self) -> int:
        return len(self._target)

    def insert(self, i: int, value: Any) -> None:
        with self._state._lock:
            self._target.insert(i, _plain(value))
            self._changed()

    def sort(self, **kwargs: Any) -> None:
        with self._state._lock:
            self._target.sort(**kwargs)
            self._changed()


# -- the state ------------------------------------------------------------------------
class State(MutableMapping):
    """A small persistent state in one YAML file, with attribute access.

    Parameters
    ----------
    path : str
        The YAML file (made if missing; its folder must exist).
    durable : bool, keyword only
        fsync every change (and the folder when the file is rewritten).
    **defaults
        Values for keys the file does not have yet.

    ``s.name`` reads a key (AttributeError if missing), ``s.name = v`` sets
    it; names starting with ``_`` are plain attributes. A stored name wins
    over the mapping's methods: with a key ``items``, ``s.items`` is its
    value (``State.items(s)`` the method). One process at a
    time: another gets :class:`~chest.errors.ChestLockedError`.
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], *, durable: bool = False,
                 **defaults: Any) -> None:
        if yaml is None:
            raise ImportError("chest.State needs PyYAML: pip install 'chest[yaml]'")
        object.__setattr__(self, "_lock", threading.RLock())
        self._path = os.path.abspath(os.fspath(path))
        self._durable = durable
        self._fd: Optional[int] = None
        self._data: Dict[str, Any] = {}
        self._appended = 0
        self._document = 0
        self._open()
        missing = {k: v for k, v in defaults.items() if k not in self._data}
        for key, value in missing.items():
            self[key] = value

    # -- the file --------------------------------------------------------------------
    def _open(self) -> None:
        folder = os.path.dirname(self._path)
        if not os.path.isdir(folder):
            raise FolderError(f"{folder}: no such folder for the state {self._path}")
        fd = os.open(self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ChestLockedError(self._path, lock_holder(self._path)) from None
        self._fd = fd
        try:
            with open(self._path, "rb") as f:
                text = f.read().decode("utf-8")
            self._data = self._parse(text)
        except BaseException:
            self._release()
            raise
        self._document = len(text.encode("utf-8"))
        stripped = text.lstrip()
        if text and (not text.endswith("\n") or stripped.startswith(("{", "---", "%"))
                     or "\n..." in text):
            # A line cut by a crash, or a document lines cannot be appended
            # to (flow style, document markers): written again, as parsed.
            self._rewrite()

    def _parse(self, text: str) -> Dict[str, Any]:
        try:
            data = yaml.load(text, Loader=_StateLoader) if text else None
        except yaml.YAMLError as e:
            if text.endswith("\n"):
                raise FolderError(f"cannot read the state {self._path}: {e}") from e
            # The last line was cut short by a crash: it is dropped.
            return self._parse(text[:text.rfind("\n") + 1])
        if data is None:
            return {}
        if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
            raise FolderError(f"cannot read the state {self._path}: it is not a "
                              f"mapping of names to values")
        return data

    def _append(self, text: str) -> None:
        data = text.encode("utf-8")
        if self._fd is None:
            self._open_again()
        fd: int = self._fd  # type: ignore[assignment]  # (opened again above)
        written = 0
        try:
            written = os.write(fd, data)
            while written < len(data):  # a short write: the rest
                written += os.write(fd, data[written:])
            if self._durable:
                os.fsync(fd)
        except BaseException:
            try:  # cut what was written of this line off
                os.ftruncate(fd, os.fstat(fd).st_size - written)
            except OSError:
                pass
            raise
        self._appended += len(data)

    def _rewrite(self) -> None:
        """Write the state whole, beside the file, and rename it into place."""
        text = yaml.dump(_plain(self._data), Dumper=_StateDumper, sort_keys=True,
                         default_flow_style=False, allow_unicode=True) if self._data else ""
        data = text.encode("utf-8")
        folder, base = os.path.split(self._path)
        tmp = temp_name(folder, base)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            try:
                os.write(fd, data)
                if self._durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            mode = os.stat(self._path).st_mode & 0o777 if os.path.exists(self._path) \
                else FILE_MODE
            os.chmod(tmp, mode)
            new_fd = os.open(tmp, os.O_RDWR | os.O_APPEND)
            fcntl.flock(new_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # before it is seen
            os.replace(tmp, self._path)
        except BaseException:
            remove_quietly(tmp)
            raise
        if self._durable:
            sync_dir(folder)
        self._release()
        self._fd = new_fd
        self._document, self._appended = len(data), 0

    def _open_again(self) -> None:
        with self._lock:
            if self._fd is None:
                self._open()

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # (closing drops the lock)
            self._fd = None

    def _write_key(self, key: str) -> None:
        """Append ``key``'s value (lock held); rewrite the file once the
        appended lines outgrow the document."""
        self._append(_line(key, self._data[key]))
        if self._appended > max(FOLD_AFTER, self._document):
            self._rewrite()

    def _view(self, top: str, value: Any) -> Any:
        if type(value) is dict:
            return _DictView(self, top, value)
        if type(value) is list:
            return _ListView(self, top, value)
        return value

    # -- the mapping -------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self._view(key, self._data[key])

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"a state's keys are names (str), not {type(key).__name__} "
                            f"{key!r}")
        with self._lock:
            old = self._data.get(key, _MISSING)
            self._data[key] = value if type(value) in _SCALARS else _plain(value)
            try:
                self._write_key(key)
            except BaseException:
                if old is _MISSING:
                    del self._data[key]
                else:
                    self._data[key] = old
                raise

    def __delitem__(self, key: str) -> None:
        with self._lock:
            value = self._data.pop(key)
            try:
                self._rewrite()  # YAML has no way to say "deleted" in a line
            except BaseException:
                self._data[key] = value
                raise

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._data))

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    # -- attributes --------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"the state at {self._path} has no {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self[name] = value

    def __delattr__(self, name: str) -> None:
        if name.startswith("_"):
            object.__delattr__(self, name)
            return
        try:
            del self[name]
        except KeyError:
            raise AttributeError(f"the state at {self._path} has no {name!r}") from None

    # -- closing -----------------------------------------------------------------------
    @property
    def path(self) -> str:
        """The state's YAML file."""
        return self._path

    def close(self) -> None:
        """Leave the file a plain mapping with sorted keys; let go of it. The
        state can still be used (it takes the file again)."""
        with self._lock:
            if self._fd is None:
                return
            if self._appended or self._document == 0 and self._data:
                self._rewrite()
            self._release()

    def __enter__(self) -> "State":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"State({self._path!r}, {self._data!r})"


_MISSING = object()


class _KeyOrMethod:
    """A mapping method of :class:`State` that a stored name of the same
    name hides: ``s.items`` is the key "items" if there is one (the method,
    ``State.items(s)``, else). Only these names pay for the look-up: other
    attributes are found as usual, stored names by ``__getattr__``."""

    def __init__(self, name: str, method: Any) -> None:
        self.name = name
        self.method = method

    def __get__(self, state: Any, owner: Any = None) -> Any:
        if state is None:
            return self.method
        data = state.__dict__.get("_data")
        if data is not None and self.name in data:
            return state._view(self.name, data[self.name])
        return self.method.__get__(state, owner)


for _name in ("keys", "items", "values", "get", "pop", "popitem", "clear", "update",
              "setdefault"):
    setattr(State, _name, _KeyOrMethod(_name, getattr(State, _name)))
