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
    values in YAML's flow style, their strings double-quoted (so that a line
    break is ``\\n``, not a fold across lines). A change that one line cannot
    hold (a key longer than YAML's 1024 characters) rewrites the file.
Values YAML cannot carry
    Tuples, sets, frozensets and bytes get tags of their own (``!tuple``,
    ``!set``, ``!frozenset``, ``!bytes``); anything else a ``!pickle`` tag
    (base64). They round-trip; opening the file trusts it as code, as
    opening a chest does.
Dicts and lists in it
    come back as views whose changes are written (``s.items.append(x)``,
    ``s["cfg"]["n"] += 1``, ``del``, ``insert``, ``setdefault``): each
    call appends the whole top-level value it is in, once (``extend``,
    ``update``, ``clear``, ``+=``: one line, all of the call or none of it
    after a crash); a change that cannot be written is undone. What they
    give back is plain, none of it the state's: ``copy()``, ``copy.copy``,
    ``pickle``, a slice, ``+``, ``*``, ``|``, ``pop()``; ``s.to_dict()`` is
    the whole state so (``dict(s)`` holds views). Not dicts and lists
    themselves: ``json.dumps(s.cfg)`` needs ``s.cfg.copy()``. Nested dicts
    keep their order in the file; only the top-level keys are sorted. A
    value that holds itself (a list in itself) is refused (ValueError).
A crash
    Appended lines begin with their key double-quoted (``"n": 1234``); a
    person's lines and a rewritten file's have plain keys. A last line
    without its line break that begins as an appended line does (cut short
    by a power loss without ``durable``, or by a copy taken while it was
    appended: ``"n": 12`` of ``"n": 1234`` would read as a value never
    set), or that YAML cannot read (left unfinished by a person), is left
    out when the file is read, with a warning, and kept in
    ``<path>.dropped``; every change whose call returned is there. A
    person's last ``n: 5`` without a line break is read. The lock is taken on the file at the path: one
    that a rewrite replaced is let go of and the new one locked. A rewrite
    that a crash stopped before its rename leaves ``.tmp.<name>.<hex>``
    beside the file: the next writer to open it removes it. A reader
    (``readonly=True``) that finds a last line without its line break reads
    again for up to ~50 ms: it may be a line being appended. A path that is
    a symlink: its target is the file (rewritten in place of the link).
Objects held twice
    are written twice (no YAML anchors: one repeated in two appended lines
    would make the file unreadable); a person's alias (``b: *a``) gives
    each key a list or dict of its own.

Needs PyYAML (``pip install 'chest[yaml]'``).

Examples
--------
>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "state.yaml")
>>> s = State(path, last_id=0, seen=[])
>>> s.last_id += 1
>>> s.seen.append("a")
>>> s.to_dict()                          # a plain copy
{'last_id': 1, 'seen': ['a']}
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
import copy
import fcntl
import functools
import json
import os
import pickle
import re
import threading
import time
import warnings
from collections.abc import Mapping, MutableMapping, MutableSequence
from typing import Any, Callable, Dict, Iterator, Optional, Tuple, Union

from .errors import ChestLockedError, ChestWarning, FolderError, ReadOnlyError
from .files import FILE_MODE, remove_quietly, sync_dir, temp_name
from .lock import who_holds

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
_SCALARS = (bool, int, float, str, type(None))
#: How every appended line begins: its key, double-quoted (a person's file
#: and a rewritten one have plain keys, so a last line without its line
#: break that begins so was cut short while it was appended; a person's
#: last ``n: 5`` without one is read as it is).
_APPENDED = re.compile(r'"')


