"""Progress bars for pool calls: tqdm when it is installed, a plain text bar otherwise."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

__all__ = ("make_bar",)


class PlainBar:
    """A dependency-free bar on stderr, redrawn at most ten times a second."""

    def __init__(self, total: int | None, desc: str, stream: TextIO | None = None) -> None:
        self.total = total
        self.desc = desc
        self.n = 0
        self._stream = stream if stream is not None else sys.stderr
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._drawn = 0.0
        self._closed = False
        self._draw()

    def update(self, n: int = 1) -> None:
        with self._lock:
            self.n += n
            now = time.monotonic()
            if now - self._drawn >= 0.1 or (self.total is not None and self.n >= self.total):
                self._draw(now)

    def _draw(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._drawn = now
        elapsed = now - self._start
        rate = f"{self.n / elapsed:.1f}/s" if elapsed > 0 else "?/s"
        if self.total:
            frac = min(1.0, self.n / self.total)
            filled = int(frac * 30)
            bar = "#" * filled + "-" * (30 - filled)
            text = (
                f"\r{self.desc}: {frac:4.0%} |{bar}| {self.n}/{self.total} [{elapsed:.1f}s, {rate}]"
            )
        else:
            text = f"\r{self.desc}: {self.n} [{elapsed:.1f}s, {rate}]"
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._draw()
            try:
                self._stream.write("\n")
                self._stream.flush()
            except (OSError, ValueError):
                pass


def make_bar(total: int | None, desc: str) -> Any:
    """A bar with ``update(n)`` and ``close()``: tqdm's if importable, else ``PlainBar``."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return PlainBar(total, desc)
    return tqdm(total=total, desc=desc)
