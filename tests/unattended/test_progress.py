"""Progress bars on a terminal, nothing at all when stderr is a file or a pipe."""

from __future__ import annotations

import io

from reconcile.progress import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_nothing_is_written_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with progress("listing customers", stream=stream) as advance:
        advance(100)
        advance(50)
    assert stream.getvalue() == ""


def test_a_counter_and_a_bar_on_a_terminal() -> None:
    stream = _Terminal()
    with progress("listing customers", stream=stream) as advance:
        advance(1234)
    assert "listing customers" in stream.getvalue()
    assert "1,234" in stream.getvalue()
    bar = _Terminal()
    with progress("checking cards", total=10, stream=bar) as advance:
        advance(10)
    assert "10/10" in bar.getvalue()
