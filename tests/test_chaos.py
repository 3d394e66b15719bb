"""What an adversary broke (issue 13), each defect pinned by a regression test.

Each section is one class of defect: a regression test that drives the race
to the exact point where one can (a hook or a signal at that point), and a
stress test that repeats the abuse for many rounds within a bounded time.
Real processes, real signals, real sockets; every blocking call has a
deadline; each test judges only the processes, ports and segments it made.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import _chaos_targets as c
import _queue_targets
import _sync_targets
import _targets
import phalanx
import phalanx._listener
import phalanx.connection
import phalanx.managers
from _targets import DEADLINE, bounded, kill, start, wait_for_json, wait_until
from phalanx._wire.handshake import BANNER_FRAME
from phalanx.errors import AbandonedLockWarning
from phalanx.futures import ProcessPoolExecutor
from phalanx.pool import Pool, PoolTerminatedError, WorkerLostError

STOP_WITHIN = 10.0


def worker_pids(pool: Pool) -> set[int]:
    return {p.pid for p in pool._pool}


# --- a function that is not callable (defect 2) -----------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.apply_async(None),
        lambda p: p.apply(None, (1,)),
        lambda p: p.map(None, [1, 2]),
        lambda p: p.map_async(42, [1, 2]),
        lambda p: p.starmap(None, [(1,)]),
        lambda p: p.starmap_async("f", [(1,)]),
        lambda p: p.imap(None, [1]),
        lambda p: p.imap_unordered(None, [1]),
    ],
    ids=[
        "apply_async",
        "apply",
        "map",
        "map_async",
        "starmap",
        "starmap_async",
        "imap",
        "imap_unordered",
    ],
)
def test_a_function_that_is_not_callable_is_refused(
    make_pool: Callable[..., Pool], call: Callable[[Pool], Any]
) -> None:
    """It used to reach the worker as "function not sent", which asked again forever."""
    pool = make_pool(1)
    with pytest.raises(TypeError, match="func must be callable"):
        call(pool)
    assert pool.apply_async(c.slow_square, (3,)).get(timeout=DEADLINE) == 9


def test_the_executor_refuses_a_function_that_is_not_callable(ctx: Any) -> None:
    with ProcessPoolExecutor(1, mp_context=ctx) as executor:
        with pytest.raises(TypeError, match="fn must be callable"):
            executor.submit(None)  # type: ignore[arg-type]
        assert executor.submit(c.slow_square, 4).result(timeout=DEADLINE) == 16


# --- lock takeover (defect 8) -----------------------------------------------------------------


def test_a_recoverer_killed_in_its_warning_leaves_the_lock_recoverable(
    ctx: Any, tmp_path: Path
) -> None:
    """The lock is on record as the recoverer's before the warning can block."""
    lock = ctx.Lock()
    owner = start(ctx, _sync_targets.hold_then_sleep, lock, str(tmp_path / "owner"))
    try:
        wait_for_json(tmp_path / "owner")
    finally:
        kill(owner)
    recoverer = start(ctx, c.take_over_then_hang_in_the_warning, lock, str(tmp_path / "rec"))
    try:
        assert "hung" not in wait_for_json(tmp_path / "rec")  # inside the warning
    finally:
        kill(recoverer)
    t0 = time.monotonic()
    with pytest.warns(AbandonedLockWarning, match=rf"pid {recoverer.pid}\b"):
        assert lock.acquire(timeout=5) is True
    assert time.monotonic() - t0 < 3.0
    lock.release()


@pytest.mark.stress
def test_stress_recoverers_killed_at_random_moments(tmp_path: Path) -> None:
    """20 rounds: the owner dies holding the lock, its recoverer dies at a random moment."""
    ctx = phalanx.get_context("fork")
    rng = random.Random(13)
    lock = ctx.Lock()
    owner = start(ctx, _sync_targets.hold_then_sleep, lock, str(tmp_path / "owner"))
    try:
        wait_for_json(tmp_path / "owner")
    finally:
        kill(owner)
    for round_ in range(20):
        ready = str(tmp_path / f"rec{round_}")
        recoverer = start(ctx, c.take_over_then_hang_in_the_warning, lock, ready)
        time.sleep(rng.uniform(0.0, 0.4))  # before, during or after its takeover
        recoverer.kill()
        recoverer.join(DEADLINE)
        assert recoverer.exitcode == -signal.SIGKILL
    # Whoever the last owner on record is, it is dead: the lock comes back.
    t0 = time.monotonic()
    with pytest.warns(AbandonedLockWarning):
        assert lock.acquire(timeout=5) is True
    assert time.monotonic() - t0 < 3.0
    lock.release()


# --- blame: only a task the worker had begun (defect 6) ---------------------------------------


def _sent_to_a_worker(pool: Pool) -> bool:
    return any(w.sent for w in pool._backend.workers)


