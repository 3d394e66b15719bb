"""The Python documentation's multiprocessing examples, run on phalanx and on the stdlib.

Each program below does what one of the documentation's examples does (the
pool tour of ``mp_pool.py``, the queue workers of ``mp_workers.py``, the
custom proxies of ``mp_newtype.py``, and the inline examples of the library
page: exchanging objects, synchronization, shared state, pools, listeners and
clients, shared memory), written as a program that checks its own results.
Each runs as a script under every start method, once with ``import phalanx
as multiprocessing`` and once with the stdlib, and both must print the same.

One part of ``mp_pool.py`` is not here: its "garbage collection" check
(dropping the last reference to a pool with 100 tasks pending kills the
workers within 0.2 s) fails on the stdlib too: the pending results keep the
pool alive, there as here, until its tasks are done.  And its "threads"
mode catches ``multiprocessing.dummy.TimeoutError``, which neither library
has: the tour takes ``TimeoutError`` from the top-level module.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from _targets import run_python

MODULES = ["phalanx", "multiprocessing"]

PRELUDE = """\
import sys
import {module} as multiprocessing
"""

POOL_TOUR = """\
import random
import time

TimeoutError = multiprocessing.TimeoutError  # multiprocessing.dummy has none


def calculate(func, args):
    result = func(*args)
    return f"{{multiprocessing.current_process().name}}: {{func.__name__}}{{args}} = {{result}}"


def calculatestar(args):
    return calculate(*args)


def mul(a, b):
    time.sleep(0.05 * random.random())
    return a * b


def plus(a, b):
    time.sleep(0.05 * random.random())
    return a + b


def reciprocal_of_x_minus_5(x):
    return 1.0 / (x - 5.0)


def pow3(x):
    return x**3


def noop(x):
    pass


def value(line):
    return int(line.rsplit(" = ", 1)[1])


