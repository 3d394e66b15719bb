"""Functions, classes and managers for ``test_managers.py``.

Child processes (spawn and forkserver ones, manager servers, client
interpreters) import them from here by reference.  A child that has a result
to report appends it to a managed list or writes a JSON file (``write_json``);
the test waits for it with a deadline.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from _targets import DEADLINE, write_json
from phalanx import managers
from phalanx.managers import BaseManager, BaseProxy, DictProxy, IteratorProxy

# --- SyncManager types, used from several children -------------------------------------


def increment_under_lock(lock: Any, value: Any, times: int) -> None:
    """``value.value += 1`` ``times`` times, each read-modify-write under ``lock``."""
    for _ in range(times):
        with lock:
            value.value = value.value + 1


def increment_reentrant(rlock: Any, counter: Any, times: int) -> None:
    """Take ``rlock`` twice (re-entrantly) around each increment of ``counter[0]``."""
    for _ in range(times):
        with rlock:
            assert rlock.acquire(timeout=DEADLINE)  # the same client thread: re-entrant
            try:
                counter[0] = counter[0] + 1
            finally:
                rlock.release()


def increment_times(counter: Any, times: int) -> None:
    """``counter.increment()`` ``times`` times (a Counter proxy)."""
    for _ in range(times):
        counter.increment()


def try_acquire(lock: Any, out: Any) -> None:
    """Report whether ``lock`` can be taken without waiting; release it if it was."""
    got = lock.acquire(False)
    if got:
        lock.release()
    out.append(got)


def fill(d: Any, lst: Any, ns: Any, index: int, times: int) -> None:
    for i in range(times):
        d[f"{index}-{i}"] = index * 1000 + i
        lst.append((index, i))
    setattr(ns, f"child{index}", os.getpid())
    d.setdefault("shared", index)


def square_queue_items(inq: Any, outq: Any) -> None:
    """``outq.put((x, x * x))`` for each ``x`` from ``inq``, until ``None``."""
    while True:
        item = inq.get(timeout=DEADLINE)
        if item is None:
            return
        outq.put((item, item * item))


def joinable_worker(q: Any, done: Any) -> None:
    """Take items from a JoinableQueue, record them, ``task_done()`` each; ``None`` ends."""
    while True:
        item = q.get(timeout=DEADLINE)
        try:
            if item is None:
                return
            time.sleep(0.01)  # join() in the test must really wait for us
            done.append(item)
        finally:
            q.task_done()


def under_semaphore(sem: Any, lock: Any, state: Any, rounds: int) -> None:
    """Enter ``sem`` ``rounds`` times; record the largest number of holders at once."""
    for _ in range(rounds):
        with sem:
            with lock:
                state["now"] += 1
                state["max"] = max(state["max"], state["now"])
            time.sleep(0.01)
            with lock:
                state["now"] -= 1


def wait_for_value(cond: Any, value: Any, target: int, out: Any) -> None:
    """Under ``cond``: ``wait_for(value.value >= target)``; report (result, value seen)."""
    with cond:
        ok = cond.wait_for(lambda: value.value >= target, timeout=DEADLINE)
        out.append((bool(ok), value.value))


def wait_notified(cond: Any, ready: Any, out: Any) -> None:
    """Announce ourselves under ``cond``, then ``wait()`` for a notify; report the result."""
    with cond:
        ready.append(os.getpid())
        out.append(bool(cond.wait(DEADLINE)))


def wait_event(event: Any, ready: Any, out: Any) -> None:
    ready.append(os.getpid())
    out.append((os.getpid(), bool(event.wait(DEADLINE))))


def wait_barrier(barrier: Any, out: Any) -> None:
    """``barrier.wait()``: report the index it returns, or "broken"."""
    try:
        out.append(barrier.wait(DEADLINE))
    except threading.BrokenBarrierError:
        out.append("broken")


def set_array_slots(arr: Any, value: Any, lock: Any, index: int) -> None:
    arr[index] = index * 10
    with lock:
        value.value = value.value + index


def use_pool(pool: Any, index: int, out: Any) -> None:
    """Use a managed Pool from a child: map, apply_async."""
    mapped = pool.map(square, range(index, index + 5))
    applied = pool.apply_async(square, (index,)).get(timeout=DEADLINE)
    out.append((index, mapped, applied))


def report_proxy_types(counter: Any, pool: Any, out: Any) -> None:
    """Which proxy types methods with a ``method_to_typeid`` return here, in a child."""
    child = counter.child(3)
    it = pool.imap(square, range(3))
    try:
        values = list(it)
    except TypeError as exc:
        values = repr(exc)
    out.append((type(child).__name__, child.increment(), type(it).__name__, values))


def square(x: int) -> int:
    return x * x


def pid_of_worker(_: Any) -> int:
    time.sleep(0.02)  # long enough that every worker gets a share
    return os.getpid()


# --- nested proxies ---------------------------------------------------------------------


def mutate_nested(outer_dict: Any, outer_list: Any) -> None:
    """Mutate through the outer proxies only: the inner referents must change."""
    outer_dict["inner"].append("child")
    outer_list[0]["child"] = os.getpid()
    plain = outer_dict["plain"]
    plain.append("lost")  # a copy: the referent keeps its value


def create_in_child(d: Any, address: Any, authkey: bytes) -> None:
    """Connect to the manager at ``address`` and leave a new managed list in ``d``."""
    manager = managers.SyncManager(address=address, authkey=authkey)
    manager.connect()
    d["made by child"] = manager.list(["from", os.getpid()])


# --- proxies in Pool tasks --------------------------------------------------------------


def append_to(lst: Any, item: Any) -> int:
    lst.append(item)
    return os.getpid()


def list_length(lst: Any) -> int:
    return len(lst)


# --- clients that die -------------------------------------------------------------------


def block_in_get(q: Any, ready: str) -> None:
    """Report readiness, then wait in ``q.get()`` (the test SIGKILLs us there)."""
    write_json(ready, {"pid": os.getpid()})
    q.get()


def hold_lock_then_block_in_get(lock: Any, q: Any, ready: str) -> None:
    assert lock.acquire(timeout=DEADLINE)
    block_in_get(q, ready)


def get_then_report(q: Any, ready: str, out: str) -> None:
    write_json(ready, {"pid": os.getpid()})
    write_json(out, {"item": q.get(timeout=DEADLINE)})


# --- custom managers --------------------------------------------------------------------


class Unpicklable(Exception):
    """An exception that cannot be pickled (it carries a lock)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class Counter:
    def __init__(self, start: int = 0) -> None:
        self.n = start

    def increment(self, by: int = 1) -> int:
        self.n += by
        return self.n

    def get(self) -> int:
        return self.n

    def secret(self) -> str:
        return "not exposed"

    def child(self, start: int) -> Counter:
        """A new Counter (a proxy to it with ``method_to_typeid``)."""
        return Counter(start)

    def fail(self, message: str) -> None:
        raise ValueError(message)

    def fail_unpicklable(self) -> None:
        raise Unpicklable("carries a lock")

    def unpicklable_result(self) -> Any:
        return threading.Lock()

    def __repr__(self) -> str:
        return f"Counter({self.n})"


