"""Who is blamed when a pool worker dies (``phalanx._pool.blame``): tables, no processes."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from phalanx._pool.blame import INIT_FAILURES, INIT_KILLS, StartFailures, blame
from phalanx._pool.results import APPLY, Chunk


class _Job:
    def _chunk_start(self, index: int) -> int:
        return index


def chunks(*batches: int) -> list[Chunk]:
    """Chunks numbered 1, 2, ... sent in datagrams of the given sizes."""
    made: list[Chunk] = []
    for batch, size in enumerate(batches):
        for _ in range(size):
            chunk = Chunk(_Job(), len(made), abs, APPLY, ((len(made),), {}))  # type: ignore[arg-type]
            chunk.seq = len(made) + 1
            chunk.batch = batch
            chunk.batch_size = size
            made.append(chunk)
    return made


# (datagram sizes, sent, ready, begun, finished, decoding) -> seq of the culprit (None: nobody)
CASES: dict[str, tuple[tuple[int, ...], int, bool, int, int, bool, int | None]] = {
    "nothing sent yet": ((1,), 0, True, 0, 0, False, None),
    "died in its initializer": ((1,), 1, False, 0, 0, False, None),
    "died in its initializer, more queued": ((1, 1), 2, False, 0, 0, False, None),
    "died idle, the task unread": ((1,), 1, True, 0, 0, False, None),
    "died running the first": ((1, 1), 2, True, 1, 0, False, 1),
    "died running the second": ((1, 1), 2, True, 2, 1, False, 2),
    "died between two chunks": ((1, 1), 2, True, 1, 1, False, None),
    "died running one of a datagram": ((3,), 1, True, 2, 1, False, 2),
    "died with finished answers unsent": ((4,), 4, True, 3, 2, False, 3),
    "died unpickling a lone chunk (first time)": ((1,), 1, True, 0, 0, True, None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_blame(case: str) -> None:
    sizes, sent, ready, begun, finished, decoding, culprit = CASES[case]
    inflight = chunks(*sizes)
    got = blame(inflight, sent=sent, ready=ready, begun=begun, finished=finished, decoding=decoding)
    assert (got.seq if got is not None else None) == culprit


def test_a_datagram_that_killed_its_worker_unpickling_is_split_then_blamed() -> None:
    inflight = chunks(3, 1)
    assert blame(inflight, sent=2, ready=True, begun=0, finished=0, decoding=True) is None
    assert [(c.solo, c.suspect) for c in inflight] == [(True, True)] * 3 + [(False, False)]
    # Sent alone now; the one that kills a worker again while unpickled is to blame.
    alone = chunks(1)
    alone[0].suspect = alone[0].solo = True
    assert blame(alone, sent=1, ready=True, begun=0, finished=0, decoding=True) is alone[0]
    # ... but not if the worker died idle this time.
    assert blame(alone, sent=1, ready=True, begun=0, finished=0, decoding=False) is None


def run(events: list[Any]) -> list[str | None]:
    failures = StartFailures()
    out: list[str | None] = []
    for event in events:
        if event == "ready":
            failures.ready()
            out.append(None)
        elif event == "raised":
            out.append(failures.failed("the pool's initializer failed"))
        else:
            out.append(failures.died(event))
    return out


def test_start_failures_in_a_row_break_the_pool() -> None:
    assert run(["raised"] * INIT_FAILURES)[-1] == (
        f"the pool's initializer failed {INIT_FAILURES} times in a row"
    )
    assert run([3] * INIT_FAILURES)[-1] == (
        f"pool workers died before they were ready {INIT_FAILURES} times in a row"
    )
    assert run([-signal.SIGSEGV, "raised", 1])[-1] is not None
    assert not any(run(["raised", "raised", "ready", "raised", "raised"]))


def test_kills_from_outside_break_the_pool_only_many_in_a_row() -> None:
    kills = [-signal.SIGKILL, -signal.SIGTERM] * INIT_KILLS
    assert not any(run(kills[: INIT_KILLS - 1]))
    assert run(kills[:INIT_KILLS])[-1] == f"{INIT_KILLS} pool workers in a row were killed starting"
    assert not any(run([-signal.SIGKILL] * (INIT_KILLS - 1) + ["ready"] + [-signal.SIGKILL] * 5))