def tour(threads):
    pool = multiprocessing.Pool(4)
    tasks = [(mul, (i, 7)) for i in range(10)] + [(plus, (i, 8)) for i in range(10)]
    expected = [func(*args) for func, args in tasks]
    results = [pool.apply_async(calculate, task) for task in tasks]
    ordered = pool.imap(calculatestar, tasks)
    unordered = pool.imap_unordered(calculatestar, tasks)
    assert [value(r.get(timeout=60)) for r in results] == expected
    assert [value(line) for line in ordered] == expected
    assert sorted(value(line) for line in unordered) == sorted(expected)
    names = {{line.split(":")[0] for line in pool.map(calculatestar, tasks)}}
    assert all(("Thread" if threads else "PoolWorker-") in name for name in names), names
    print("apply_async, imap, imap_unordered, map: ok")

    n = 100_000
    cubes = [x**3 for x in range(n)]
    assert pool.map(pow3, range(n)) == cubes
    assert list(pool.imap(pow3, range(n), chunksize=n // 8)) == cubes
    nones = [None] * 1_000_000
    assert pool.map(noop, nones) == nones
    assert list(pool.imap(noop, nones, chunksize=len(nones) // 8)) == nones
    print("large maps: ok")

    for call in (
        lambda: pool.apply(reciprocal_of_x_minus_5, (5,)),
        lambda: pool.map(reciprocal_of_x_minus_5, range(10)),
        lambda: list(pool.imap(reciprocal_of_x_minus_5, range(10))),
    ):
        try:
            call()
        except ZeroDivisionError:
            pass
        else:
            raise AssertionError("expected ZeroDivisionError")
    it = pool.imap(reciprocal_of_x_minus_5, range(10))
    raised = []
    for i in range(11):
        try:
            next(it)
        except ZeroDivisionError:
            raised.append(i)
        except StopIteration:
            break
    assert raised == [5] and i == 10, (raised, i)
    print("errors from apply, map, imap and next(): ok")

    res = pool.apply_async(calculate, (mul, (3, 7)))
    while True:
        try:
            assert value(res.get(0.02)) == 21
            break
        except TimeoutError:
            pass
    it = pool.imap(calculatestar, tasks)
    got = []
    while True:
        try:
            got.append(value(it.next(0.02)))
        except StopIteration:
            break
        except TimeoutError:
            pass
    assert got == expected
    print("get() and next() with a timeout: ok")

    seen = []
    pool.apply_async(mul, (7, 8), callback=seen.append).wait()
    pool.map_async(pow3, range(10), callback=seen.extend).wait()
    assert seen == [56] + [x**3 for x in range(10)], seen
    assert not pool._cache, pool._cache
    print("callbacks, empty _cache: ok")

    if not threads:
        assert all(worker.is_alive() for worker in pool._pool)
    last = pool.apply_async(time.sleep, [0.2])
    pool.close()
    pool.join()
    assert last.get() is None
    assert not any(worker.is_alive() for worker in pool._pool)
    print("close: ok")

    pool = multiprocessing.Pool(2)
    assert pool.apply(pow3, [2]) == 8
    pending = [pool.apply_async(time.sleep, [0.1]) for _ in range(100)]
    pool.terminate()
    pool.join()
    assert not any(worker.is_alive() for worker in pool._pool)
    print("terminate: ok")


if __name__ == "__main__":
    multiprocessing.freeze_support()
    if sys.argv[1] == "threads":
        import {module}.dummy as multiprocessing
        tour(threads=True)
    else:
        multiprocessing.set_start_method(sys.argv[1])
        tour(threads=False)
"""

QUEUE_WORKERS = """\
import random
import time


def worker(tasks, done):
    for func, args in iter(tasks.get, "STOP"):
        done.put((multiprocessing.current_process().name, func.__name__, args, func(*args)))


def mul(a, b):
    time.sleep(0.02 * random.random())
    return a * b


def plus(a, b):
    time.sleep(0.02 * random.random())
    return a + b


if __name__ == "__main__":
    multiprocessing.freeze_support()
    multiprocessing.set_start_method(sys.argv[1])
    first = [(mul, (i, 7)) for i in range(20)]
    then = [(plus, (i, 8)) for i in range(10)]
    tasks = multiprocessing.Queue()
    done = multiprocessing.Queue()
    for task in first:
        tasks.put(task)
    workers = [multiprocessing.Process(target=worker, args=(tasks, done)) for _ in range(4)]
    for w in workers:
        w.start()
    results = [done.get(timeout=60) for _ in first]
    for task in then:
        tasks.put(task)
    results += [done.get(timeout=60) for _ in then]
    for _ in workers:
        tasks.put("STOP")
    for w in workers:
        w.join(60)
        assert w.exitcode == 0, w
    assert sorted(r[3] for r in results) == sorted(f(*a) for f, a in first + then)
    assert {{r[0] for r in results}} <= {{w.name for w in workers}}
    print(len(results), "results from", len(workers), "workers")
"""

NEW_TYPES = """\
import operator
from {module}.managers import BaseManager, BaseProxy


class Foo:
    def f(self):
        return "you called Foo.f()"

    def g(self):
        return "you called Foo.g()"

    def _h(self):
        return "you called Foo._h()"


def squares():
    for i in range(10):
        yield i * i


class GeneratorProxy(BaseProxy):
    _exposed_ = ["__next__"]

    def __iter__(self):
        return self

    def __next__(self):
        return self._callmethod("__next__")


def get_operator_module():
    return operator


class MyManager(BaseManager):
    pass


MyManager.register("Foo1", Foo)
MyManager.register("Foo2", Foo, exposed=("g", "_h"))
MyManager.register("squares", squares, proxytype=GeneratorProxy)
MyManager.register("operator", get_operator_module)

if __name__ == "__main__":
    multiprocessing.freeze_support()
    multiprocessing.set_start_method(sys.argv[1])
    with MyManager() as manager:
        f1 = manager.Foo1()
        print(f1.f(), f1.g())
        assert not hasattr(f1, "_h")
        assert sorted(f1._exposed_) == ["f", "g"]
        f2 = manager.Foo2()
        print(f2.g(), f2._h())
        assert not hasattr(f2, "f")
        assert sorted(f2._exposed_) == ["_h", "g"]
        print(list(manager.squares()))
        op = manager.operator()
        print(op.add(23, 45), op.pow(2, 94))
        assert "add" in op._exposed_ and "pow" in op._exposed_
"""

LIBRARY_PAGE = """\
import array
import os
import time
from {module} import shared_memory
from {module}.connection import Client, Listener


def f(x):
    return x * x


def info(q):
    q.put((os.getpid(), os.getppid(), __name__, multiprocessing.current_process().name))


def answer_in_queue(q):
    q.put([42, None, "hello"])


def answer_in_pipe(conn):
    conn.send([42, None, "hello"])
    conn.close()


def locked_print(lock, i):
    with lock:
        print("hello world", i, flush=True)


def modify(n, a):
    n.value = 3.1415927
    for i in range(len(a)):
        a[i] = -a[i]


def fill(d, l):
    d[1] = "1"
    d["2"] = 2
    d[0.25] = None
    l.reverse()


def client(address):
    with Client(address, authkey=b"secret password") as conn:
        conn.send(conn.recv())
        conn.send_bytes(b"hello")
        conn.send_bytes(array.array("i", [42, 1729]))


if __name__ == "__main__":
    multiprocessing.freeze_support()
    multiprocessing.set_start_method(sys.argv[1])

    # Process and "exchanging objects between processes"
    q = multiprocessing.Queue()
    p = multiprocessing.Process(target=info, args=(q,))
    p.start()
    pid, ppid, name, process_name = q.get(timeout=60)
    p.join(60)
    assert (pid, process_name) == (p.pid, p.name)
    # (Under forkserver, the child's parent is the fork server.)
    assert (ppid == os.getpid()) == (sys.argv[1] != "forkserver"), (ppid, os.getpid())
    print("module name in the child:", name)  # __main__ under fork, else __mp_main__
    p = multiprocessing.Process(target=answer_in_queue, args=(q,))
    p.start()
    print(q.get(timeout=60))
    p.join(60)
    parent_conn, child_conn = multiprocessing.Pipe()
    p = multiprocessing.Process(target=answer_in_pipe, args=(child_conn,))
    p.start()
    print(parent_conn.recv())
    p.join(60)

    # Synchronization between processes
    lock = multiprocessing.Lock()
    procs = [multiprocessing.Process(target=locked_print, args=(lock, i)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0

    # Sharing state: shared memory, then a server process
    num = multiprocessing.Value("d", 0.0)
    arr = multiprocessing.Array("i", range(10))
    p = multiprocessing.Process(target=modify, args=(num, arr))
    p.start()
    p.join(60)
    print(num.value, arr[:])
    with multiprocessing.Manager() as manager:
        d = manager.dict()
        l = manager.list(range(10))
        p = multiprocessing.Process(target=fill, args=(d, l))
        p.start()
        p.join(60)
        print(sorted(d.items(), key=repr), l)

    # Using a pool of workers
    with multiprocessing.Pool(processes=4) as pool:
        print(pool.map(f, range(10)))
        print(sorted(pool.imap_unordered(f, range(10))))
        print(pool.apply_async(f, (20,)).get(timeout=60))
        assert pool.apply_async(os.getpid, ()).get(timeout=60) != os.getpid()
        pids = {{pool.apply_async(os.getpid, ()).get(timeout=60) for _ in range(4)}}
        assert os.getpid() not in pids
        try:
            pool.apply_async(time.sleep, (10,)).get(timeout=1)
        except multiprocessing.TimeoutError:
            print("We lacked patience and got a multiprocessing.TimeoutError")
        pool.terminate()

    # Listeners and clients
    with Listener(("localhost", 0), authkey=b"secret password") as listener:
        p = multiprocessing.Process(target=client, args=(listener.address,))
        p.start()
        with listener.accept() as conn:
            conn.send([2.25, None, "junk", float])
            print(conn.recv())
            print(conn.recv_bytes())
            buf = array.array("i", [0] * 10)
            print(conn.recv_bytes_into(buf), buf.tolist()[:2])
        p.join(60)

    # multiprocessing.shared_memory
    shm_a = shared_memory.SharedMemory(create=True, size=10)
    try:
        shm_a.buf[:4] = bytearray([22, 33, 44, 55])
        shm_b = shared_memory.SharedMemory(shm_a.name)
        print(bytes(shm_b.buf[:5]))
        shm_b.close()
    finally:
        shm_a.close()
        shm_a.unlink()
    sl = shared_memory.ShareableList(["howdy", b"HoWdY", -273.154, 100, None, True, 42])
    try:
        other = shared_memory.ShareableList(name=sl.shm.name)
        other[2] = 1.5
        print([sl[i] for i in range(len(sl))], sl.count(None))
        other.shm.close()
    finally:
        sl.shm.close()
        sl.shm.unlink()
"""

PROGRAMS = {
    "pool_tour": POOL_TOUR,
    "queue_workers": QUEUE_WORKERS,
    "new_types": NEW_TYPES,
    "library_page": LIBRARY_PAGE,
}


def _run(program: str, module: str, argument: str, tmp_path: Path) -> str:
    script = tmp_path / f"{program}_{module}.py"
    script.write_text(
        PRELUDE.format(module=module) + PROGRAMS[program].format(module=module), encoding="utf-8"
    )
    result = run_python([str(script), argument], timeout=120)
    assert result.returncode == 0, f"{module}:\n{result.stderr}"
    return result.stdout


def _normalized(program: str, output: str) -> str:
    if program == "library_page":  # three children print in the order they get the lock
        lines = output.splitlines()
        hello = sorted(line for line in lines if line.startswith("hello world"))
        return "\n".join(hello + [line for line in lines if not line.startswith("hello world")])
    return output


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_documentation_example(program: str, start_method: str, tmp_path: Path) -> None:
    outputs = {m: _normalized(program, _run(program, m, start_method, tmp_path)) for m in MODULES}
    assert outputs["phalanx"] == outputs["multiprocessing"]
    assert outputs["phalanx"].strip()


def test_the_pool_tour_with_threads(tmp_path: Path) -> None:
    outputs = {m: _run("pool_tour", m, "threads", tmp_path) for m in MODULES}
    assert outputs["phalanx"] == outputs["multiprocessing"]