class CounterProxy(BaseProxy):
    """A hand-written proxy: only what ``_exposed_`` lists can be called."""

    _exposed_ = ("increment", "get", "child", "fail", "fail_unpicklable", "unpicklable_result")
    _method_to_typeid_ = {"child": "ChildCounter"}

    def increment(self, by: int = 1) -> int:
        return self._callmethod("increment", (by,))  # type: ignore[no-any-return]

    def get(self) -> int:
        return self._callmethod("get")  # type: ignore[no-any-return]

    def child(self, start: int) -> Any:
        return self._callmethod("child", (start,))

    def fail(self, message: str) -> None:
        self._callmethod("fail", (message,))

    def fail_unpicklable(self) -> None:
        self._callmethod("fail_unpicklable")

    def unpicklable_result(self) -> Any:
        return self._callmethod("unpicklable_result")


def countdown(n: int) -> Iterator[int]:
    while n > 0:
        yield n
        n -= 1


class CustomManager(BaseManager):
    pass


CustomManager.register("Counter", Counter, CounterProxy)
# exposed= given to register(): the AutoProxy offers just these two.
CustomManager.register("LimitedCounter", Counter, exposed=("increment", "get"))
# No proxy type: an AutoProxy with every public method of the referent.
CustomManager.register("AutoCounter", Counter)
# Reached only through Counter.child (method_to_typeid): no creation method.
CustomManager.register("ChildCounter", proxytype=CounterProxy, create_method=False)
CustomManager.register("countdown", countdown, IteratorProxy)


# --- remote use -------------------------------------------------------------------------

_store: dict[str, Any] = {}


def get_store() -> dict[str, Any]:
    """The server's one shared dict."""
    return _store


class StoreManager(BaseManager):
    pass


StoreManager.register("get_store", get_store, DictProxy)


class Bomb:
    """Creates ``path`` if it is ever unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return touch, (self.path,)


def touch(path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(str(os.getpid()))


# --- lifecycle --------------------------------------------------------------------------


def record_initializer(path: str, token: str) -> None:
    write_json(path, {"pid": os.getpid(), "token": token})


def serve_in_child(path: str, authkey: bytes, port: int = 0) -> None:
    """Run a SyncManager's server in this process (``get_server().serve_forever()``)."""
    manager = managers.SyncManager(address=("127.0.0.1", port), authkey=authkey)
    server = manager.get_server()
    write_json(path, {"address": list(server.address), "pid": os.getpid()})
    server.serve_forever()


# --- shared memory ----------------------------------------------------------------------


def write_segments(shm_name: str, list_name: str) -> None:
    """Attach to both segments by name and write into them."""
    from phalanx.shared_memory import ShareableList, SharedMemory

    shm = SharedMemory(shm_name)
    shm.buf[3] = ord("!")
    shm.close()
    shared = ShareableList(name=list_name)
    shared[0] = 42
    shared.shm.close()