def test_a_worker_killed_in_its_initializer_blames_no_task(
    make_pool: Callable[..., Pool], tmp_path: Path
) -> None:
    gate = tmp_path / "first"
    pool = make_pool(1, initializer=c.first_worker_hangs_in_init, initargs=(str(gate),))
    result = pool.apply_async(c.slow_square, (3,))
    pid = wait_for_json(gate / "pid.json")["pid"]
    wait_until(lambda: _sent_to_a_worker(pool), what="the task sent to the worker")
    os.kill(pid, signal.SIGKILL)
    assert result.get(timeout=DEADLINE) == 9  # run by the replacement, not blamed


def test_a_worker_killed_idle_blames_no_task(make_pool: Callable[..., Pool]) -> None:
    """The task is in the worker's link, not yet read, when the worker is killed."""
    pool = make_pool(1)
    assert pool.apply(c.slow_square, (2,)) == 4
    (pid,) = worker_pids(pool)
    os.kill(pid, signal.SIGSTOP)  # idle: it cannot read what comes now
    try:
        result = pool.apply_async(c.slow_square, (3,))
        wait_until(lambda: _sent_to_a_worker(pool), what="the task sent to the worker")
    finally:
        os.kill(pid, signal.SIGKILL)
    assert result.get(timeout=DEADLINE) == 9


def test_a_worker_killed_while_unpickling_a_task_does_not_fail_it_at_once(
    make_pool: Callable[..., Pool], tmp_path: Path
) -> None:
    """Killed from outside in the middle of unpickling: the task runs again, alone."""
    pool = make_pool(1)
    assert pool.apply(c.value_of, (1,)) == 1
    result = pool.apply_async(c.value_of, (c.SlowToUnpickleOnce(str(tmp_path / "gate"), 5),))
    pid = wait_for_json(tmp_path / "gate" / "pid.json")["pid"]
    os.kill(pid, signal.SIGKILL)
    assert result.get(timeout=DEADLINE) == 5


@pytest.mark.parametrize("code", [3, -signal.SIGSEGV])
def test_workers_that_always_die_starting_break_the_pool(
    make_pool: Callable[..., Pool], code: int
) -> None:
    """Nothing to blame, but no endless restarts either: the pool breaks, loudly."""
    init: Any = c.exit_in_init if code > 0 else _targets.segfault
    pool = make_pool(1, initializer=init, initargs=(code,) if code > 0 else ())
    result = pool.apply_async(c.slow_square, (3,))
    with pytest.raises(PoolTerminatedError, match="died before they were ready 3 times") as info:
        result.get(timeout=DEADLINE)
    assert isinstance(info.value.__cause__, WorkerLostError)
    assert info.value.__cause__.exitcode == code
    with pytest.raises(PoolTerminatedError):
        pool.apply_async(c.slow_square, (3,))


@pytest.mark.stress
def test_stress_workers_killed_in_their_initializer(tmp_path: Path) -> None:
    """60 workers killed at random moments of their initializer: no task fails or is lost.

    Two of every three workers are killed (never ten in a row, which would
    break the pool); the others do the work.
    """
    rng = random.Random(6)
    starting = tmp_path / "starting"
    starting.mkdir()
    pool = Pool(  # workers retire after 10 tasks: new ones keep starting
        2,
        initializer=c.announce_init,
        initargs=(str(starting),),
        maxtasksperchild=10,
        context=phalanx.get_context("fork"),
    )
    killed: list[int] = []
    stop_killing = threading.Event()

    def killer() -> None:
        seen: set[str] = set()
        while not stop_killing.is_set():
            names = {n for n in os.listdir(starting) if not n.endswith(".go")}
            for name in sorted(names - seen):
                seen.add(name)
                if len(seen) % 3 == 0 or len(killed) >= 60:  # spared: let it go on
                    (starting / f"{name}.go").touch()
                    continue
                time.sleep(rng.uniform(0.0, 0.01))
                try:
                    os.kill(int(name), signal.SIGKILL)
                    killed.append(int(name))
                except ProcessLookupError:
                    pass
            time.sleep(0.002)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(killed) < 60 and time.monotonic() < deadline:
            assert bounded(lambda: pool.map(c.value_of, range(40), chunksize=1)) == list(range(40))
            values = bounded(lambda: sorted(pool.imap_unordered(c.value_of, range(20))))
            assert values == list(range(20))
    finally:
        stop_killing.set()
        thread.join(DEADLINE)
        pool.terminate()
        bounded(pool.join, STOP_WITHIN)
    assert len(killed) >= 60


# --- Ctrl-C while Pool() starts (defect 1) ----------------------------------------------------

