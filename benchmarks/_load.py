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
    """``--busy`` (every core kept busy) and ``--json PATH`` (results for the charts)."""
    parser.add_argument(
        "--busy", action="store_true", help="every core kept busy by a yes > /dev/null each"
    )
    parser.add_argument(
        "--json", metavar="PATH", help="also write the medians as JSON (tools/bench_charts.py)"
    )


def compare_rows(
    cases: list[tuple[str, Callable[[Any], float], Callable[[float], str]]],
    libs: tuple[Any, Any],
    repeat: int,
    width: int,
    column: int,
    results: Results | None = None,
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
        if results is not None:
            results.add(name, {"stdlib": std, "phalanx": ours})
        print(f"{name:<{width}} {fmt(std):>{column}} {fmt(ours):>{column}} {ours / std:>10.2f}")


class Results:
    """What a benchmark measured, written as JSON with ``--json PATH`` (for
    ``tools/bench_charts.py``): per case, each library's median time in seconds."""

    def __init__(self, benchmark: str, args: Any) -> None:
        self.benchmark = benchmark
        self.path: str | None = getattr(args, "json", None)
        self.condition = "busy" if getattr(args, "busy", False) else "idle"
        self.cases: list[dict[str, Any]] = []

    def add(self, name: str, seconds: dict[str, float]) -> None:
        self.cases.append({"name": name, "seconds": dict(seconds)})

    def write(self) -> None:
        if not self.path:
            return
        import json
        import platform

        from phalanx import _fast

        data = {
            "benchmark": self.benchmark,
            "condition": self.condition,
            "machine": f"{os.cpu_count()} CPUs, Python {platform.python_version()}",
            "phalanx_path": "pure" if _fast.speedups is None else "compiled",
            "cases": self.cases,
        }
        with open(self.path, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
