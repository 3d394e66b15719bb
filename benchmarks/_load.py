"""Keep every core busy while a benchmark runs (``--busy``): users run us on busy machines.

``busy()`` starts one CPU-bound ``yes > /dev/null`` per core (``os.cpu_count()``
unless told) and stops them on the way out, whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def busy(enabled: bool = True, processes: int | None = None) -> Iterator[int]:
    """Yield the number of CPU-bound processes running beside the benchmark (0 if disabled)."""
    if not enabled:
        yield 0
        return
    yes = shutil.which("yes")
    if yes is None:
        raise SystemExit("--busy needs the yes command (coreutils)")
    count = processes or os.cpu_count() or 1
    hogs = [
        subprocess.Popen([yes], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(count)
    ]
    try:
        yield count
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()


def describe(hogs: int) -> str:
    """The header line: the load, and which path phalanx runs (``PHALANX_PURE_PYTHON=1``
    measures the pure-Python fallback)."""
    from phalanx import _fast

    path = "pure-Python path" if _fast.speedups is None else "compiled path (_speedups)"
    load = "idle" if not hogs else f"busy: {hogs} CPU-bound processes beside"
    return f"{load}; phalanx on its {path}"


def add_busy_flag(parser: Any) -> None:
    parser.add_argument(
        "--busy", action="store_true", help="every core kept busy by a yes > /dev/null each"
    )


def compare_rows(
    cases: list[tuple[str, Callable[[Any], float], Callable[[float], str]]],
    libs: tuple[Any, Any],
    repeat: int,
    width: int,
    column: int,
) -> None:
    """For each (name, measure(lib), format) case: medians of ``repeat`` runs of the stdlib
    and phalanx, interleaved, and phalanx's time over the stdlib's."""
    std_lib, our_lib = libs
    for name, func, fmt in cases:
        std_times, our_times = [], []
        for _ in range(repeat):
            std_times.append(func(std_lib))
            our_times.append(func(our_lib))
        std, ours = statistics.median(std_times), statistics.median(our_times)
        print(f"{name:<{width}} {fmt(std):>{column}} {fmt(ours):>{column}} {ours / std:>10.2f}")
