"""Fixtures shared by the whole suite.

* ``start_method`` / ``ctx``: run a test once per start method.
* ``make_pool``: pools of that start method, stopped after the test.
* An autouse check that a test leaves no child process behind, neither a
  ``Process`` (``active_children()``) nor a raw child of this interpreter.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Collection, Iterator
from typing import Any

import pytest

import phalanx
from _targets import START_METHODS, bounded
from phalanx import _forkserver, _tracker
from phalanx.pool import Pool

# A suite started in the background by a shell without job control (``cmd &`` in a
# script) inherits SIGINT ignored, and so would every program it runs: the tests
# that press Ctrl-C on a program would see it ignored.  Ctrl-C as a terminal has it.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

LEAK_GRACE = 5.0
STOP_WITHIN = 10.0  # a pool's terminate() + join() must take less than this


@pytest.fixture(params=START_METHODS, ids=START_METHODS)
def start_method(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def ctx(start_method: str) -> phalanx.context.BaseContext:
    return phalanx.get_context(start_method)


@pytest.fixture(params=["phalanx", "stdlib"])
def any_ctx(request: pytest.FixtureRequest, start_method: str) -> Any:
    """The same start method's context from phalanx, and from the stdlib to compare."""
    if request.param == "phalanx":
        return phalanx.get_context(start_method)
    import multiprocessing

    return multiprocessing.get_context(start_method)


@pytest.fixture
def make_pool(ctx: Any) -> Iterator[Callable[..., Pool]]:
    """``ctx.Pool(...)`` (``Pool(..., context=ctx)`` for phalanx's own keywords), stopped after."""
    made: list[Pool] = []

    def make(*args: Any, **kwargs: Any) -> Pool:
        pool = Pool(*args, context=ctx, **kwargs) if kwargs else ctx.Pool(*args)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.terminate()
        bounded(pool.join, STOP_WITHIN)


# Helpers a test module starts for all its tests (a Dask cluster): not leaks.
LONG_LIVED: set[int] = set()


def _raw_children() -> dict[int, str]:
    """{pid: state} of every process whose parent is this one.

    The fork server and the resource tracker are excepted: they are meant to
    live as long as this process.
    """
    me = os.getpid()
    services = {_forkserver._forkserver.server_pid(), _tracker.tracker_pid(), *LONG_LIVED}
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        pid, state, ppid = int(entry), fields[0], int(fields[1])
        if ppid == me and pid not in services and not _is_helper_service(pid):
            found[pid] = state
    return found


def _is_helper_service(pid: int) -> bool:
    """A resource tracker or fork server of the stdlib, joblib or loky.

    They live as long as this process, once a test has used the stdlib for comparison.
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return False
    return b"resource_tracker" in cmdline or b"multiprocessing.forkserver" in cmdline


def check_no_leaked_children(spared: Collection[Any] = ()) -> None:
    """Fail (after reaping them) if child processes are left, but those in ``spared``."""
    spared_pids = {p.pid for p in spared}
    problems = []

    def live_children() -> list[Any]:
        return [p for p in phalanx.active_children() if p not in spared]

    deadline = time.monotonic() + LEAK_GRACE
    live = live_children()
    while live and time.monotonic() < deadline:
        for p in live:
            p.join(timeout=max(0.0, min(0.1, deadline - time.monotonic())))
        live = live_children()
    if live:
        problems.append(f"Process objects still running after {LEAK_GRACE} s: {live!r}")
        for p in live:
            p.kill()
            p.join(timeout=10)

    # A raw child (os.fork, subprocess.Popen never waited for ...) is a leak
    # too, even once it has ended: nobody reaped it.
    def raw_children() -> dict[int, str]:
        return {pid: s for pid, s in _raw_children().items() if pid not in spared_pids}

    deadline = time.monotonic() + LEAK_GRACE
    raw = raw_children()
    while any(state != "Z" for state in raw.values()) and time.monotonic() < deadline:
        time.sleep(0.01)
        raw = raw_children()
    if raw:
        problems.append(f"raw child processes left behind (pid: state): {raw}")
        for pid in raw:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass

    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(autouse=True)
def no_leaked_children() -> Iterator[None]:
    yield
    check_no_leaked_children()