# -- YAML with the tags of the values it cannot carry ------------------------------
if yaml is not None:
    class _StateLoader(_Loader):
        """YAML's safe loader, and chest's tags."""

    class _StateDumper(_Dumper):
        """YAML's safe dumper, and chest's tags. No anchors: an object held
        twice is written twice (an anchor repeated in two appended lines
        makes the file one YAML refuses)."""

        def ignore_aliases(self, data: Any) -> bool:
            return True

    def _sequence(tag: str, make: Callable[[list], Any]) -> None:
        _StateLoader.add_constructor(
            tag, lambda loader, node: make(loader.construct_sequence(node, deep=True)))

    _sequence("!tuple", tuple)
    _sequence("!set", set)
    _sequence("!frozenset", frozenset)
    _StateLoader.add_constructor(
        "!bytes", lambda loader, node: base64.b64decode(loader.construct_scalar(node),
                                                        validate=True))
    _StateLoader.add_constructor(
        "!pickle", lambda loader, node: pickle.loads(
            base64.b64decode(loader.construct_scalar(node), validate=True)))
    _StateDumper.add_representer(
        tuple, lambda d, v: d.represent_sequence("!tuple", list(v)))
    _StateDumper.add_representer(
        set, lambda d, v: d.represent_sequence("!set", sorted(v, key=repr)))
    _StateDumper.add_representer(
        frozenset, lambda d, v: d.represent_sequence("!frozenset", sorted(v, key=repr)))
    _StateDumper.add_representer(
        bytes, lambda d, v: d.represent_scalar("!bytes", base64.b64encode(v).decode()))
    def _pickled(dumper: Any, value: Any) -> Any:
        data = pickle.dumps(value, protocol=5)
        try:
            pickle.loads(data)
        except Exception as e:
            # Written, it would make the whole file one no State can open.
            raise ValueError(f"{type(value).__name__} value pickles but does not "
                             f"unpickle ({type(e).__name__}: {e}): the state could "
                             f"not be opened again") from e
        return dumper.represent_scalar("!pickle", base64.b64encode(data).decode())

    _StateDumper.add_multi_representer(object, _pickled)

    def _state_str(dumper: Any, text: str) -> Any:
        # A lone surrogate has no YAML form (libyaml refuses its escape).
        return _pickled(dumper, text) if _quoted(text) is None else dumper.represent_str(text)

    _StateDumper.add_representer(str, _state_str)

    def _state_int(dumper: Any, value: int) -> Any:
        # An int of more digits than Python turns into text (4,300) is pickled:
        # YAML's text of it could not be read back either.
        try:
            str(value)
        except ValueError:
            return _pickled(dumper, value)
        return dumper.represent_int(value)

    _StateDumper.add_representer(int, _state_int)

    class _LineDumper(_StateDumper):
        """The dumper of one appended line: strings double-quoted, so that a
        line break in one is written ``\\n`` (YAML would fold it across lines
        in single quotes), and a lone surrogate pickled."""

    def _line_str(dumper: Any, text: str) -> Any:
        if _quoted(text) is None:
            return _pickled(dumper, text)
        return dumper.represent_scalar("tag:yaml.org,2002:str", text, style='"')

    _LineDumper.add_representer(str, _line_str)


# JSON writes a character outside the BMP as a pair of surrogate escapes,
# which YAML refuses; YAML writes it as one \U escape. (An escaped backslash
# is matched first, so that "\\ud83d" is left alone.)
_SURROGATES = re.compile(r"(\\\\)|\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})")
_LONE_SURROGATE = re.compile(r"(\\\\)|\\u(d[89a-f][0-9a-f]{2})")
#: YAML reads a key written as ``key: value`` only up to 1024 characters.
_LONGEST_KEY = 1000


def _astral(match: "re.Match[str]") -> str:
    if match[1]:
        return match[1]
    high, low = int(match[2], 16), int(match[3], 16)
    return f"\\U{0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00):08x}"


def _quoted(text: str) -> Optional[str]:
    """``text`` as a YAML double-quoted scalar in ASCII on one line; None if
    it holds a lone surrogate (YAML has no way to write one)."""
    quoted = json.dumps(text)  # (a JSON string is a YAML double-quoted scalar)
    if "\\ud" in quoted:
        quoted = _SURROGATES.sub(_astral, quoted)
        if any(m[2] for m in _LONE_SURROGATE.finditer(quoted)):
            return None
    return quoted


def _scalar(value: Any) -> Optional[str]:
    """A scalar as YAML, written without PyYAML (None if not a plain scalar)."""
    t = type(value)
    if t is bool:
        return "true" if value else "false"
    if t is int:
        try:
            return str(value)
        except ValueError:  # over Python's limit of digits: pickled (below)
            return None
    if t is float:
        if value != value or value in (float("inf"), float("-inf")):
            return None  # (.nan, .inf: PyYAML)
        text = repr(value)
        # YAML 1.1 reads 1e-05 as a string: its floats need a point.
        return text if "." in text else text.replace("e", ".0e", 1)
    if value is None:
        return "null"
    if t is str:
        return _quoted(value)
    return None


@functools.lru_cache(maxsize=1024)
def _holdable(key: str) -> bool:
    """Can YAML hold ``key`` (no lone surrogate)? (Remembered: a counter's
    key is asked at every change, 0.2 us each.)"""
    return _quoted(key) is not None


@functools.lru_cache(maxsize=1024)
def _key(key: str) -> Optional[str]:
    """``key`` as the key of an appended line: double-quoted (see
    ``_APPENDED``); None if a line cannot hold it (too long for a YAML
    simple key)."""
    text = _quoted(key)
    return text if text is not None and len(text) <= _LONGEST_KEY else None


def _line(key: str, value: Any) -> Optional[str]:
    """``key: value``, one line of a YAML block mapping; None if it cannot
    be one line (the file is then written whole)."""
    name = _key(key)
    if name is None:
        return None
    text = _scalar(value)
    if text is None:
        text = yaml.dump(_plain(value), Dumper=_LineDumper, default_flow_style=True,
                         sort_keys=False, width=2**31 - 1,
                         allow_unicode=False).rstrip("\n")
        if text.endswith("\n..."):  # a document end marker after a scalar
            text = text[:-4]
        if "\n" in text:
            return None
    return f"{name}: {text}\n"