STARTUP_SCRIPT = """\
import sys
sys.path.insert(0, {tests!r})
import phalanx
import _chaos_targets as c

if __name__ == "__main__":
    ctx = phalanx.get_context(sys.argv[1])
    print("starting", flush=True)
    pool = ctx.Pool(2)
    print("started", flush=True)
    assert pool.map(c.value_of, range(20)) == list(range(20))
    pool.close()
    pool.join()
    print("done", flush=True)
"""

# How long Pool(2) takes to start, roughly (the first forkserver start launches the server).
STARTUP_TIME = {"fork": 0.02, "spawn": 0.25, "forkserver": 0.2}


@contextlib.contextmanager
def program(script: Path, *args: str, segment: str | None = None) -> Iterator[Any]:
    """``python script args`` in a session of its own; afterwards nothing of that session
    is left running, and ``segment`` (a /dev/shm name it makes) is gone."""
    proc = subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        _targets._kill_session(proc.pid)
        if proc.returncode is None:
            proc.kill()
            proc.communicate(timeout=10)
        if segment is not None:
            try:
                os.unlink(f"/dev/shm/{segment}")
            except FileNotFoundError:
                pass


def assert_nothing_outlives(sid: int, what: str, segment: str | None = None) -> None:
    """No process of session ``sid`` lives on, and ``segment`` is gone, within 10 s."""
    try:
        wait_until(lambda: not _targets.session_members(sid), timeout=10)
    except AssertionError:
        survivors = _targets.session_members(sid)
        raise AssertionError(f"{what}: processes outlived their program: {survivors}") from None
    if segment is not None:
        wait_until(
            lambda: not os.path.exists(f"/dev/shm/{segment}"),
            timeout=10,
            what=f"{what}: segment {segment} removed",
        )


def interrupt_startup(script: Path, method: str, delay: float, group: bool) -> str:
    """Run the script, SIGINT it ``delay`` s into Pool(); its stdout. Fails on a hang or leak."""
    with program(script, method) as proc:
        assert proc.stdout.readline() == "starting\n"
        time.sleep(delay)
        try:
            if group:
                os.killpg(proc.pid, signal.SIGINT)
            else:
                os.kill(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass  # already over
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the program hung after SIGINT {delay * 1000:.1f} ms into Pool() "
                f"({method}, {'group' if group else 'main'})"
            ) from None
        assert proc.returncode in (0, 1, -signal.SIGINT), err
        assert_nothing_outlives(proc.pid, "an interrupted program")
    return str(out)


INTERRUPTED_SCRIPT = """\
import sys, threading, time
sys.path.insert(0, {tests!r})
import phalanx
from phalanx import process

if __name__ == "__main__":
    ctx = phalanx.get_context(sys.argv[1])
    where = sys.argv[2]
    starts = []
    real_thread_start = threading.Thread.start
    real_process_start = process.BaseProcess.start

    def thread_start(self):
        real_thread_start(self)
        if self.name == "phalanx-pool-supervisor":
            raise KeyboardInterrupt  # as if Ctrl-C came while start() waited

    def process_start(self):
        real_process_start(self)
        starts.append(self)
        if len(starts) == 2:
            raise KeyboardInterrupt

    if where == "thread":
        threading.Thread.start = thread_start
    else:
        process.BaseProcess.start = process_start
    try:
        ctx.Pool(2)
    except KeyboardInterrupt:
        pass
    else:
        raise SystemExit("not interrupted")
    threading.Thread.start = real_thread_start
    process.BaseProcess.start = real_process_start
    deadline = time.monotonic() + 10
    def left():
        return phalanx.active_children(), [
            t.name for t in threading.enumerate() if t.name == "phalanx-pool-supervisor"
        ]
    while any(left()) and time.monotonic() < deadline:
        time.sleep(0.01)
    print(left(), flush=True)
"""


