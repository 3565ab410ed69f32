"""progress: one line on a terminal, nothing elsewhere."""
from __future__ import annotations

import io

from chest.progress import PROGRESS_THRESHOLD, Progress


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_only():
    tty = FakeTerminal()
    with Progress(500, stream=tty) as progress:
        for _ in range(500):
            progress.advance()
    text = tty.getvalue()
    assert text.startswith("\rchecked 1/500 files")
    assert "\rchecked 500/500 files" in text
    assert text.endswith("\r")  # the line is erased
    for progress in (Progress(500, stream=io.StringIO()),  # not a terminal
                     Progress(500, quiet=True, stream=FakeTerminal()),
                     Progress(PROGRESS_THRESHOLD, stream=FakeTerminal())):
        with progress:
            progress.advance(500)
        assert progress.stream.getvalue() == ""