def _plain(value: Any) -> Any:
    """``value`` without the state's views (what they show)."""
    if isinstance(value, _View):
        return _plain(value._target)
    if type(value) is dict:
        return {k: _plain(v) for k, v in value.items()}
    if type(value) is list:
        return [_plain(v) for v in value]
    return value


_MISSING: Any = object()
#: ``State._closed_as`` of a file removed after close().
_GONE = (-1, -1, -1)


# -- views of dicts and lists in the state ------------------------------------------
def _note(error: BaseException, text: str) -> None:
    """Say on ``error`` (Python 3.11+) which key and file it is about."""
    if hasattr(error, "add_note") and not isinstance(error, (KeyboardInterrupt,
                                                             SystemExit)):
        error.add_note(text)


def _refused(what: str, path: str) -> ValueError:
    """The error of a value that holds itself (or is nested deeper than the
    interpreter's recursion limit): written without anchors, it has no end."""
    return ValueError(f"{what} cannot be written to the state {path}: it holds itself "
                      f"(a list or dict inside itself), or is nested too deep for YAML")


class _View:
    """A dict or list inside the state: changes are written through.

    Every change is one call on the view, one write of the top-level value
    (a crash keeps all of it or none of it), undone if it cannot be
    written. What it gives back is plain, none of it the state's: a copy
    (``copy()``, ``copy.copy``, ``pickle``), a slice, ``+``, ``*``, ``|``,
    a popped value. Not a dict or list itself: ``json.dumps`` and
    ``yaml.safe_dump`` need ``view.copy()``."""

    def __init__(self, state: "State", top: str, target: Any, root: Any) -> None:
        self._state = state
        self._top = top
        self._target = target
        self._root = root  # the top-level value this is in, as it was

    def _wrap(self, value: Any) -> Any:
        return self._state._view(self._top, value, self._root)

    def _plain(self, value: Any) -> Any:
        """``value`` as the view keeps it (plain, copied if a dict or list)."""
        if type(value) in _SCALARS:
            return value
        try:
            return _plain(value)
        except RecursionError:
            raise _refused(f"a value put in {self._top!r}", self._state._path) from None

    def _check(self) -> None:
        """Before a change (lock held): the state may be written, and this
        view still shows the key's value (not one set again or deleted
        since, nor one read again from a file changed after close())."""
        self._state._ensure_writable()
        if self._state._data.get(self._top, _MISSING) is not self._root:
            raise RuntimeError(f"the state at {self._state._path} no longer holds this "
                           f"value of {self._top!r} (set again, deleted, or read "
                           f"again from its file): read {self._top!r} again")

    def _change(self, change: Callable[[Any], Any]) -> Any:
        """``change(target)``, then one write of the top-level value; undone
        if either raises (a value that cannot be written, a full disk): a
        change left in memory would be in every later write, each refused.
        One write a call, not an item: the mixins' item at a time wrote
        400 items' ``extend`` in 0.60 s, ``reverse`` 1.6 s, a dict's
        ``update`` 2.3 s (each a write of the whole value); now ~0.01 s."""
        with self._state._lock:
            self._check()
            target = self._target
            before = target.copy()  # (the change is to this dict or list only)
            try:
                result = change(target)
                self._state._write_key(self._top)
            except BaseException as e:
                self._undo(target, before)
                _note(e, f"the state {self._state._path}: {self._top!r} was not "
                         f"changed")
                raise
            self._state._fold_if_due()
            return result

    @staticmethod
    def _undo(target: Any, before: Any) -> None:
        raise NotImplementedError

    def _stored(self, at: Any, value: Any) -> bool:
        """Is ``value`` the view of what is stored at ``at`` already? (What
        ``x[at] += other`` sets after changing it in place, and wrote.)"""
        if not isinstance(value, _View):
            return False
        try:
            return value._target is self._target[at]
        except (KeyError, IndexError, TypeError):
            return False

    def copy(self) -> Any:
        """A plain copy of what the view shows (its dicts and lists copied
        too: changes to it are not the state's)."""
        with self._state._lock:  # (not while another thread changes it)
            return _plain(self._target)

    __copy__ = copy

    def __deepcopy__(self, memo: Any) -> Any:
        return copy.deepcopy(self._target, memo)

    def __reduce_ex__(self, protocol: Any) -> Any:
        plain = self.copy()  # (pickled as the plain dict or list)
        return type(plain), (plain,)

    def __eq__(self, other: object) -> bool:
        return self._target == (other._target if isinstance(other, _View) else other)

    def __repr__(self) -> str:
        return repr(self._target)

    def __len__(self) -> int:
        return len(self._target)

    def __contains__(self, value: object) -> bool:
        return value in self._target

    __hash__ = None  # type: ignore[assignment]