@pytest.mark.parametrize("where", ["thread", "worker"])
def test_an_interrupted_pool_constructor_leaves_nothing_running(
    start_method: str, where: str
) -> None:
    """Ctrl-C inside Pool(): the half-made pool stops its workers and its supervisor."""
    code = INTERRUPTED_SCRIPT.format(tests=_targets.TESTS_DIR)
    result = _targets.run_python(["-c", code, start_method, where], timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "([], [])", result.stderr


WAKE_SCRIPT = """\
import sys
sys.path.insert(0, {tests!r})
import phalanx
from phalanx import _platform

if __name__ == "__main__":
    pool = phalanx.get_context(sys.argv[1]).Pool(2)
    assert pool.map(abs, range(-4, 0)) == [4, 3, 2, 1]  # the workers are idle now
    real_poke = _platform.poke

    def interrupted_poke(fd):
        _platform.poke = real_poke
        raise KeyboardInterrupt  # as if Ctrl-C came just before the wake-up byte went

    _platform.poke = interrupted_poke
    try:
        pool.apply_async(abs, (-1,))  # its submit wakes the supervisor: interrupted
    except KeyboardInterrupt:
        pass
    print(pool.apply_async(abs, (-3,)).get(timeout=10), flush=True)
    pool._backend._woken = True  # a flag with no byte behind it, as the old order left
    pool.terminate()  # must still wake the supervisor, not wait for it forever
    print("terminated", flush=True)
"""


def test_ctrl_c_while_waking_the_supervisor_loses_no_wake_up(start_method: str) -> None:
    """A KeyboardInterrupt between the wake-up byte and its flag (found by the stress test
    below, once in ~300 rounds): later tasks still run, terminate() still returns."""
    code = WAKE_SCRIPT.format(tests=_targets.TESTS_DIR)
    result = _targets.run_python(["-c", code, start_method], timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["3", "terminated"], result.stderr


EXITING_SCRIPT = """\
import os, signal, sys, time
sys.path.insert(0, {tests!r})
import phalanx
from phalanx import _runtime

if __name__ == "__main__":
    pool = phalanx.get_context(sys.argv[1]).Pool(2)
    pool.map(abs, range(4))
    pool._terminate.cancel()  # as if Ctrl-C had come before it was registered
    victim = pool._pool[0]
    _runtime.set_exiting()  # what the exit handler does first
    os.kill(victim.pid, signal.SIGKILL)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and victim in phalanx.active_children():
        time.sleep(0.01)
    time.sleep(0.3)
    print(len(phalanx.active_children()), flush=True)
"""


def test_no_pool_worker_starts_once_the_program_is_exiting(start_method: str) -> None:
    """At exit the handler stops the workers, then joins the children: a replacement
    started in between would be joined forever (it ends only with its pool)."""
    code = EXITING_SCRIPT.format(tests=_targets.TESTS_DIR)
    result = _targets.run_python(["-c", code, start_method], timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1", result.stderr


@pytest.mark.parametrize("group", [False, True], ids=["main", "group"])
def test_ctrl_c_inside_pool_start_up(start_method: str, tmp_path: Path, group: bool) -> None:
    """SIGINT while the supervisor thread starts: no hang at exit, no orphan."""
    script = tmp_path / "startup.py"
    script.write_text(STARTUP_SCRIPT.format(tests=_targets.TESTS_DIR), encoding="utf-8")
    for delay in (0.0, STARTUP_TIME[start_method] / 2):
        interrupt_startup(script, start_method, delay, group)


@pytest.mark.stress
def test_stress_ctrl_c_at_random_moments_of_pool_start_up(
    start_method: str, tmp_path: Path
) -> None:
    """50 rounds per start method, SIGINT to the program or its group at a random moment."""
    script = tmp_path / "startup.py"
    script.write_text(STARTUP_SCRIPT.format(tests=_targets.TESTS_DIR), encoding="utf-8")
    rng = random.Random(f"1-{start_method}")
    outcomes = Counter()
    for _ in range(50):
        delay = rng.uniform(0.0, 1.5 * STARTUP_TIME[start_method])
        out = interrupt_startup(script, start_method, delay, rng.random() < 0.5)
        outcomes["done" if "done" in out else "started" if "started" in out else "none"] += 1
    assert outcomes["none"] + outcomes["started"] > 0, outcomes  # some landed in Pool()


# --- a program killed with everything open (the second README promise) ------------------------

ORPHANS_SCRIPT = """\
import json, sys, time
sys.path.insert(0, {tests!r})
import phalanx
from phalanx import shared_memory
import _targets

if __name__ == "__main__":
    ctx = phalanx.get_context(sys.argv[1])
    daemon = ctx.Process(target=_targets.sleep_forever, daemon=True)
    daemon.start()
    manager = ctx.Manager()
    shared = manager.dict(a=1)
    segment = shared_memory.SharedMemory(name=sys.argv[2], create=True, size=4096)
    from phalanx import _forkserver
    print(json.dumps({{"daemon": daemon.pid, "manager": manager._process.pid,
                      "forkserver_dir": _forkserver._forkserver._dir}}), flush=True)
    time.sleep(3600)
"""


def test_daemonic_children_and_the_manager_end_with_a_killed_program(
    start_method: str, tmp_path: Path
) -> None:
    """SIGKILL to the program alone: its daemonic child and its manager's server end too,
    and the resource tracker, with no client left, removes the segment it had made."""
    name = f"phalanx-orphans-{os.getpid()}-{start_method}"
    script = tmp_path / "orphans.py"
    script.write_text(ORPHANS_SCRIPT.format(tests=_targets.TESTS_DIR), encoding="utf-8")
    with program(script, start_method, name, segment=name) as proc:
        line = proc.stdout.readline()
        assert line, proc.communicate(timeout=10)[1]
        pids = json.loads(line)
        forkserver_dir = pids.pop("forkserver_dir")
        assert (forkserver_dir is not None) == (start_method == "forkserver")
        assert set(pids.values()) <= set(_targets.session_members(proc.pid))
        assert os.path.exists(f"/dev/shm/{name}")
        proc.kill()
        proc.communicate(timeout=DEADLINE)
        assert_nothing_outlives(proc.pid, start_method, segment=name)
        if forkserver_dir is not None:  # the fork server removed its socket's directory
            wait_until(lambda: not os.path.exists(forkserver_dir), timeout=5, what="fs dir gone")


EVERYTHING_SCRIPT = """\
import sys, time
sys.path.insert(0, {tests!r})
import phalanx
from phalanx import shared_memory
import _targets

if __name__ == "__main__":
    ctx = phalanx.get_context(sys.argv[1])
    print("starting", flush=True)
    daemon = ctx.Process(target=_targets.sleep_forever, daemon=True)
    daemon.start()
    queue = ctx.Queue()
    queue.put(b"x" * 100_000)
    segment = shared_memory.SharedMemory(name=sys.argv[2], create=True, size=4096)
    manager = ctx.Manager()
    shared = manager.list([1, 2])
    pool = ctx.Pool(2)
    pool.map_async(time.sleep, [0.05] * 100)
    print("ready", flush=True)
    time.sleep(3600)
"""


@pytest.mark.stress
def test_stress_programs_killed_at_random_moments_leave_nothing(tmp_path: Path) -> None:
    """10 rounds per start method: SIGKILL to a program while it sets up a daemonic child,
    a queue, a segment, a manager and a pool, or once it runs: nothing outlives it."""
    rng = random.Random(10)
    script = tmp_path / "everything.py"
    script.write_text(
        EVERYTHING_SCRIPT.format(tests=_targets.TESTS_DIR),
        encoding="utf-8",
    )
    for method in _targets.START_METHODS:
        for round_ in range(10):
            name = f"phalanx-everything-{os.getpid()}-{method}-{round_}"
            with program(script, method, name, segment=name) as proc:
                assert proc.stdout.readline() == "starting\n"
                time.sleep(rng.uniform(0.0, 0.6))
                proc.kill()
                proc.communicate(timeout=DEADLINE)
                assert_nothing_outlives(proc.pid, f"round {round_} ({method})", segment=name)


# --- slow and silent peers (defects 3 and 4) --------------------------------------------------

KEY = b"chaos key"


def raw_connect(address: Any) -> socket.socket:
    family = socket.AF_INET if isinstance(address, tuple) else socket.AF_UNIX
    sock = socket.socket(family)
    sock.settimeout(DEADLINE)
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            sock.connect(address)
            return sock
        except BlockingIOError:  # AF_UNIX: the listener's queue is full for now
            if time.monotonic() > deadline:
                sock.close()
                raise
            time.sleep(0.001)


class Attack:
    """``silent`` peers that connect and say nothing, ``slow`` ones that send a valid
    frame header one byte every ``interval`` seconds (then the body, as slowly)."""

    FRAME = struct.pack("!Q", 32) + bytes(32)  # what a client answers, length-wise

    def __init__(self, address: Any, silent: int, slow: int, interval: float = 0.5) -> None:
        self.socks: list[socket.socket] = []
        self.slow: list[socket.socket] = []
        kinds = ["silent"] * silent + ["slow"] * slow
        random.Random(0).shuffle(kinds)
        for kind in kinds:
            sock = raw_connect(address)
            self.socks.append(sock)
            if kind == "slow":
                self.slow.append(sock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drip, args=(interval,), daemon=True)
        self._thread.start()

    def _drip(self, interval: float) -> None:
        for i in itertools.cycle(range(len(self.FRAME))):
            if self._stop.wait(interval):
                return
            for sock in self.slow:
                try:
                    sock.send(self.FRAME[i : i + 1], socket.MSG_DONTWAIT)
                except OSError:
                    pass  # dropped by the server (or its buffer is full): fine

    def close(self) -> None:
        self._stop.set()
        self._thread.join(DEADLINE)
        for sock in self.socks:
            sock.close()

    def __enter__(self) -> Attack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_forever(listener: phalanx.connection.Listener, accepted: queue.Queue[Any]) -> None:
    """The usual server loop: a client that fails its handshake is skipped."""
    while True:
        try:
            conn = listener.accept()
        except (phalanx.AuthenticationError, EOFError, ConnectionError):
            continue
        except OSError:
            return  # closed
        accepted.put(conn)


def timed_client(address: Any) -> float:
    t0 = time.monotonic()
    with phalanx.connection.Client(address, authkey=KEY) as conn:
        conn.send("hello")
        assert conn.recv() == "hello back"
    return time.monotonic() - t0


@pytest.fixture(params=["unix", "tcp"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    address: Any = str(tmp_path / "l.sock") if request.param == "unix" else ("127.0.0.1", 0)
    accepted: queue.Queue[Any] = queue.Queue()
    with phalanx.connection.Listener(address, authkey=KEY) as listener:
        server = threading.Thread(target=serve_forever, args=(listener, accepted), daemon=True)
        server.start()

        def echo() -> None:
            while True:
                conn = accepted.get()
                if conn is None:
                    return
                with conn:
                    conn.send(conn.recv() + " back")

        echoer = threading.Thread(target=echo, daemon=True)
        echoer.start()
        yield listener
        accepted.put(None)
    server.join(DEADLINE)
    echoer.join(DEADLINE)


def test_a_silent_client_does_not_delay_the_next_one(listener: Any) -> None:
    with Attack(listener.address, silent=1, slow=0):
        assert timed_client(listener.address) < 1.0


def test_a_client_that_drips_bytes_gets_no_more_than_the_handshake_deadline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(phalanx._listener, "HANDSHAKE_TIMEOUT", 1.0)
    address = str(tmp_path / "l.sock")
    with (
        phalanx.connection.Listener(address, authkey=KEY) as listener,
        Attack(address, silent=0, slow=1, interval=0.2),
    ):
        t0 = time.monotonic()
        with pytest.raises(phalanx.AuthenticationError, match="within 1 s"):
            bounded(listener.accept, 10)
        assert time.monotonic() - t0 < 2.0  # not 40 bytes x 0.2 s


def test_a_server_that_drips_bytes_fails_the_client_on_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(phalanx._listener, "HANDSHAKE_TIMEOUT", 1.0)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "s.sock"))
    server.listen()
    stop = threading.Event()

    def drip() -> None:
        conn, _ = server.accept()
        with conn:
            frame = BANNER_FRAME + struct.pack("!Q", 58) + bytes(58)
            for i in range(len(frame)):
                if stop.wait(0.2):
                    return
                conn.send(frame[i : i + 1])

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(phalanx.AuthenticationError, match="within 1 s"):
            phalanx.connection.Client(str(tmp_path / "s.sock"), authkey=KEY)
        assert time.monotonic() - t0 < 2.0
    finally:
        stop.set()
        thread.join(DEADLINE)
        server.close()


def test_unauthenticated_clients_are_capped(listener: Any) -> None:
    """More silent clients than the cap: the oldest are dropped, a real client gets in."""
    cap = phalanx._listener.MAX_PENDING_HANDSHAKES
    with Attack(listener.address, silent=cap + 20, slow=0) as attack:
        assert timed_client(listener.address) < 1.0
        # The first ones were closed by the listener: they read end of file.
        attack.socks[0].settimeout(DEADLINE)
        data = attack.socks[0].recv(4096)  # the challenge, then EOF
        while data:
            data = attack.socks[0].recv(4096)


@pytest.mark.stress
def test_stress_slow_and_silent_clients_against_a_listener(listener: Any) -> None:
    """200 slow and 200 silent clients: a legitimate one still connects in under a second."""
    with Attack(listener.address, silent=200, slow=200):
        times = [timed_client(listener.address) for _ in range(5)]
        assert max(times) < 1.0, times


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_count(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="utf-8") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))


def timed_manager_call(manager: Any) -> float:
    """A new connection (a new thread's) and one call through it: seconds taken."""

    def call() -> float:
        t0 = time.monotonic()
        shared = manager.dict(a=1)
        assert shared["a"] == 1
        return time.monotonic() - t0

    elapsed: float = bounded(call)
    return elapsed


@pytest.fixture
def make_manager(ctx: Any) -> Iterator[Callable[..., Any]]:
    made: list[Any] = []

    def make(initializer: Any = None, initargs: tuple[Any, ...] = ()) -> Any:
        manager = phalanx.managers.SyncManager(authkey=KEY, ctx=ctx)
        manager.start(initializer, initargs)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.shutdown()


def test_the_manager_server_survives_failing_to_start_threads(
    make_manager: Callable[..., Any],
) -> None:
    manager = make_manager(c.fail_client_threads, (3,))
    failed = 0
    for _ in range(4):
        try:
            timed_manager_call(manager)
        except (ConnectionError, EOFError):
            failed += 1
    assert failed == 3
    assert timed_manager_call(manager) < 1.0  # still accepting


def test_the_manager_server_out_of_fds_waits_instead_of_spinning(
    make_manager: Callable[..., Any],
) -> None:
    manager = make_manager(c.few_fds, (6, 2.0))
    server = manager._process.pid
    with Attack(manager.address, silent=20, slow=0):
        time.sleep(0.3)
        before = cpu_seconds(server)
        time.sleep(1.0)
        assert cpu_seconds(server) - before < 0.3  # out of fds, and not spinning
    assert timed_manager_call(manager) < 3.0  # and serving again once fds are back


@pytest.mark.stress
def test_stress_slow_and_silent_clients_against_a_manager(make_manager: Callable[..., Any]) -> None:
    """200 slow and 200 silent clients: a legitimate one still connects in under a second."""
    manager = make_manager()
    with Attack(manager.address, silent=200, slow=200):
        times = [timed_manager_call(manager) for _ in range(5)]
        assert max(times) < 1.0, times
        # Unauthenticated clients hold no thread of the server.
        assert thread_count(manager._process.pid) < 20


# --- queues: room and items that outlive their process (defect 5, first README promise) -------


def test_a_consumer_killed_after_taking_an_item_gives_its_room_back(ctx: Any) -> None:
    """Killed between taking the item and counting it: the room comes back at once."""
    q = ctx.Queue(1)
    q.put("taken")
    p = start(ctx, _queue_targets.die_at_ring_line, q, "get", "r[_GETS] += 1", 100)
    p.join(DEADLINE)
    assert p.exitcode == -signal.SIGKILL
    t0 = time.monotonic()
    q.put("next", timeout=5)  # the queue is empty: there is room
    assert time.monotonic() - t0 < 1.0
    assert q.get(timeout=DEADLINE) == "next"
    assert q.qsize() == 0


@pytest.mark.stress
def test_stress_consumers_killed_at_random_moments_of_a_queue_of_one() -> None:
    """300 consumers of a Queue(1) SIGKILLed at random moments: it still delivers after."""
    ctx = phalanx.get_context("fork")
    rng = random.Random(5)
    q = ctx.Queue(1)
    stop = threading.Event()

    def produce() -> None:
        i = 0
        while not stop.is_set():
            try:
                q.put(i, timeout=0.05)
                i += 1
            except queue.Full:
                pass

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        for _ in range(300):
            p = start(ctx, c.get_forever, q)
            time.sleep(rng.uniform(0.0, 0.004))
            p.kill()
            p.join(DEADLINE)
    finally:
        stop.set()
        producer.join(DEADLINE)
    while True:  # what the producer left
        try:
            q.get(timeout=0.2)
        except queue.Empty:
            break
    for i in range(3):  # room for one, again and again
        q.put(("after", i), timeout=2)
        assert q.get(timeout=DEADLINE) == ("after", i)
    assert q.qsize() == 0 and not q.full()


@pytest.mark.parametrize(
    ("n", "size", "sndbuf"),
    [(40_000, 8, 0), (200, 100_000, 4096)],
    ids=["small-items", "large-items"],
)
def test_a_killed_producer_loses_nothing_its_put_returned(
    ctx: Any, tmp_path: Path, n: int, size: int, sndbuf: int
) -> None:
    """More than the ring (or the socket) holds, nobody reading: all of it survives the
    producer's SIGKILL (the ring grows; a large item whose socket is full goes in whole)."""
    q = ctx.Queue()
    items = [(i, bytes([i % 251]) * size) for i in range(n)]
    p = start(ctx, c.put_then_report, q, items, str(tmp_path / "done"), sndbuf)
    try:
        wait_for_json(tmp_path / "done", timeout=60)
    finally:
        kill(p)
    got = [q.get(timeout=DEADLINE) for _ in range(n)]
    assert [i for i, _ in got] == list(range(n))
    assert all(data == bytes([i % 251]) * size for i, data in got)
    assert q.qsize() == 0


@pytest.mark.stress
def test_stress_producers_killed_at_random_moments_lose_nothing() -> None:
    """20 producers of mixed sizes SIGKILLed at random moments: every item whose put()
    returned arrives, once, whole, in its order."""
    ctx = phalanx.get_context("fork")
    rng = random.Random(9)
    sizes = [10, 200, 3000, 70_000, 10, 10, 500_000]
    for round_ in range(20):
        q = ctx.Queue()
        count = ctx.Value("q", 0, lock=False)
        # Every other round, a socket that fills up after a few large items.
        p = start(ctx, c.put_counting, q, count, sizes, 4096 if round_ % 2 else 0)
        time.sleep(rng.uniform(0.01, 0.3))
        p.kill()
        p.join(DEADLINE)
        returned = count.value
        got = []
        while True:
            try:
                got.append(q.get(timeout=0.5))
            except queue.Empty:
                break
        indices = [i for i, _ in got]
        assert indices == list(range(len(got))), f"round {round_}: out of order or duplicated"
        assert len(got) >= returned, f"round {round_}: {returned} returned, {len(got)} arrived"
        for i, data in got:
            assert data == bytes([i % 251]) * sizes[i % len(sizes)], f"round {round_}: torn"


# --- waiters that die: Condition, Event, Barrier (defect 7) -----------------------------------


def _count_within(sem: Any, n: int, timeout: float = DEADLINE) -> None:
    for _ in range(n):
        assert sem.acquire(timeout=timeout)


def _waiting_on(cond: Any, n: int) -> None:
    """Until ``n`` waiters sit in ``cond`` (they hold its lock until they do)."""
    wait_until(lambda: cond._waiters.waiting() >= n, what=f"{n} waiters")


def test_notify_skips_a_dead_waiter(ctx: Any) -> None:
    """The oldest waiter was killed: notify(1) wakes the live one, not the dead."""
    cond, sleeping, woken = ctx.Condition(), ctx.Semaphore(0), ctx.Semaphore(0)
    dead = start(ctx, c.announce_then_wait_on, cond, sleeping, woken)
    _count_within(sleeping, 1)
    _waiting_on(cond, 1)
    live = start(ctx, c.announce_then_wait_on, cond, sleeping, woken)
    _count_within(sleeping, 1)
    _waiting_on(cond, 2)
    kill(dead)
    try:
        t0 = time.monotonic()
        with cond:
            cond.notify()
        assert time.monotonic() - t0 < 1.0
        assert woken.acquire(timeout=5)
    finally:
        kill(live)


@pytest.mark.parametrize("how", ["notify_all", "event", "barrier"])
def test_a_killed_waiter_does_not_hang_the_others(ctx: Any, how: str) -> None:
    sleeping, woken = ctx.Semaphore(0), ctx.Semaphore(0)
    if how == "barrier":
        barrier = ctx.Barrier(3)
        done = ctx.Semaphore(0)
        dead = start(ctx, c.barrier_rounds, barrier, 1, done)
        wait_until(lambda: barrier.n_waiting == 1, what="a party waiting")
        kill(dead)
        live = start(ctx, c.barrier_rounds, barrier, 2, done)
        t0 = time.monotonic()
        barrier.wait(5)  # the third party: the dead one arrived before it died
        assert time.monotonic() - t0 < 1.0
        third = start(ctx, c.barrier_rounds, barrier, 1, done)
        barrier.wait(5)  # a second cycle: the dead party's seat was cleared
        _count_within(done, 2)
        for p in (live, third):
            p.join(DEADLINE)
            assert p.exitcode == 0
        return
    if how == "event":
        event = ctx.Event()
        procs = [start(ctx, c.wait_for_event, event, sleeping, woken) for _ in range(3)]
        _count_within(sleeping, 3)
        _waiting_on(event._cond, 3)
        kill(procs[1])
        t0 = time.monotonic()
        event.set()
    else:
        cond = ctx.Condition()
        procs = [start(ctx, c.announce_then_wait_on, cond, sleeping, woken) for _ in range(3)]
        _count_within(sleeping, 3)
        _waiting_on(cond, 3)
        kill(procs[1])
        t0 = time.monotonic()
        with cond:
            cond.notify_all()
    assert time.monotonic() - t0 < 1.0
    _count_within(woken, 2)
    for p in procs:
        p.join(DEADLINE)


@pytest.mark.stress
@pytest.mark.filterwarnings("ignore::phalanx.errors.AbandonedLockWarning")
def test_stress_waiters_killed_at_random_moments() -> None:
    """30 rounds: Event waiters and Barrier parties killed at random moments; set() and
    the barrier's live parties never hang."""
    ctx = phalanx.get_context("fork")
    rng = random.Random(7)
    event = ctx.Event()
    waiting, woken = ctx.Semaphore(0), ctx.Semaphore(0)
    for _ in range(30):
        procs = [start(ctx, c.wait_for_event, event, waiting, woken) for _ in range(4)]
        _count_within(waiting, 4)
        time.sleep(rng.uniform(0.0, 0.005))
        victims = rng.sample(procs, rng.randint(1, 3))
        for p in victims:
            p.kill()
        t0 = time.monotonic()
        event.set()
        assert time.monotonic() - t0 < 1.0
        for p in procs:
            p.join(DEADLINE)
        survivors = [p for p in procs if p not in victims]
        # Every survivor woke (a victim may have woken too, before it was killed).
        assert sum(1 for p in survivors if p.exitcode == 0) == len(survivors)
        while woken.acquire(False):
            pass
        event.clear()
    barrier = ctx.Barrier(3)
    done = ctx.Semaphore(0)
    for _ in range(30):
        victim = start(ctx, c.barrier_rounds, barrier, 1, done)
        time.sleep(rng.uniform(0.0, 0.01))
        victim.kill()
        victim.join(DEADLINE)
        # A party that arrived before it died counts for this cycle (one that
        # died in a cycle over is forgotten): with live parties and us, the
        # cycle completes.
        with barrier._cond:
            arrived = barrier.n_waiting
        live = [start(ctx, c.barrier_rounds, barrier, 1, done) for _ in range(2 - arrived)]
        t0 = time.monotonic()
        try:
            barrier.wait(5)
        except threading.BrokenBarrierError:
            pytest.fail("the barrier broke")
        for p in live:
            p.join(DEADLINE)
        assert time.monotonic() - t0 < 3.0
