"""Functions and objects that pool workers run, for ``test_pool.py``.

They live in an importable module so that spawn and forkserver workers can
unpickle them by reference.  The crash-matrix items at the bottom each break
a worker in one precise way when the worker handles them (and never in the
test process, which only pickles them).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from _targets import DEADLINE, segfault, write_json

# Set by an initializer in the workers; the test process keeps this value.
INIT_VALUE = "not initialized"


# --- plain tasks ------------------------------------------------------------------------


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def power(base: int, exp: int = 2) -> int:
    return int(base**exp)


def square_with_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def sleep_then_return(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return seconds if value is None else value


def nap_square(x: int) -> int:
    """``x * x``; a negative ``x`` first sleeps ``-x`` seconds."""
    if x < 0:
        time.sleep(-x)
    return x * x


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"bad item {x}")
    return x * x


def raise_key_error(key: str) -> None:
    raise KeyError(key)


def attribute_v(obj: Any) -> Any:
    """``obj.v`` for objects that have one, else ``obj`` itself."""
    return getattr(obj, "v", obj)


def announce_then_sleep(directory: str, seconds: float) -> float:
    """Create ``directory/<pid>`` (the test waits for it), then sleep."""
    Path(directory, str(os.getpid())).touch()
    time.sleep(seconds)
    return seconds


def announce_then_sleep_item(args: tuple[str, float]) -> float:
    return announce_then_sleep(*args)


def return_lock(_: Any) -> Any:
    return threading.Lock()


def exit_task(code: int) -> None:
    raise SystemExit(code)


# --- initializers -----------------------------------------------------------------------


def init_global(value: str) -> None:
    global INIT_VALUE
    INIT_VALUE = value


def get_init_value(_: Any) -> tuple[int, str]:
    return os.getpid(), INIT_VALUE


def failing_init() -> None:
    raise RuntimeError("initializer failed on purpose")


def slow_init(seconds: float) -> None:
    time.sleep(seconds)


# --- retries ----------------------------------------------------------------------------


def die_once(marker: str, value: Any) -> Any:
    """SIGKILL this worker the first time (creating ``marker``); return ``value`` after."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return value
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # not reached
    return None


def always_die(_: Any = None) -> None:
    os._exit(3)


# --- errors that do not travel well -----------------------------------------------------


class UnpicklableError(Exception):
    """An exception that cannot be pickled (it holds a lock)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class NeedsTwoArgs(Exception):
    """Pickles fine, but cannot be rebuilt (``args`` holds one of its two arguments)."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(a)
        self.b = b


def raise_unrebuildable(_: Any) -> None:
    raise NeedsTwoArgs("a", "b")


# --- the crash matrix -------------------------------------------------------------------

EXIT_CODE = 3  # os._exit() inside a task
PICKLE_EXIT_CODE = 4  # os._exit() while the worker pickles a result
UNPICKLE_EXIT_CODE = 5  # os._exit() while the worker unpickles a task


def crash_task(item: Any) -> Any:
    """``item * item`` for an int; otherwise whatever the crash item does."""
    if isinstance(item, int):
        return item * item
    return item.run()


class KillFromOutside:
    """Reports the worker's pid to ``path``, then sleeps until the test SIGKILLs it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __repr__(self) -> str:
        return "KillFromOutside()"

    def run(self) -> Any:
        write_json(self.path, {"pid": os.getpid()})
        time.sleep(60)
        return "not killed"


class Segfault:
    def __repr__(self) -> str:
        return "Segfault()"

    def run(self) -> Any:
        segfault()


class HardExit:
    def __repr__(self) -> str:
        return "HardExit()"

    def run(self) -> Any:
        os._exit(EXIT_CODE)


class ExitsWhenPickled:
    """A result that ends the process pickling it."""

    def __reduce__(self) -> Any:
        os._exit(PICKLE_EXIT_CODE)


class ReturnsExitingResult:
    def __repr__(self) -> str:
        return "ReturnsExitingResult()"

    def run(self) -> Any:
        return ExitsWhenPickled()


def _rebuild_or_exit(parent_pid: int) -> Any:
    if os.getpid() != parent_pid:
        os._exit(UNPICKLE_EXIT_CODE)
    return ExitsWhenUnpickled()


class ExitsWhenUnpickled:
    """A task argument that ends the worker unpickling it (but not the test process)."""

    def __repr__(self) -> str:
        return "ExitsWhenUnpickled()"

    def __reduce__(self) -> Any:
        return _rebuild_or_exit, (os.getpid(),)

    def run(self) -> Any:
        return "unpickled in the test process"


class RaisesUnpicklable:
    def __repr__(self) -> str:
        return "RaisesUnpicklable()"

    def run(self) -> Any:
        raise UnpicklableError("this exception holds a lock")


# --- large chunks (they travel in shared-memory segments) -------------------------------

_KEPT: list[Any] = []


def payload_len(item: tuple[str, bytes]) -> int:
    """``len`` of the payload; the action ``"die"`` ends the worker instead."""
    action, payload = item
    if action == "die":
        os._exit(EXIT_CODE)
    return len(payload)


def keep_and_sum(array: Any) -> int:
    """Keep the array (a view of the chunk's segment) alive in this worker; its sum."""
    _KEPT.append(array)
    return int(array.sum())


def kept_sums(_: Any = None) -> list[int]:
    return [int(a.sum()) for a in _KEPT]


def _rebuild_slowly_or_fail(parent_pid: int) -> Any:
    if os.getpid() != parent_pid:
        time.sleep(0.3)  # the chunks behind it reach the worker first
        raise ImportError("this argument cannot be rebuilt in a worker")
    return SlowlyFailsToUnpickle()


class SlowlyFailsToUnpickle:
    """A task argument that a worker fails to unpickle, a moment after it starts to."""

    def __repr__(self) -> str:
        return "SlowlyFailsToUnpickle()"

    def __reduce__(self) -> Any:
        return _rebuild_slowly_or_fail, (os.getpid(),)


class KillSelf:
    """SIGKILLs the worker running it (a crash in the middle of a run of short tasks)."""

    def __repr__(self) -> str:
        return "KillSelf()"

    def run(self) -> Any:
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)


def wait_for_file(path: str) -> str:
    """Return once ``path`` exists (the test creates it); fail after DEADLINE s."""
    deadline = time.monotonic() + DEADLINE
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)
    return "released"


def inverse_minus_five(x: float) -> float:
    """1 / (x - 5): raises ZeroDivisionError for 5 (the documentation's pool example)."""
    return 1.0 / (x - 5.0)


def raise_value_error(x: Any) -> None:
    raise ValueError(x)


def kill_me(_x: Any = None) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def put_square(q: Any, x: int) -> None:
    q.put(x * x)


class ServerLogger:
    """Logs from wherever it lives (a manager's server process)."""

    def info(self, message: str) -> None:
        log_info(message)


def log_info(message: str) -> None:
    import logging
    import sys

    logging.info(message)
    sys.stdout.flush()
