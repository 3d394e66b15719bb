"""``phalanx bench``: phalanx against the stdlib's ``multiprocessing``, on this machine.

Each library runs the same small workloads (``bench_workloads.py``) in fresh
interpreters of its own, taking turns, a few rounds; the table shows the median
time of each and their ratio.  It takes well under a minute.  For measurements
to publish, use the repository's ``benchmarks/`` (more rows, more rounds, a
busy machine too).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import phalanx

LIBRARIES = ("multiprocessing", "phalanx")
TIMEOUT = 120.0  # seconds one round of one library may take


class BenchError(Exception):
    """A round failed: printed as one line, exit status 1."""


def _round(library: str, method: str) -> dict[str, float]:
    script = Path(__file__).with_name("bench_workloads.py")
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    try:
        done = subprocess.run(
            [sys.executable, str(script), library, method],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{library} did not finish a round within {TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BenchError(f"{library} failed (exit status {done.returncode}): {last}")
    result: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return result


def _format(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def measure(method: str, rounds: int) -> dict[str, dict[str, float]]:
    """{case: {library: median seconds}}; the libraries take turns, ``rounds`` each."""
    samples: dict[str, dict[str, list[float]]] = {}
    for _ in range(rounds):
        for library in LIBRARIES:
            for case, seconds in _round(library, method).items():
                samples.setdefault(case, {}).setdefault(library, []).append(seconds)
    return {
        case: {library: statistics.median(values) for library, values in by_library.items()}
        for case, by_library in samples.items()
    }


def run(method: str | None, rounds: int) -> int:
    method = method or phalanx.get_start_method()
    print(
        f"phalanx {phalanx.__version__} against multiprocessing, Python "
        f"{platform.python_version()}, start method {method}, {os.cpu_count()} CPUs, "
        f"median of {rounds} rounds",
        flush=True,
    )
    medians = measure(method, rounds)
    width = max(len(case) for case in medians)
    print(f"{'case':<{width}}  {'multiprocessing':>15}  {'phalanx':>10}  {'time ratio':>10}")
    for case, by_library in medians.items():
        stdlib, ours = by_library["multiprocessing"], by_library["phalanx"]
        ratio = ours / stdlib if stdlib > 0 else float("nan")
        print(f"{case:<{width}}  {_format(stdlib):>15}  {_format(ours):>10}  {ratio:>10.2f}")
    print("time ratio: phalanx's time over the stdlib's (below 1.00: phalanx is faster)")
    return 0