def _other(value: Any, kind: type) -> Any:
    """``value`` (a view's plain copy) if it is a ``kind``, else NotImplemented."""
    if isinstance(value, _View):
        value = _plain(value._target)
    return value if isinstance(value, kind) else NotImplemented


class _DictView(_View, MutableMapping):
    @staticmethod
    def _undo(target: Any, before: Any) -> None:
        target.clear()
        target.update(before)  # (in its order)

    def __getitem__(self, key: Any) -> Any:
        return self._wrap(self._target[key])

    def __setitem__(self, key: Any, value: Any) -> None:
        if self._stored(key, value):
            return
        value = self._plain(value)
        self._change(lambda t: t.__setitem__(key, value))

    def __delitem__(self, key: Any) -> None:
        self._change(lambda t: t.__delitem__(key))

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._target))

    def pop(self, key: Any, default: Any = _MISSING) -> Any:
        """As dict's: the value removed (plain: no longer the state's)."""
        with self._state._lock:
            if key not in self._target and default is not _MISSING:
                return default
            return self._change(lambda t: t.pop(key))

    def popitem(self) -> Tuple[Any, Any]:
        """As dict's (the last key): the item removed, its value plain."""
        return self._change(lambda t: t.popitem())

    def clear(self) -> None:
        if self._target:
            self._change(lambda t: t.clear())

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """As dict's: one write, however many keys."""
        if isinstance(other, Mapping):
            pairs = [(k, other[k]) for k in other]
        elif hasattr(other, "keys"):
            pairs = [(k, other[k]) for k in other.keys()]
        else:
            pairs = [(k, v) for k, v in other]
        pairs.extend(kwargs.items())
        if pairs:
            plain = [(k, self._plain(v)) for k, v in pairs]
            self._change(lambda t: t.update(plain))

    def setdefault(self, key: Any, default: Any = None) -> Any:
        """As dict's, giving what is stored (a view of a dict or list)."""
        with self._state._lock:
            if key not in self._target:
                self[key] = default
            return self[key]

    def __or__(self, other: Any) -> Any:
        other = _other(other, dict)
        return NotImplemented if other is NotImplemented else {**self.copy(), **other}

    def __ror__(self, other: Any) -> Any:
        other = _other(other, dict)
        return NotImplemented if other is NotImplemented else {**other, **self.copy()}

    def __ior__(self, other: Any) -> "_DictView":
        self.update(other)
        return self


class _ListView(_View, MutableSequence):
    @staticmethod
    def _undo(target: Any, before: Any) -> None:
        target[:] = before

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return _plain(self._target[i])  # (a new list, as a list's slice)
        return self._wrap(self._target[i])

    def __setitem__(self, i: Any, value: Any) -> None:
        if isinstance(i, slice):
            value = [self._plain(v) for v in value]
        elif self._stored(i, value):
            return
        else:
            value = self._plain(value)
        self._change(lambda t: t.__setitem__(i, value))

    def __delitem__(self, i: Any) -> None:
        self._change(lambda t: t.__delitem__(i))

    def __iter__(self) -> Iterator[Any]:
        return (self._wrap(v) for v in list(self._target))

    def insert(self, i: int, value: Any) -> None:
        value = self._plain(value)
        self._change(lambda t: t.insert(i, value))

    def append(self, value: Any) -> None:
        value = self._plain(value)
        self._change(lambda t: t.append(value))

    def extend(self, values: Any) -> None:
        """As list's: one write, however many items."""
        plain = [self._plain(v) for v in values]
        if plain:
            self._change(lambda t: t.extend(plain))

    def pop(self, i: int = -1) -> Any:
        """As list's: the item removed (plain: no longer the state's)."""
        return self._change(lambda t: t.pop(i))

    def remove(self, value: Any) -> None:
        self._change(lambda t: t.remove(value))

    def clear(self) -> None:
        if self._target:
            self._change(lambda t: t.clear())

    def reverse(self) -> None:
        self._change(lambda t: t.reverse())

    def sort(self, **kwargs: Any) -> None:
        self._change(lambda t: t.sort(**kwargs))

    def __iadd__(self, values: Any) -> "_ListView":
        self.extend(values)
        return self

    def __imul__(self, n: Any) -> Any:
        self._change(lambda t: t.__setitem__(slice(None), _plain(t * n)))
        return self

    def __add__(self, other: Any) -> Any:
        other = _other(other, list)
        return NotImplemented if other is NotImplemented else self.copy() + other

    def __radd__(self, other: Any) -> Any:
        other = _other(other, list)
        return NotImplemented if other is NotImplemented else other + self.copy()

    def __mul__(self, n: Any) -> Any:
        return _plain(self._target * n)  # (each item a copy of its own)

    __rmul__ = __mul__

    def __lt__(self, other: Any) -> bool:
        other = _other(other, list)
        return NotImplemented if other is NotImplemented else self._target < other

    def __le__(self, other: Any) -> bool:
        other = _other(other, list)
        return NotImplemented if other is NotImplemented else self._target <= other

    def __gt__(self, other: Any) -> bool:
        other = _other(other, list)
        return NotImplemented if other is NotImplemented else self._target > other

    def __ge__(self, other: Any) -> bool:
        other = _other(other, list)
        return NotImplemented if other is NotImplemented else self._target >= other


