"""What a pool's supervisor and its workers say to each other, defined once for both.

Each worker has its own SEQPACKET socketpair with the supervisor (``supervisor``
on one end, ``worker`` on the other) and a small block of shared memory, its
progress words.  Chunks are answered in the order they came, so no message
carries an id: the supervisor always knows which chunk a worker is running,
and which one it held if it dies.

**Down** (supervisor to worker): one datagram is a list of ``Task`` (the
chunks of one batch: small chunks go several to a datagram when the pool has a
backlog), or None: exit.  A function travels once per worker and is then
named by its ``fid`` (a lambda pickled by value is not re-pickled for every
task).

**Up** (worker to supervisor): ``(tag, value, reusable)`` with the tags below;
``reusable`` says that the chunk came in a shared-memory segment that nothing
maps any more, so the supervisor may write the next large chunk into it (see
``_segments``).  Answers of short chunks travel several to a datagram,
``(MANY, [answer, ...], False)``, each answer pickled as its chunk ends
(bytes), or, when its value is small and made of plain values that cannot fail
to unpickle, as the ``(tag, value, reusable)`` tuple itself (``decode_answer``
reads both).

**Progress words.**  Each chunk carries a sequence number, and the worker
writes into a word of shared memory the number of the chunk it starts
(``BEGUN``) and of the last one whose answer is ready (``FINISHED``), and a
third word says that it is unpickling a datagram (``DECODING``).  When a
worker dies, the supervisor reads them and ``blame`` decides: the chunk begun
but not finished is the one to blame, a datagram being unpickled is suspect
(its chunks run alone, elsewhere), answers finished but never sent are run
again, and chunks not begun go to other workers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, TypeAlias

from .._channel import decode

__all__ = (
    "BEGUN",
    "DECODING",
    "FAILED",
    "FINISHED",
    "INIT_FAILED",
    "MANY",
    "OK",
    "PROGRESS_SIZE",
    "READY",
    "RESEND",
    "UNREADABLE",
    "Answer",
    "Task",
    "TaskTuple",
    "decode_answer",
)


class Task(NamedTuple):
    """One chunk, as it travels down (as a plain ``TaskTuple``: see below)."""

    fid: int  # the function's number for this pool
    func: Callable[..., Any] | None  # the function, the first time this worker gets it
    forget: int | None  # a function number the worker may drop (it keeps a few)
    kind: int  # how the payload calls it: results.APPLY, MAP or STARMAP
    payload: Any  # (args, kwds) for APPLY; the items for MAP and STARMAP
    seq: int  # its number, for the progress words
    urgent: bool  # it has a deadline: answer it at once


# On the wire a task is the plain tuple of ``Task``'s fields, in that order:
# both sides build and unpack it positionally, typed by this alias (which a test
# holds equal to ``Task``'s fields).  A ``Task`` instance itself costs about
# 1 us more per task to build, pickle and unpickle (Python-level __new__ and
# __getnewargs__ on both sides), a quarter of an apply_async round trip.
TaskTuple: TypeAlias = tuple[int, Callable[..., Any] | None, int | None, int, Any, int, bool]

# Answers: (tag, value, reusable).
Answer: TypeAlias = tuple[int, Any, bool]
OK = 0  # value: the result (a list for map chunks)
FAILED = 1  # value: the exception (with the remote traceback)
INIT_FAILED = 2  # value: the initializer's exception; the worker then exits
UNREADABLE = 3  # value: why the task could not be unpickled
READY = 4  # the initializer is done: timeouts count from here (sent once, first)
RESEND = 5  # the chunk named a function this worker never got: send it again with it
MANY = 6  # value: several answers, each a pickled (tag, value, reusable)

BEGUN, FINISHED, DECODING = 0, 1, 2  # words of the progress block, in this order
PROGRESS_SIZE = 24


def decode_answer(answer: bytes | Answer) -> Answer:
    """One answer of a ``MANY`` datagram, as the supervisor reads it: held inline (a
    tuple), or pickled alone; one that cannot be unpickled is that chunk's failure."""
    if isinstance(answer, tuple):
        return answer
    try:
        tag, value, reusable = decode(answer, None)
    except Exception as exc:
        return FAILED, exc, False
    return tag, value, reusable
