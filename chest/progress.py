"""A progress line on the terminal for commands that check many files.

Examples
--------
>>> import io
>>> with Progress(1000, stream=io.StringIO()) as progress:
...     progress.advance(10)
>>> progress.done, progress.enabled  # not a terminal: nothing is shown
(10, False)
"""
from __future__ import annotations

import sys
import time
from typing import IO, Any, Optional

__all__ = ["Progress", "PROGRESS_THRESHOLD"]

#: Progress is shown on a terminal when more files than this are checked.
PROGRESS_THRESHOLD = 200


class Progress:
    """One updating line on a terminal: ``checked 1234/5678 files``.

    Shown only when ``stream`` is a terminal, ``quiet`` is false and there
    are more than :data:`PROGRESS_THRESHOLD` files; at most ten times a
    second. Used as a context manager, it erases its line at the end.

    Parameters
    ----------
    total : int
        How many files will be checked.
    quiet : bool
        Show nothing.
    stream : file, optional
        Where to write (default: ``sys.stderr``).
    """

    def __init__(self, total: int, quiet: bool = False,
                 stream: Optional[IO[str]] = None) -> None:
        self.total = total
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = (not quiet and total > PROGRESS_THRESHOLD
                        and callable(isatty) and bool(isatty()))
        self.done = 0
        self._width = 0
        self._last = 0.0

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more files checked."""
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and self.done < self.total:
            return
        self._last = now
        text = f"checked {self.done}/{self.total} files"
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    def close(self) -> None:
        """Erase the line."""
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
