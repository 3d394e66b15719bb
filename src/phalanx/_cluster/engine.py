"""What an engine adapter provides to the cluster backend (Dask, Ray, the fake engine).

An adapter only places work: it starts ``runner.run_task(spec, task_id)`` on
some worker of the engine and says when that engine task has ended and how.
Everything else (the function, the items, the results, which chunk began
where) travels between the runner and the backend over phalanx's own
authenticated connection (the *hub*), so that blame, retries and timeouts
are the same on every engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ("Engine", "TaskEnd")


@dataclass(frozen=True)
class TaskEnd:
    """How an engine task ended, as the engine tells it.

    ``ok``: the runner returned.  Otherwise ``error`` is the engine's
    exception; ``lost`` says the engine knows its worker died (Ray's
    ``WorkerCrashedError``, Dask's ``KilledWorker``), as opposed to an error
    raised by the runner itself (a worker without phalanx, say).
    """

    ok: bool
    error: BaseException | None = None
    lost: bool = False
    cancelled: bool = False


Done = Callable[[Any, TaskEnd], None]


class Engine(Protocol):
    """A thin adapter over one engine; every call may come from the backend's thread."""

    name: str

    def capacity(self) -> int:
        """How many engine tasks can run at once now (its worker threads/CPUs)."""
        ...

    def hub_host(self) -> str:
        """The address of this machine that the engine's workers can reach."""
        ...

    def put(self, data: memoryview) -> Any:
        """Put a large buffer in the engine's store; a reference that ``submit`` takes."""
        ...

    def stored_lost(self, ref: Any) -> bool:
        """Whether the data behind ``ref`` is gone from the store (Dask loses scattered
        data with the workers that held it); the backend then puts it again."""
        ...

    def submit(self, spec: Any, task_id: int, done: Done, refs: list[Any]) -> Any:
        """Start ``runner.run_task(spec, task_id, *stored)``; call ``done(handle, end)`` at its end.

        ``stored``: the data behind ``refs`` (references from ``put``), which the
        engine resolves on the worker.  Returns a handle for ``cancel``.  ``done``
        may be called from any thread.
        """
        ...

    def cancel(self, handle: Any, force: bool) -> bool:
        """Stop an engine task; ``force``: even a running one.  True if it is stopped."""
        ...

    def hosts_lost(self) -> int:
        """How many hosts the engine has dropped so far (a count that only grows).

        An engine task placed on a host that then dropped out may never start
        nor end (Ray leaves a task leased to a dead node pending): when the
        count grows, the backend takes back the chunks of every engine task
        that has not started and runs them elsewhere.  An engine that
        reschedules such tasks itself (Dask) may always say 0.
        """
        ...

    def head_answered_since(self, since: float) -> bool:
        """Whether the engine's head (its scheduler, its control store) has answered at
        or after ``since`` (a ``time.monotonic()``); if not yet, the engine makes sure
        it is asked soon.  A worker lost with its head (Ray's workers end when the
        head dies) is not to blame: its blame waits until the head is known to be
        there, and the pool fails with the head's loss (``lost()``) if it is not."""
        ...

    def lost(self) -> str | None:
        """Why the engine can no longer run anything (its scheduler or head is gone), or None."""
        ...

    def kill(self, host: str, pid: int) -> bool:
        """Kill the engine worker process ``pid`` on ``host`` if the engine allows it."""
        ...

    def close(self) -> None:
        """Release what the adapter started (a cluster it created); never the user's."""
        ...
