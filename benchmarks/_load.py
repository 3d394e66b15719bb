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

# Where the processes of a round trip run on a busy machine (``--placement``).
# The scheduler picks one of these by itself, run to run: round trips on a busy
# machine are bimodal for any library, and a median of a few runs compares
# luck.  Pinning measures each placement apart.
PLACEMENTS = {
    "free": "the scheduler places everything",
    "alone": "both ends of a round trip on CPU 0, the CPU-bound processes on the others",
    "shared": "both ends on CPU 0 with one CPU-bound process, one on each other CPU",
    "apart": "one end on CPU 0, the other on CPU 1, one CPU-bound process on each CPU",
}
_placement = "free"
_cpus: list[int] = []  # the CPUs this process had before busy() pinned it


@contextlib.contextmanager
def busy(
    enabled: bool = True, processes: int | None = None, placement: str = "free"
) -> Iterator[int]:
    """Yield the number of CPU-bound processes running beside the benchmark (0 if disabled).

    With a ``placement`` other than ``"free"``, this process (and so the children
    it starts) is held to CPU 0 and the CPU-bound ones are pinned as
    ``PLACEMENTS`` says; ``place_peer`` moves the far end of a round trip.
    """
    global _placement, _cpus
    if not enabled:
        yield 0
        return
    yes = shutil.which("yes")
    if yes is None:
        raise SystemExit("--busy needs the yes command (coreutils)")
    cpus = sorted(os.sched_getaffinity(0))
    count = processes or os.cpu_count() or 1
    if placement != "free":
        if len(cpus) < 2:
            raise SystemExit(f"--placement {placement} needs two CPUs; this process has {cpus}")
        os.sched_setaffinity(0, {cpus[0]})
        _placement, _cpus = placement, cpus
    hogs = [
        subprocess.Popen([yes], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(count)
    ]
    for i, hog in enumerate(hogs):
        if placement == "alone":
            os.sched_setaffinity(hog.pid, {cpus[1 + i % (len(cpus) - 1)]})
        elif placement != "free":
            os.sched_setaffinity(hog.pid, {cpus[i % len(cpus)]})
    try:
        yield count
    finally:
        _placement = "free"
        if placement != "free":
            os.sched_setaffinity(0, cpus)
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()


def place_peer(pid: int) -> None:
    """Under ``--placement apart``, move process ``pid`` (the far end of a round
    trip: an echo child, a manager's server) to CPU 1; otherwise nothing."""
    if _placement == "apart":
        # Every thread it has (a manager's server makes its serving threads from
        # an accepting one): threads made later inherit their maker's CPUs.
        for task in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(task), {_cpus[1]})


def describe(hogs: int) -> str:
    """The header line: the load, and which path phalanx runs (``PHALANX_PURE_PYTHON=1``
    measures the pure-Python fallback)."""
    from phalanx import _fast

    path = "pure-Python path" if _fast.speedups is None else "compiled path (_speedups)"
    load = "idle" if not hogs else f"busy: {hogs} CPU-bound processes beside"
    if hogs and _placement != "free":
        load += f" ({_placement}: {PLACEMENTS[_placement]})"
    return f"{load}; phalanx on its {path}"


def add_busy_flag(parser: Any) -> None:
    """``--busy`` (every core kept busy) and ``--json PATH`` (results for the charts)."""
    parser.add_argument(
        "--busy", action="store_true", help="every core kept busy by a yes > /dev/null each"
    )
    parser.add_argument(
        "--placement",
        choices=sorted(PLACEMENTS),
        default="free",
        help="with --busy: pin the round trip's processes and the CPU-bound ones ("
        + "; ".join(f"{k}: {v}" for k, v in PLACEMENTS.items())
        + ")",
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
        self.placement = getattr(args, "placement", "free") if self.condition == "busy" else "free"
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
        if self.placement != "free":
            data["placement"] = self.placement
        with open(self.path, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
