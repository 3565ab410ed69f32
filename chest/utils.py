"""chest 0.2.3's ``chest.utils``, kept so that code (and tests) written for
it import as before: two small helpers, not used by chest itself.

>>> raises(KeyError, lambda: {}[1]), raises(KeyError, lambda: 1)
(True, False)
>>> raises(KeyError, lambda: raise_KeyError("x"))
True
"""
from __future__ import annotations

from typing import Any, Callable, NoReturn, Tuple, Type, Union

__all__ = ["raises", "raise_KeyError"]


def raises(error: Union[Type[BaseException], Tuple[Type[BaseException], ...]],
           call: Callable[[], Any]) -> bool:
    """Does ``call()`` raise ``error``? (Another exception propagates.)"""
    try:
        call()
    except error:
        return True
    return False


def raise_KeyError(key: Any) -> NoReturn:  # noqa: N802 (chest 0.2.3's name)
    """Raise a KeyError that names ``key`` (an ``on_miss`` for tests)."""
    raise KeyError(f"I asked for one of these {key}")
