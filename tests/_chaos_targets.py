"""Targets for the chaos regression tests (``test_chaos.py``): children that misbehave.

Importable, so that spawn and forkserver children unpickle them by
reference.  Children report through JSON files (``_targets.write_json``).
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

from _targets import DEADLINE, sleep_forever, write_json


def take_over_then_hang_in_the_warning(lock: Any, ready: str) -> None:
    """Take ``lock`` over from a dead owner, and hang while its warning is shown.

    As a process whose stderr is a full pipe would: the test kills us there.
    """

    def hang(*args: Any, **kwargs: Any) -> None:
        sleep_forever(ready)

    warnings.simplefilter("always")
    warnings.showwarning = hang
    lock.acquire(timeout=DEADLINE)
    write_json(ready, {"pid": os.getpid(), "hung": False})


def slow_square(x: int) -> int:
    time.sleep(0.01)
    return x * x
