"""Keep every core busy while a benchmark runs (``--busy``): users run us on busy machines.

``busy()`` starts one CPU-bound ``yes > /dev/null`` per core (``os.cpu_count()``
unless told) and stops them on the way out, whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator


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