# -- the state ------------------------------------------------------------------------
class State(MutableMapping):
    """A small persistent state in one YAML file, with attribute access.

    Parameters
    ----------
    path : str
        The YAML file (made if missing; its folder must exist).
    durable : bool, keyword only
        fsync every change (and the folder when the file is rewritten).
    readonly : bool, keyword only
        Read the file as it is now, without the writer's lock (beside a
        writer); a change raises :class:`~chest.errors.ReadOnlyError`.
    lock_timeout : float, keyword only
        Seconds to wait for another process to let go of the file (0: raise
        :class:`~chest.errors.ChestLockedError` at once).
    write_through : bool, keyword only
        Always true: every change is on disk when the call returns (taken
        for the keywords chest's containers share).
    **defaults
        Values for keys the file does not have yet. (Keys named as the
        keywords above are set with ``s[name] = value``.)

    ``s.name`` reads a key (AttributeError if missing), ``s.name = v`` sets
    it; names starting with ``_`` are plain attributes. A stored name wins
    over the mapping's methods ``items``, ``values``, ``get``, ``pop``,
    ``popitem``, ``clear``, ``update``, ``setdefault`` and ``to_dict``: with a key
    ``items``, ``s.items`` is its value (``State.items(s)`` the method).
    Other names of the class (``keys``, ``path``, ``close``...) are always
    the class's: ``s.path = v`` raises AttributeError, ``s["path"] = v``
    stores it. Dicts and lists are written through when changed in place
    (the whole top-level value, one line); other mutable values (sets, your
    objects, dict subclasses such as ``defaultdict``, kept pickled) only when
    set again. One process at a time: another gets
    :class:`~chest.errors.ChestLockedError`; after :meth:`close`, reads see
    what another process wrote since (not a view taken before: read it
    again).
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], *, durable: bool = False,
                 readonly: bool = False, lock_timeout: float = 0.0,
                 write_through: bool = True, **defaults: Any) -> None:
        if yaml is None:
            raise ImportError("chest.State needs PyYAML: pip install 'chest[yaml]'")
        if not write_through:
            raise ValueError("a State writes every change through: write_through=False "
                             "is not an option")
        object.__setattr__(self, "_lock", threading.RLock())
        self._given = os.path.abspath(os.fspath(path))
        # A symlink's target is the file: a rewrite renames a new one into
        # place, which would replace the link itself.
        self._path = os.path.realpath(self._given)
        self._durable = durable
        self._readonly = readonly
        self._lock_timeout = lock_timeout
        self._fd: Optional[int] = None
        self._data: Dict[str, Any] = {}
        self._appended = 0
        self._document = 0
        self._closed_as: Optional[Tuple[int, int, int]] = None  # (inode, size, mtime)
        self._beside = False  # reading without the lock: nothing is written
        self._open()
        missing = {k: v for k, v in defaults.items() if k not in self._data}
        if missing and readonly:
            self._data.update(missing)  # (shown, not written: nothing may be)
            return
        for key, value in missing.items():
            self[key] = value

    # -- the file --------------------------------------------------------------------
    def _open(self) -> None:
        """Take the file (and its lock, unless read-only) and read it."""
        folder = os.path.dirname(self._path)
        if not os.path.isdir(folder):
            raise FolderError(f"{folder}: no such folder for the state {self._path}")
        if self._readonly:
            try:
                text = self._read_whole_lines()
            except FileNotFoundError:
                raise FolderError(f"no state at {self._path} to read "
                                  f"(readonly=True)") from None
            self._data = self._parse(text)
            return
        fd = self._take_lock()
        self._fd = fd
        try:
            self._remove_temporaries()
            with open(self._path, "rb") as f:
                text = self._decode(f.read())
            self._data = self._parse(text)
            self._document = len(text.encode("utf-8"))
            if text and (not text.endswith("\n") or not self._appendable(text)):
                # A line cut by a crash, or a document lines cannot be
                # appended to (flow style, indented, document markers): it
                # is written again, as parsed.
                self._rewrite()
        except BaseException:
            self._release()
            raise

    def _read_whole_lines(self) -> str:
        """The file's text, read beside a writer: a last line without its
        line break may be a line being appended (a prefix of "n: 1234" reads
        as another number), so it is read again, up to ~50 ms, until it ends
        with one; past that it is left out as cut short (:meth:`_parse`)."""
        deadline = time.monotonic() + 0.05
        while True:
            with open(self._path, "rb") as f:
                data = f.read()
            if not data or data.endswith(b"\n") or time.monotonic() > deadline:
                return self._decode(data)
            time.sleep(0.001)

    def _decode(self, data: bytes) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise FolderError(f"cannot read the state {self._path}: it is not "
                              f"UTF-8 text ({e})") from e

    def _remove_temporaries(self) -> None:
        """Remove the copies a rewrite left beside the file when a crash
        stopped it before the rename (``.tmp.<name>.<12 hex>``, lock held)."""
        folder, base = os.path.split(self._path)
        pattern = re.compile(re.escape(f".tmp.{base}.") + r"[0-9a-f]{12}\Z")
        try:
            names = os.listdir(folder)
        except OSError:
            return
        for name in names:
            if pattern.match(name):
                remove_quietly(os.path.join(folder, name))

    def _take_lock(self) -> int:
        """A descriptor of the file, locked; waits up to ``lock_timeout``."""
        deadline = time.monotonic() + self._lock_timeout
        while True:
            fd = os.open(self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() >= deadline:
                    raise ChestLockedError(self._path, who_holds(self._path)) from None
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
                continue
            try:
                current = os.stat(self._path).st_ino
            except FileNotFoundError:
                current = -1
            if current == os.fstat(fd).st_ino:
                return fd
            # The file was replaced (rewritten by its holder) between our
            # open and our lock: this lock is on a file no longer at the path.
            os.close(fd)

    def _parse(self, text: str) -> Dict[str, Any]:
        cut = text.rfind("\n") + 1
        if cut < len(text) and _APPENDED.match(text, cut):
            # A last line without its line break, begun as a line the state
            # appends: cut short (a crash, or a copy taken while it was
            # appended; "counter: 12" of "counter: 1234" reads as a value
            # never set). Left out, and kept beside the file (once the rest
            # is read: a file that cannot be opened keeps nothing aside).
            try:
                rest: Optional[Dict[str, Any]] = self._parse(text[:cut])
            except FolderError:
                rest = None  # (the line may end a person's "[1,\nx]": read whole)
            if rest is not None:
                self._keep_dropped(text[cut:], "it has no line break (cut short "
                                               "while it was written?)")
                return rest
        try:
            data = yaml.load(text, Loader=_StateLoader) if text else None
        except yaml.YAMLError as e:
            if text.endswith("\n"):
                raise FolderError(f"cannot read the state {self._path}: {e}") from e
            # A person left the last line unfinished: dropped, kept aside.
            rest = self._parse(text[:cut])
            self._keep_dropped(text[cut:], str(e))
            return rest
        except RecursionError:
            raise FolderError(f"cannot read the state {self._path}: nested too "
                              f"deep") from None
        except Exception as e:
            # A tagged value that does not make one: "!bytes" that is not
            # base64, "!pickle" that does not unpickle, "!set" of lists.
            raise FolderError(f"cannot read the state {self._path}: a value in it "
                              f"cannot be made ({type(e).__name__}: {e})") from e
        if data is None:
            return {}
        if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
            raise FolderError(f"cannot read the state {self._path}: it is not a "
                              f"mapping of names to values")
        # Each key its own dicts and lists (a person's alias, "b: *a", would
        # share one list between two keys, and a change of one write the other).
        plain = {}
        for key, value in data.items():
            try:
                plain[key] = _plain(value)
            except RecursionError:  # (an alias inside its anchor: "a: &x [1, *x]")
                raise FolderError(f"cannot read the state {self._path}: {key!r} holds "
                                  f"itself (an alias inside its own anchor), which "
                                  f"the state cannot write") from None
        return plain

    def _keep_dropped(self, line: str, reason: str) -> None:
        """A last line left out: appended to ``<path>.dropped`` (not by a
        read-only state), and a warning names it."""
        where = f"{self._path}.dropped"
        if self._readonly or self._beside:
            where = "nowhere (read without the file's lock)"
        else:
            with open(where, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        warnings.warn(f"the last line of the state {self._path} is left out "
                      f"({line[:80]!r}; kept in {where}): {reason}",
                      ChestWarning, stacklevel=4)

    def _appendable(self, text: str) -> bool:
        """Does a line appended to ``text`` read as one more key? (Not after
        a flow mapping, an indented mapping, a document end, a null...)"""
        probe = "chest_probe_of_appending_"
        try:
            data = yaml.load(f"{text}{probe}: 0\n", Loader=_StateLoader)
        except yaml.YAMLError:
            return False
        return isinstance(data, dict) and data.get(probe) == 0 and \
            len(data) == len(self._data) + (probe not in self._data)

    def _ensure_writable(self) -> None:
        """Before a change (lock held): refuse it if read-only; after
        :meth:`close`, take the file again (read again only if it changed)."""
        if self._readonly:
            raise ReadOnlyError(self._path, "change the state")
        if self._fd is not None:
            return
        if self._closed_as is not None and self._closed_as == self._identity():
            self._fd = self._take_lock()
            if self._closed_as == self._identity():  # (not changed before the lock)
                self._closed_as = None
                return
            self._release()
        self._open()  # read again: views taken before see it (RuntimeError on change)

    def _fresh(self) -> None:
        """Before a read after :meth:`close`: the file as it is now, if
        another process changed it since (read without taking its lock, as
        a reader does; the next change takes it, and reads again if the
        file changed after this)."""
        if self._fd is not None or self._closed_as is None:
            return  # (open: the file is this state's; a reader reads it once)
        with self._lock:
            if self._fd is not None or self._closed_as is None:
                return
            identity = self._identity()  # (before the text: a later change is seen)
            if identity == self._closed_as:
                return
            if identity is None:
                # Removed since: the state is empty, as the next change
                # (which makes the file again) will find it.
                self._data = {}
                self._closed_as = _GONE
                return
            self._beside = True
            try:
                self._data = self._parse(self._read_whole_lines())
            finally:
                self._beside = False
            self._closed_as = identity

    def _identity(self) -> Optional[Tuple[int, int, int]]:
        try:
            info = os.stat(self._path)
        except FileNotFoundError:
            return None
        return info.st_ino, info.st_size, info.st_mtime_ns

    def _append(self, text: str) -> None:
        data = text.encode("utf-8")
        fd = self._fd
        assert fd is not None  # (_ensure_writable took it)
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
        # (Not self._appended += ...: that goes through __setattr__, a
        # quarter of a microsecond of a counter's increment.)
        self.__dict__["_appended"] += len(data)

    def _rewrite(self) -> None:
        """Write the state whole, beside the file, and rename it into place."""
        # Sorted keys at the top only: a nested dict keeps its order (YAML's
        # sort_keys would sort it, and the next run read it sorted).
        values = {k: self._data[k] for k in sorted(self._data)}
        text = yaml.dump(_plain(values), Dumper=_StateDumper, sort_keys=False,
                         default_flow_style=False, allow_unicode=True) if values else ""
        data = text.encode("utf-8")
        folder, base = os.path.split(self._path)
        tmp = temp_name(folder, base)
        new_fd: Optional[int] = None
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            try:
                view = memoryview(data)
                while view:  # (a short write, a full disk: the rest, or an error)
                    view = view[os.write(fd, view):]
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
            if new_fd is not None:
                os.close(new_fd)
            raise
        # The new file is the state's from here: its descriptor first (a
        # failed sync of the folder below left the state appending to the
        # file the rename replaced, and every later change was lost).
        self._release()
        self._fd = new_fd
        self._document, self._appended = len(data), 0
        if self._durable:
            try:
                sync_dir(folder)
            except OSError as e:
                # The file holds the change; only a power loss before the
                # system writes the folder could take the rename back.
                warnings.warn(f"the state {self._path} was rewritten, but its folder "
                              f"could not be synced ({e}): a power loss now may bring "
                              f"back the file as it was before", ChestWarning,
                              stacklevel=4)

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # (closing drops the lock)
            self._fd = None

    def _write_key(self, key: str) -> None:
        """Append ``key``'s value (lock held), or rewrite the file if no line
        can hold it. Raises if it is not in the file (the caller undoes the
        change); once it is, the caller calls :meth:`_fold_if_due`."""
        try:
            line = _line(key, self._data[key])
            if line is None:
                self._rewrite()
                return
        except RecursionError:  # (a tuple, a set, in itself: YAML recurses)
            raise _refused(repr(key), self._path) from None
        self._append(line)  # the change is in the file once this returns

    def _fold_if_due(self) -> None:
        """Rewrite the file once the appended lines outgrow the document
        (lock held). After the change is in the file, outside the caller's
        undo: it stands whatever happens here. (Raised, the caller undid in
        memory a change the file held, and a crash then brought it back.)
        A failure (a full disk) is let go: the fold is tried again at the
        next change or close. An interrupt (Ctrl-C) is raised, the change
        kept."""
        if self._appended > max(FOLD_AFTER, self._document):
            try:
                self._rewrite()
            except Exception:
                pass

    def _view(self, top: str, value: Any, root: Any = _MISSING) -> Any:
        if type(value) is dict:
            return _DictView(self, top, value, value if root is _MISSING else root)
        if type(value) is list:
            return _ListView(self, top, value, value if root is _MISSING else root)
        return value

    # -- the mapping -------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        if self._fd is None:
            self._fresh()
        return self._view(key, self._data[key])

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"a state's keys are names (str), not {type(key).__name__} "
                            f"{key!r}")
        if not _holdable(key):
            raise ValueError(f"a state's keys are text YAML can hold: {key!r} holds a "
                             f"lone surrogate")
        with self._lock:
            self._ensure_writable()
            old = self._data.get(key, _MISSING)
            if type(value) in _SCALARS:
                self._data[key] = value
            elif isinstance(value, _View) and value._target is old:
                return  # (s.items += [x]: changed in place, and written)
            else:
                try:
                    self._data[key] = _plain(value)
                except RecursionError:
                    raise _refused(repr(key), self._path) from None
            try:
                self._write_key(key)
            except BaseException as e:
                if old is _MISSING:
                    del self._data[key]
                else:
                    self._data[key] = old
                _note(e, f"the state {self._path}: {key!r} was not set (it keeps "
                         f"its earlier value)")
                raise
            self._fold_if_due()

    def __delitem__(self, key: str) -> None:
        with self._lock:
            self._ensure_writable()
            value = self._data.pop(key)
            try:
                self._rewrite()  # YAML has no way to say "deleted" in a line
            except BaseException:
                self._data[key] = value
                raise

    def __iter__(self) -> Iterator[str]:
        if self._fd is None:
            self._fresh()
        return iter(list(self._data))

    def __len__(self) -> int:
        if self._fd is None:
            self._fresh()
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        if self._fd is None:
            self._fresh()
        return key in self._data

    def __eq__(self, other: object) -> bool:
        # (Mapping's __eq__ calls self.items(), which a key "items" hides.)
        if self._fd is None:
            self._fresh()
        if isinstance(other, State):
            return self._data == other._data
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def setdefault(self, key: str, default: Any = None) -> Any:
        """As dict's, giving what is stored (a view of a dict or list, whose
        changes are written)."""
        with self._lock:
            if key not in self._data:
                self[key] = default
            return self[key]

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        """As dict's: the value removed (plain: no longer the state's)."""
        with self._lock:
            self._ensure_writable()
            if key not in self._data:
                if default is _MISSING:
                    raise KeyError(key)
                return default
            value = self._data[key]
            del self[key]
            return value

    def popitem(self) -> Tuple[str, Any]:
        """The first key and its value (plain), removed."""
        with self._lock:
            self._ensure_writable()
            for key in self._data:
                return key, State.pop(self, key)  # (a key "pop" hides self.pop)
            raise KeyError(f"popitem(): the state at {self._path} is empty")

    def to_dict(self) -> Dict[str, Any]:
        """The state's values as a plain dict: its dicts and lists are copies,
        not views (``dict(s)`` holds the state's views: a change to them
        is written)."""
        with self._lock:
            if self._fd is None:
                self._fresh()
            return _plain(self._data)

    def clear(self) -> None:
        """Remove every key: one rewrite of the file."""
        with self._lock:
            self._ensure_writable()
            old = self._data
            self._data = {}
            try:
                self._rewrite()
            except BaseException:
                self._data = old
                raise

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
            return
        if hasattr(State, name) and not isinstance(State.__dict__.get(name), _KeyOrMethod):
            raise AttributeError(f"{name!r} is State's own: set the key with "
                                 f"state[{name!r}] = value")
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
        """The state's YAML file (as given: a symlink's target is written)."""
        return self._given

    def close(self) -> None:
        """Leave the file a plain mapping with sorted keys; let go of it. The
        state can still be used (it takes the file again, and reads it
        again if it was changed meanwhile)."""
        with self._lock:
            if self._fd is None:
                return
            if self._appended or self._document == 0 and self._data:
                self._rewrite()
            self._closed_as = self._identity()
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

    def __copy__(self) -> Any:
        raise TypeError(f"a State holds its file's lock and cannot be copied: "
                        f"state.to_dict() is a plain copy of {self._path}'s values")

    def __deepcopy__(self, memo: Any) -> Any:
        return self.__copy__()

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(f"a State holds its file's lock and cannot be pickled: "
                        f"pickle state.to_dict(), the values of {self._path}")

    def __repr__(self) -> str:
        return f"State({self._given!r}, {self._data!r})"


class _KeyOrMethod:
    """A mapping method of :class:`State` that a stored name of the same
    name hides: ``s.items`` is the key "items" if there is one (the method,
    ``State.items(s)``, else). Only these names pay for the look-up: other
    attributes are found as usual, stored names by ``__getattr__``. Not
    ``keys``: ``dict(s)`` and ``{**s}`` call it."""

    def __init__(self, name: str, method: Any) -> None:
        self.name = name
        self.method = method

    def __get__(self, state: Any, owner: Any = None) -> Any:
        if state is None:
            return self.method
        if state.__dict__.get("_fd", 0) is None:
            state._fresh()
        data = state.__dict__.get("_data")
        if data is not None and self.name in data:
            return state._view(self.name, data[self.name])
        return self.method.__get__(state, owner)


for _name in ("items", "values", "get", "pop", "popitem", "clear", "update",
              "setdefault", "to_dict"):
    setattr(State, _name, _KeyOrMethod(_name, getattr(State, _name)))
