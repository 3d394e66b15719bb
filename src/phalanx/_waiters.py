"""Who waits on a condition, in shared memory, and whether they still live (layer 2).

The stdlib's ``Condition`` counts its sleepers in semaphores, and ``notify()``
then waits, holding the lock and with no timeout, for every sleeper it woke
to say so: a sleeper SIGKILLed while waiting never says so, and the notifier
(and everybody after it: ``Event.set()``, the last ``Barrier.wait()``) hangs.

Here each waiter has a *slot* of its own: its process (pid and start time,
so a recycled pid is not mistaken for it), a ticket (first come, first
woken) and a semaphore that only it waits on.  ``notify(n)`` picks the n
oldest waiters that are still alive, marks them notified and posts their
semaphores; it never waits for anyone.  A waiter that died is skipped, and
its slot is taken back when one is needed.  Everything here runs under the
condition's lock, except the waiting itself.

    offset  field (the table's header)
    0       u32 slots         how many slots follow
    4       u32 high          slots ever used (the others need no look)
    8       u64 next_ticket
    16      u64 overflow      waiters without a slot (the table was full)
    24      u64 tokens        notifications for them, not yet taken

    each slot, 64 bytes
    0       sem_t             posted once when its waiter is notified
    32      i32 pid           0: a free slot
    36      i32 state         WAITING or NOTIFIED
    40      u64 start         the waiter's process start time
    48      u64 ticket

A waiter that finds every slot taken (by live waiters) waits without one:
it polls, and ``notify()`` leaves it a token.  That is slower and not
fair, but correct; size the table for the expected number of waiters.
"""

from __future__ import annotations

import ctypes
import os
import struct
import time
from typing import Any

from . import _heap, _platform

__all__ = ("NOTIFIED", "WAITING", "WaitList", "is_dead", "my_start_time")

SLOTS = 32  # waiters with a slot of their own, per condition
WAITING, NOTIFIED = 1, 2
_HEADER = 64
_SLOT = 64
_SEM = 0
_RECORD = struct.Struct("=iiQQ")  # pid, state, start, ticket at offset 32 of a slot
_TABLE = struct.Struct("=IIQQQ")  # slots, high, next_ticket, overflow, tokens
_HIGH = struct.Struct("=I")
_POLL_MIN, _POLL_MAX = 0.001, 0.02  # how a waiter without a slot polls

_start_times: dict[int, int] = {}


def my_start_time() -> int:
    """This process's start time (its identity, with the pid); cached per process."""
    pid = os.getpid()
    start = _start_times.get(pid)
    if start is None:
        start = _start_times[pid] = _platform.process_start_time(pid) or 0
    return start


def is_dead(pid: int, start: int) -> bool:
    """Whether the process ``pid`` that started at ``start`` no longer exists."""
    if pid == os.getpid():
        return False
    now = _platform.process_start_time(pid)
    return now is None or bool(start and now != start)


