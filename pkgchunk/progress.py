"""Progress of long steps (reading, writing, copying) on stderr, for people watching.

The CLI turns it on only when stderr is a terminal (or ``--progress`` says so); the
library never prints otherwise. Hot loops call :func:`advance` with byte counts: when
reporting is off that is one global lookup, so the hooks cost nothing in batch use.
Several writer threads advance at once, hence the lock.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

#: Seconds between two redraws of the progress line.
INTERVAL = 0.25


def human_size(n: float) -> str:
    """Binary units, one decimal (``512 B``, ``1.5 MiB``): for the progress line and for
    every table (``render`` re-exports it), so both print sizes alike."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


@dataclass
class _Step:
    what: str
    start: float
    done: int = 0


class Reporter:
    """Draws one line per step: what, bytes so far, rate; a final line when it ends."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()
        self._steps: list[_Step] = []  # nested steps; the innermost is drawn
        self._drawn = 0.0
        self._open_line = False

    def begin(self, what: str) -> None:
        with self._lock:
            self._finish_line()
            self._steps.append(_Step(what, time.monotonic()))
            self._drawn = 0.0

    def advance(self, n: int) -> None:
        with self._lock:
            if not self._steps:
                return
            self._steps[-1].done += n
            now = time.monotonic()
            if now - self._drawn >= INTERVAL:
                self._drawn = now
                self._draw(now, final=False)

    def end(self) -> None:
        with self._lock:
            if not self._steps:
                return
            self._draw(time.monotonic(), final=True)
            self._steps.pop()

    def _draw(self, now: float, *, final: bool) -> None:
        s = self._steps[-1]
        elapsed = max(now - s.start, 1e-6)
        text = f"{s.what}: {human_size(s.done)}, {human_size(s.done / elapsed)}/s"
        if final:
            text = f"{s.what}: done in {elapsed:.1f} s"
            if s.done:
                rate = human_size(s.done / elapsed)
                text = f"{s.what}: {human_size(s.done)} in {elapsed:.1f} s ({rate}/s)"
        self.stream.write(f"\r\x1b[K{text}" + ("\n" if final else ""))
        self.stream.flush()
        self._open_line = not final

    def _finish_line(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self.stream.flush()
            self._open_line = False


_reporter: Reporter | None = None


def enabled() -> bool:
    return _reporter is not None


@contextlib.contextmanager
def reporting(stream: TextIO | None) -> Iterator[None]:
    """Report progress on ``stream`` inside the block (None: stay silent)."""
    global _reporter
    previous = _reporter
    _reporter = Reporter(stream) if stream is not None else None
    try:
        yield
    finally:
        _reporter = previous


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    """A long step whose bytes :func:`advance` counts."""
    reporter = _reporter
    if reporter is None:
        yield
        return
    reporter.begin(what)
    try:
        yield
    finally:
        reporter.end()


def break_line() -> None:
    """End a half-drawn progress line, so a log message starts on a line of its own."""
    reporter = _reporter
    if reporter is not None:
        with reporter._lock:
            reporter._finish_line()


def advance(n: int) -> None:
    """Count ``n`` bytes done in the current step (any thread)."""
    reporter = _reporter
    if reporter is not None:
        reporter.advance(n)
