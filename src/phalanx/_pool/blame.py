"""Who is to blame when a pool worker dies: the supervisor's decisions, without I/O (layer 4).

Kept apart from the supervisor's loop so that each decision can be tested
from a table of events, without processes:

* ``blame``: which chunk a dead worker was running, from what it wrote into
  its progress words (see ``worker``).  A worker that had begun none
  of its chunks (it died in its initializer, or idle) blames nobody.
* ``StartFailures``: workers that die before they are ready, in a row; when
  the pool must give up instead of starting workers forever.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence

from .. import _platform
from ..errors import TaskTimeoutError, WorkerLostError
from .results import Chunk

__all__ = (
    "INIT_FAILURES",
    "INIT_KILLS",
    "StartFailures",
    "blame",
    "death_error",
    "how",
    "signal_of",
)

INIT_FAILURES = 3  # initializer failures (or deaths before READY) in a row that break the pool
INIT_KILLS = 10  # ... workers killed from outside before READY, in a row


def blame(
    inflight: Sequence[Chunk], *, sent: int, ready: bool, begun: int, finished: int, decoding: bool
) -> Chunk | None:
    """The chunk a dead worker was running, or None if it had begun none of them.

    ``inflight``: the chunks it held, oldest first; ``sent``: how many of them
    had left in a datagram; ``ready``: it had said READY (initializer done);
    ``begun``/``finished``/``decoding``: its progress words.

    Chunks of a datagram it died unpickling become *suspects*, sent alone
    from then on (``solo``); a suspect that kills a worker again while it is
    unpickled, alone, is to blame.  (One death there may be a kill from
    outside that happened to land then; two are the task's doing.)
    """
    if sent <= 0 or not ready or not inflight:
        return None  # it had received nothing, or never got past its initializer
    head = inflight[0]
    if head.seq > begun:
        # It died before starting the chunk: idle (killed from outside:
        # nobody to blame) or unpickling the datagram that carried it.
        if not decoding:
            return None
        if head.batch_size == 1 and head.suspect:
            return head
        for chunk in inflight:
            if chunk.batch == head.batch:
                chunk.solo = chunk.suspect = True
        return None
    if begun > finished:
        # Answers of chunks it had finished were lost with it: those run
        # again; the chunk it was running is the one to blame.
        return next((c for c in inflight if c.seq == begun), None)
    return None


def death_error(
    chunk: Chunk, pid: int, exitcode: int | None, timed_out: bool, retries: int
) -> BaseException | None:
    """What the chunk a dead worker was running fails with; None: run it again (``retries``)."""
    if timed_out:  # we killed it
        limit = (chunk.timeout or 0) * chunk.size
        return TaskTimeoutError(
            f"task {chunk.describe()} ran over its timeout of {limit:g} s; "
            f"its worker (pid {pid}) was killed and replaced"
        )
    chunk.attempts += 1
    if chunk.attempts <= retries:
        return None
    tries = f" (after {chunk.attempts} attempts)" if chunk.attempts > 1 else ""
    return WorkerLostError(
        f"pool worker {pid} {how(exitcode)} while running {chunk.describe()}{tries}",
        pid=pid,
        exitcode=exitcode,
        signal=signal_of(exitcode),
        task=chunk.describe(),
    )


class StartFailures:
    """Counts workers that failed before they were ready, in a row (READY resets it).

    An initializer that raises, or a worker that exits or crashes before it
    is ready, is a *failure*: ``INIT_FAILURES`` in a row break the pool (as
    the stdlib does not: it starts workers forever).  SIGKILL and SIGTERM come
    from outside (or the OOM killer): only ``INIT_KILLS`` of those in a row do.
    """

    def __init__(self) -> None:
        self.failures = 0
        self.kills = 0

    def ready(self) -> None:
        self.failures = self.kills = 0

    def failed(self, what: str) -> str | None:
        """One more failure; the reason to break the pool, if it is time."""
        self.failures += 1
        if self.failures >= INIT_FAILURES:
            return f"{what} {self.failures} times in a row"
        return None

    def died(self, exitcode: int | None) -> str | None:
        """A worker ended before READY with ``exitcode``; the reason to break, if it is time."""
        if exitcode in (-signal.SIGKILL, -signal.SIGTERM):
            self.kills += 1
            if self.kills >= INIT_KILLS:
                return f"{self.kills} pool workers in a row were killed starting"
            return None
        return self.failed("pool workers died before they were ready")


def signal_of(exitcode: int | None) -> str | None:
    """The name of the signal that ended a process (``SIGKILL``), if one did."""
    if exitcode is None or exitcode >= 0:
        return None
    return _platform.signal_name(-exitcode)


def how(exitcode: int | None) -> str:
    """How a worker ended, for error messages: ``was killed by SIGKILL(-9)``..."""
    if exitcode is None:
        return "exited (exit code unknown)"
    if exitcode < 0:
        return f"was killed by {signal_of(exitcode)}({exitcode})"
    return f"exited with code {exitcode}"