class WaitList:
    """The waiters of one condition (see the module docstring); use it under the lock."""

    def __init__(self, slots: int = SLOTS) -> None:
        block = _heap.malloc(_HEADER + _SLOT * slots)
        view = block.view()
        _TABLE.pack_into(view, 0, slots, 0, 0, 0, 0)
        base = _address(block)
        for i in range(slots):
            _platform.sem_init(ctypes.c_void_p(base + _HEADER + _SLOT * i + _SEM), 0)
        self._setup(block)

    def _setup(self, block: _heap.Block) -> None:
        self._block = block
        self._view = block.view()
        self._base = _address(block)
        self._slots = _TABLE.unpack_from(self._view, 0)[0]

    def __getstate__(self) -> _heap.Block:
        return self._block

    def __setstate__(self, block: _heap.Block) -> None:
        self._setup(block)

    # -- the table --------------------------------------------------------------------------

    def _table(self) -> list[int]:
        return list(_TABLE.unpack_from(self._view, 0))

    def _set_table(self, table: list[int]) -> None:
        _TABLE.pack_into(self._view, 0, *table)

    def _record(self, slot: int) -> tuple[int, int, int, int]:
        pid, state, start, ticket = _RECORD.unpack_from(self._view, _HEADER + _SLOT * slot + 32)
        return pid, state, start, ticket

    def _set_record(self, slot: int, pid: int, state: int, start: int, ticket: int) -> None:
        _RECORD.pack_into(self._view, _HEADER + _SLOT * slot + 32, pid, state, start, ticket)

    def _high(self) -> int:
        return int(_HIGH.unpack_from(self._view, 4)[0])

    def _sem(self, slot: int) -> ctypes.c_void_p:
        return ctypes.c_void_p(self._base + _HEADER + _SLOT * slot + _SEM)

    def _free(self, slot: int) -> None:
        # Its semaphore may hold the post of a notification nobody took.
        while _platform.sem_trywait(self._sem(slot)):
            pass
        self._set_record(slot, 0, 0, 0, 0)

    # -- a waiter ---------------------------------------------------------------------------

    def enter(self) -> int | None:
        """Register the calling thread as a waiter; its slot (None: waits without one)."""
        free = None
        high = self._high()
        for slot in range(high):
            if self._record(slot)[0] == 0:
                free = slot
                break
        if free is None and high < self._slots:
            free = high
            _HIGH.pack_into(self._view, 4, high + 1)
        if free is None:  # take back the slots of waiters that died
            for slot in range(high):
                pid, _state, start, _ticket = self._record(slot)
                if is_dead(pid, start):
                    self._free(slot)
                    free = slot
                    break
        table = self._table()
        if free is None:
            table[3] += 1
            self._set_table(table)
            return None
        ticket = table[2]
        table[2] += 1
        self._set_table(table)
        self._set_record(free, os.getpid(), WAITING, my_start_time(), ticket)
        return free

    def sleep(self, slot: int | None, deadline: float | None, polls: int = 0) -> None:
        """Wait (the lock released) until notified or ``deadline``.

        Without a slot: one pause of polling (longer at each of ``polls``);
        ``leave()`` then says whether a notification came.
        """
        if slot is None:
            pause = min(_POLL_MAX, _POLL_MIN * 2**polls)
            if deadline is not None:
                pause = min(pause, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)
            return
        sem = self._sem(slot)
        while True:
            # In slices: a Ctrl-C that lands just before the wait blocks is
            # seen within one (see _platform.wait_readable).
            until = time.monotonic() + _platform.INTERRUPT_CHECK
            if deadline is not None and deadline < until:
                until = deadline
            if _platform.sem_wait_until(sem, until):
                return  # notified (leave() reads it from the slot)
            if deadline is not None and time.monotonic() >= deadline:
                return

    def leave(self, slot: int | None) -> bool:
        """Unregister (the lock held again); whether the waiter was notified."""
        if slot is None:
            table = self._table()
            table[3] = max(0, table[3] - 1)
            notified = table[4] > 0
            if notified:
                table[4] -= 1
            table[4] = min(table[4], table[3])
            self._set_table(table)
            return notified
        notified = self._record(slot)[1] == NOTIFIED
        self._free(slot)
        return notified

    # -- the notifier -----------------------------------------------------------------------

    def notify(self, n: int) -> int:
        """Wake up to ``n`` live waiters, oldest first; how many were woken."""
        waiting = []
        for slot in range(self._high()):
            pid, state, start, ticket = self._record(slot)
            if pid and state == WAITING:
                waiting.append((ticket, slot, pid, start))
        waiting.sort()
        woken = 0
        everyone = n >= len(waiting)
        for _ticket, slot, pid, start in waiting:
            if woken >= n:
                break
            # Waking everyone needs no look at who lives: a dead waiter's post is
            # harmless, and its slot is taken back when one is needed.
            if not everyone and is_dead(pid, start):
                self._free(slot)
                continue
            self._set_record(slot, pid, NOTIFIED, start, _ticket)
            _platform.sem_post(self._sem(slot))
            woken += 1
        if woken < n:
            table = self._table()
            extra = min(n - woken, table[3] - table[4])
            if extra > 0:
                table[4] += extra
                self._set_table(table)
                woken += extra
        return woken

    def waiting(self) -> int:
        """How many wait now (dead ones included until noticed)."""
        count = sum(1 for slot in range(self._high()) if self._record(slot)[1] == WAITING)
        return count + self._table()[3]


def _address(block: _heap.Block) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(block.arena.buffer, block.offset))


class Counter:
    """``get_value()`` of a number computed on demand (the stdlib's semaphore names)."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def get_value(self) -> int:
        return int(self._value())
