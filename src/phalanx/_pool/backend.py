"""The interface between a pool's front (``Pool``, ``ProcessPoolExecutor``) and what runs chunks.

Three backends implement it: processes of this machine
(``supervisor.ProcessBackend``), threads (``threads.ThreadBackend``)
and a cluster engine (``_cluster.backend.ClusterBackend``).  The front makes
``Chunk`` objects and hands them over with ``submit``; a backend reports each
chunk exactly once through ``chunk.job._set`` (or ``results.deliver``).
"""

from __future__ import annotations

from typing import Any, Protocol

from .results import Chunk

__all__ = ("PoolBackend", "cluster_backend")


class PoolBackend(Protocol):
    """What ``Pool`` and ``ProcessPoolExecutor`` need of a backend."""

    size: int  # how many chunks run at once (the front sizes chunks and read-ahead by it)
    state: str  # "RUN", "CLOSE" or "TERMINATE"
    broken: BaseException | None  # set once the backend can run nothing more
    workers: list[Any]  # what ``Pool._pool`` lists

    def submit(self, chunks: list[Chunk]) -> None:
        """Run these chunks (fails them at once if the backend is terminated or broken)."""
        ...

    def feeder_started(self) -> None:
        """An imap feeder will submit more: a closed backend waits for it."""
        ...

    def feeder_done(self) -> None: ...

    def close(self) -> None:
        """Accept nothing new; finish what was submitted, then end."""
        ...

    def terminate(self) -> None:
        """Stop now: unfinished chunks fail with ``PoolTerminatedError``; returns once ended."""
        ...

    def join(self, timeout: float | None = None) -> None: ...

    def repopulate(self) -> None: ...


def cluster_backend(
    spec: Any,
    processes: int | None,
    initializer: Any,
    initargs: tuple[Any, ...],
    retries: int,
    maxtasks: int | None = None,
) -> PoolBackend:
    """A backend on the cluster engine that ``backend=`` names (imported only then).

    ``maxtasks`` (``maxtasksperchild``): only engines whose worker processes can be
    retired after n tasks take it (Ray's ``max_calls``); others raise ``ValueError``.
    """
    from .._cluster.backend import ClusterBackend
    from ..cluster import engine_for

    engine = engine_for(spec)
    if maxtasks is not None:
        limit = getattr(engine, "limit_tasks_per_process", None)
        if limit is None or not limit(maxtasks):
            engine.close()
            raise ValueError(
                f"maxtasksperchild is not supported on {engine.name}: its worker processes "
                "are the engine's own, phalanx cannot retire them (leave it None)"
            )
    return ClusterBackend(engine, processes, initializer, initargs, retries, maxtasks)
