"""The stdlib ``Process`` model, under every start method."""

from __future__ import annotations

import gc
import hashlib
import itertools
import json
import os
import re
import select
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import _targets
import phalanx
from _targets import DEADLINE, wait_for_json
from phalanx import _forkserver
from phalanx.context import BaseContext
from phalanx.process import BaseProcess

_ready_ids = itertools.count()


def start_sleeper(ctx: BaseContext, tmp_path: Path, **kwargs: Any) -> BaseProcess:
    """Start a child that sleeps forever; return once it runs its target."""
    ready = tmp_path / f"ready-{next(_ready_ids)}.json"
    p = ctx.Process(target=_targets.sleep_forever, args=(str(ready),), **kwargs)
    p.start()
    assert wait_for_json(ready)["pid"] == p.pid
    return p


def finish(p: BaseProcess) -> None:
    """Kill (if needed) and reap ``p``."""
    p.kill()
    p.join(DEADLINE)
    assert p.exitcode is not None


# --- construction -----------------------------------------------------------------------


def test_target_args_and_kwargs(ctx: BaseContext, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    p = ctx.Process(target=_targets.report_args, args=[str(out), 1, "two"], kwargs={"three": [3]})
    p.start()
    p.join(DEADLINE)
    assert p.exitcode == 0
    assert wait_for_json(out) == {"args": [1, "two"], "kwargs": {"three": [3]}}


def test_constructor_positional_order(ctx: BaseContext, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    p = ctx.Process(None, _targets.report_args, "positional", (str(out), "a"), {"k": "v"})
    assert p.name == "positional"
    assert p.daemon is False
    p.start()
    p.join(DEADLINE)
    assert p.exitcode == 0
    assert wait_for_json(out) == {"args": ["a"], "kwargs": {"k": "v"}}


def test_daemon_is_keyword_only(ctx: BaseContext) -> None:
    with pytest.raises(TypeError):
        ctx.Process(None, _targets.noop, "n", (), {}, True)  # type: ignore[misc]
    assert ctx.Process(target=_targets.noop, daemon=True).daemon is True
    assert ctx.Process(target=_targets.noop, daemon=False).daemon is False


def test_daemon_defaults_to_parent_and_is_settable(ctx: BaseContext) -> None:
    p = ctx.Process(target=_targets.noop)
    assert p.daemon is False  # the main process is not daemonic
    p.daemon = True
    assert p.daemon is True


def test_no_target_runs_nothing(ctx: BaseContext) -> None:
    p = ctx.Process()
    p.start()
    p.join(DEADLINE)
    assert p.exitcode == 0


def test_subclass_overriding_run(start_method: str, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    cls = _targets.REPORTERS[start_method]
    p = cls(str(out), {"payload": [1, 2]}, name="sub")
    p.start()
    p.join(DEADLINE)
    assert p.exitcode == 0
    assert wait_for_json(out) == {
        "payload": {"payload": [1, 2]},
        "is_me": True,
        "class": cls.__name__,
        "name": "sub",
    }


def test_locally_defined_subclass(ctx: BaseContext, tmp_path: Path) -> None:
    class Local(ctx.Process):  # type: ignore[name-defined,misc]
        def run(self) -> None:
            _targets.report_value(self.out, type(self).__name__)

    p = Local()
    p.out = str(tmp_path / "out.json")
    p.start()
    p.join(DEADLINE)
    assert p.exitcode == 0
    assert wait_for_json(p.out) == {"value": "Local"}


def _make_closure(secret: str) -> Any:
    def inner(path: str) -> None:
        _targets.report_value(path, [secret, len(secret)])

    return inner


def test_lambda_target(ctx: BaseContext, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    p = ctx.Process(target=lambda path, v: _targets.report_value(path, v * 2), args=(str(out), 21))
    p.start()
    p.join(DEADLINE)
    assert p.exitcode == 0
    assert wait_for_json(out) == {"value": 42}


def test_closure_target(ctx: BaseContext, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    p = ctx.Process(target=_make_closure("s3cret"), args=(str(out),))
    p.start()
    p.join(DEADLINE)
    assert p.exitcode == 0
    assert wait_for_json(out) == {"value": ["s3cret", 6]}


# --- names --------------------------------------------------------------------------------


def test_automatic_names(ctx: BaseContext) -> None:
    first, second = ctx.Process(), ctx.Process()
    assert re.fullmatch(r"\w*Process-\d+", first.name)
    assert first.name.startswith(ctx.Process.__name__ + "-")
    n1 = int(first.name.rsplit("-", 1)[1])
    n2 = int(second.name.rsplit("-", 1)[1])
    assert n2 > n1
    assert re.fullmatch(r"Process-\d+", phalanx.Process().name)


def test_name_is_settable(ctx: BaseContext) -> None:
    p = ctx.Process(name="before")
    p.name = "after"
    assert p.name == "after"


@pytest.mark.parametrize("grand_method", _targets.START_METHODS)
def test_grandchild_names(ctx: BaseContext, grand_method: str, tmp_path: Path) -> None:
    # Every pair of (child, grandchild) start methods: a forked child must not
    # reuse our fork server, and a server's child starts its own.
    out = tmp_path / "out.json"
    p = ctx.Process(target=_targets.start_grandchild, args=(str(out), grand_method))
    p.start()
    p.join(DEADLINE)
    assert p.exitcode == 0
    rep = wait_for_json(out)
    assert rep["me"]["name"] == p.name
    child_number = re.fullmatch(r"\w*Process-(\d+)", p.name)
    assert child_number is not None
    grandchild = re.fullmatch(r"\w*Process-(\d+):(\d+)", rep["grandchild_name"])
    second = re.fullmatch(r"\w*Process-(\d+):(\d+)", rep["second_name"])
    assert grandchild is not None and second is not None
    assert grandchild.group(1) == second.group(1) == child_number.group(1)
    assert int(second.group(2)) == int(grandchild.group(2)) + 1
    assert rep["grandchild_exitcode"] == 0
    assert rep["grandchild"]["start_method"] == grand_method
    # The grandchild sees itself and its parent by those names.
    assert rep["grandchild"]["me"]["name"] == rep["grandchild_name"]
    assert rep["grandchild"]["parent"]["name"] == p.name
    assert rep["grandchild"]["parent"]["pid"] == p.pid


# --- the child's view ---------------------------------------------------------------------


def test_main_process_view() -> None:
    me = phalanx.current_process()
    assert me.name == "MainProcess"
    assert me.pid == me.ident == os.getpid()
    assert me.is_alive()
    assert me.daemon is False
    assert phalanx.parent_process() is None
    assert repr(me) == "<_MainProcess name='MainProcess' parent=None started>"


def test_current_and_parent_process_in_child(
    ctx: BaseContext, start_method: str, tmp_path: Path
) -> None:
    out = tmp_path / "out.json"
    p = ctx.Process(target=_targets.report, args=(str(out),), name="worker", daemon=True)
    p.start()
    pid = p.pid
    p.join(DEADLINE)
    assert p.exitcode == 0
    rep = wait_for_json(out)
    assert rep["pid"] == pid == p.ident
    assert rep["me"] == {"name": "worker", "pid": pid, "ident": pid}
    assert rep["is_alive"] is True
    assert rep["daemon"] is True
    assert rep["parent"] == {"name": "MainProcess", "pid": os.getpid(), "ident": os.getpid()}
    assert rep["parent_alive"] is True
    if start_method != "forkserver":  # a forkserver child is the server's child
        assert rep["ppid"] == os.getpid()
    assert rep["argv"] == sys.argv  # spawn and forkserver children get our argv too


def test_authkey_inherited(ctx: BaseContext, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    main_key = phalanx.current_process().authkey
    assert isinstance(main_key, bytes) and len(main_key) >= 32
    p = ctx.Process(target=_targets.report, args=(str(out),))
    assert p.authkey == main_key
    p.start()
    p.join(DEADLINE)
    assert p.exitcode == 0
    assert bytes.fromhex(wait_for_json(out)["authkey"]) == main_key


def test_authkey_set_before_start(ctx: BaseContext, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    p = ctx.Process(target=_targets.report, args=(str(out),))
    p.authkey = b"a custom key \x00\xff"
    assert p.authkey == b"a custom key \x00\xff"
    assert phalanx.current_process().authkey != p.authkey
    p.start()
    p.join(DEADLINE)
    assert p.exitcode == 0
    assert bytes.fromhex(wait_for_json(out)["authkey"]) == b"a custom key \x00\xff"


def test_daemon_cannot_have_children(ctx: BaseContext, start_method: str, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    p = ctx.Process(target=_targets.try_to_start_child, args=(str(out), start_method), daemon=True)
    p.start()
    p.join(DEADLINE)
    assert p.exitcode == 0
    rep = wait_for_json(out)
    assert rep["type"] == "ProcessStateError"
    assert rep["is_assertion"] is True
    assert "daemonic processes are not allowed to have children" in rep["message"]


# --- lifecycle ----------------------------------------------------------------------------


def test_lifecycle(ctx: BaseContext, tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    p = ctx.Process(target=_targets.sleep_forever, args=(str(ready),))
    assert p.pid is None and p.ident is None and p.exitcode is None
    assert not p.is_alive()
    p.start()
    assert isinstance(p.pid, int) and p.pid > 0
    assert p.ident == p.pid
    assert wait_for_json(ready)["pid"] == p.pid
    assert p.is_alive()
    assert p.exitcode is None
    assert p in phalanx.active_children()
    p.terminate()
    p.join(DEADLINE)
    assert not p.is_alive()
    assert p.exitcode == -signal.SIGTERM
    assert p.pid is not None  # still known after the end
    assert p not in phalanx.active_children()
    p.join(DEADLINE)  # joining again is fine
    p.terminate()  # so is signalling a process that has ended
    p.kill()
    assert p.exitcode == -signal.SIGTERM


def test_kill_gives_minus_sigkill(ctx: BaseContext, tmp_path: Path) -> None:
    p = start_sleeper(ctx, tmp_path)
    p.kill()
    p.join(DEADLINE)
    assert p.exitcode == -signal.SIGKILL == -9


def test_terminate_gives_minus_sigterm(ctx: BaseContext, tmp_path: Path) -> None:
    p = start_sleeper(ctx, tmp_path)
    p.terminate()
    p.join(DEADLINE)
    assert p.exitcode == -signal.SIGTERM == -15


def test_kill_ends_a_child_that_ignores_sigterm(ctx: BaseContext, tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    p = ctx.Process(target=_targets.ignore_sigterm_then_sleep, args=(str(ready),))
    p.start()
    wait_for_json(ready)
    p.terminate()
    p.join(0.3)
    assert p.is_alive()
    p.kill()
    p.join(DEADLINE)
    assert p.exitcode == -signal.SIGKILL


def test_external_signal_is_reported(ctx: BaseContext, tmp_path: Path) -> None:
    p = start_sleeper(ctx, tmp_path)
    assert p.pid is not None
    os.kill(p.pid, signal.SIGUSR1)  # p.pid is the real pid, whatever the start method
    p.join(DEADLINE)
    assert p.exitcode == -signal.SIGUSR1


EXIT_CASES: list[tuple[str, Any, tuple[Any, ...], int]] = [
    ("return", _targets.noop, (), 0),
    ("sys.exit(3)", _targets.exit_with, (3,), 3),
    ("sys.exit(0)", _targets.exit_with, (0,), 0),
    ("sys.exit(None)", _targets.exit_with, (None,), 0),
    ("sys.exit()", _targets.exit_without_code, (), 0),
    ("sys.exit(True)", _targets.exit_with, (True,), 1),
    ("sys.exit('msg')", _targets.exit_with, ("exit message",), 1),
    ("raise", _targets.raise_error, ("deliberate failure",), 1),
]


def test_exit_codes(ctx: BaseContext) -> None:
    procs = [(case, ctx.Process(target=t, args=a), code) for case, t, a, code in EXIT_CASES]
    for _case, p, _code in procs:
        p.start()
    for _case, p, _code in procs:
        p.join(DEADLINE)
    assert {case: p.exitcode for case, p, _ in procs} == {case: c for case, _, c in procs}


CRASH_CASES: list[tuple[str, Any, tuple[Any, ...], int]] = [
    ("segfault", _targets.segfault, (), -signal.SIGSEGV),
    ("abort", _targets.abort, (), -signal.SIGABRT),
    ("os._exit(7)", _targets.hard_exit, (7,), 7),
    ("own SIGKILL", _targets.kill_self, (signal.SIGKILL,), -signal.SIGKILL),
    ("own SIGTERM", _targets.kill_self, (signal.SIGTERM,), -signal.SIGTERM),
]


def test_crash_exit_codes(ctx: BaseContext) -> None:
    procs = [(case, ctx.Process(target=t, args=a), code) for case, t, a, code in CRASH_CASES]
    for _case, p, _code in procs:
        p.start()
    for _case, p, _code in procs:
        p.join(DEADLINE)
    assert {case: p.exitcode for case, p, _ in procs} == {case: c for case, _, c in procs}
    assert phalanx.active_children() == []


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_argument_failing_to_unpickle_in_child(method: str) -> None:
    p = phalanx.get_context(method).Process(
        target=_targets.noop, args=(_targets.FailsToUnpickle(),)
    )
    p.start()
    p.join(DEADLINE)
    assert p.exitcode == 1


def test_large_arguments(ctx: BaseContext, tmp_path: Path) -> None:
    payload = os.urandom(8 * 1024 * 1024)
    out = tmp_path / "out.json"
    p = ctx.Process(target=_targets.report_payload, args=(str(out), payload))
    p.start()
    p.join(DEADLINE)
    assert p.exitcode == 0
    assert wait_for_json(out) == {
        "len": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }


def test_failure_output_on_stderr(start_method: str) -> None:
    # Run in a child interpreter: a forkserver child writes to the stderr the
    # server inherited, which pytest's capture of this test does not see.
    code = _targets.python_code(
        "import phalanx, _targets\n"
        "ctx = phalanx.get_context(sys.argv[1])\n"
        "p = ctx.Process(target=_targets.raise_error, args=('boom-' + sys.argv[1],),"
        " name='faulty')\n"
        "p.start(); p.join(30)\n"
        "q = ctx.Process(target=_targets.exit_with, args=('goodbye message',))\n"
        "q.start(); q.join(30)\n"
        "print(p.exitcode, q.exitcode)\n"
    )
    result = _targets.run_python(["-c", code, start_method])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "1"]
    err = result.stderr
    assert "Process faulty:\nTraceback (most recent call last):\n" in err
    assert f"ValueError: boom-{start_method}\n" in err
    assert "in raise_error" in err
    assert "goodbye message\n" in err
    assert err.count("Process faulty:") == 1


def test_many_children_at_once(ctx: BaseContext, tmp_path: Path) -> None:
    procs = [
        ctx.Process(target=_targets.report_value, args=(str(tmp_path / f"{i}.json"), i))
        for i in range(6)
    ]
    for p in procs:
        p.start()
    assert len({p.pid for p in procs}) == len(procs)
    for p in procs:
        p.join(DEADLINE)
    assert [p.exitcode for p in procs] == [0] * len(procs)
    assert [wait_for_json(tmp_path / f"{i}.json")["value"] for i in range(6)] == list(range(6))


# --- join ------------------------------------------------------------------------------------


def test_join_timeout_returns_with_child_alive(ctx: BaseContext, tmp_path: Path) -> None:
    p = start_sleeper(ctx, tmp_path)
    t0 = time.monotonic()
    p.join(timeout=0.5)
    elapsed = time.monotonic() - t0
    assert 0.4 <= elapsed < 5
    assert p.is_alive()
    assert p.exitcode is None
    finish(p)


@pytest.mark.parametrize("timeout", [-1, 0, 0.0, -0.5])
def test_join_non_positive_timeout_returns_at_once(
    ctx: BaseContext, tmp_path: Path, timeout: float
) -> None:
    # join(-1) not waiting is the stdlib's semantic: CPython's own suite relies on it.
    p = start_sleeper(ctx, tmp_path)
    t0 = time.monotonic()
    p.join(timeout)
    assert time.monotonic() - t0 < 1
    assert p.is_alive()
    finish(p)


def test_join_returns_when_child_ends(ctx: BaseContext, tmp_path: Path) -> None:
    p = ctx.Process(target=_targets.sleep_then_write, args=(0.2, str(tmp_path / "x.json")))
    p.start()
    t0 = time.monotonic()
    p.join(timeout=DEADLINE)
    assert time.monotonic() - t0 < DEADLINE / 2
    assert p.exitcode == 0


# --- sentinel --------------------------------------------------------------------------------


def test_sentinel(ctx: BaseContext, tmp_path: Path) -> None:
    p = start_sleeper(ctx, tmp_path)
    s = p.sentinel
    assert isinstance(s, int) and not isinstance(s, bool)
    assert select.select([s], [], [], 0.05)[0] == []
    p.kill()
    # Readable once the child ends, before anybody joins it.
    assert select.select([s], [], [], DEADLINE)[0] == [s]
    p.join(DEADLINE)
    assert p.exitcode == -signal.SIGKILL
    assert select.select([s], [], [], 0)[0] == [s]
    assert p.sentinel == s


def test_sentinel_before_start(ctx: BaseContext) -> None:
    p = ctx.Process(target=_targets.noop, name="unstarted")
    with pytest.raises(ValueError, match="not started"):
        _ = p.sentinel


# --- active_children, cpu_count ------------------------------------------------------------


def test_active_children(ctx: BaseContext, tmp_path: Path) -> None:
    assert phalanx.active_children() == []
    a = start_sleeper(ctx, tmp_path)
    b = start_sleeper(ctx, tmp_path)
    assert set(phalanx.active_children()) == {a, b}
    assert set(ctx.active_children()) == {a, b}
    finish(a)
    assert phalanx.active_children() == [b]
    finish(b)
    assert phalanx.active_children() == []


def test_active_children_drops_ended_unjoined(ctx: BaseContext) -> None:
    p = ctx.Process(target=_targets.noop)
    p.start()
    assert select.select([p.sentinel], [], [], DEADLINE)[0] == [p.sentinel]
    assert phalanx.active_children() == []
    assert p.exitcode == 0  # known without join()


def test_cpu_count(ctx: BaseContext) -> None:
    n = phalanx.cpu_count()
    assert isinstance(n, int) and n >= 1
    assert n == os.cpu_count() == ctx.cpu_count()


# --- close -----------------------------------------------------------------------------------


def test_close_then_use_raises(ctx: BaseContext) -> None:
    p = ctx.Process(target=_targets.noop, name="to-close")
    p.start()
    p.join(DEADLINE)
    assert p.exitcode == 0
    p.close()
    p.close()  # idempotent
    uses: list[Any] = [
        p.is_alive,
        p.join,
        lambda: p.join(1),
        p.terminate,
        p.kill,
        p.start,
        lambda: p.pid,
        lambda: p.ident,
        lambda: p.exitcode,
        lambda: p.sentinel,
    ]
    for use in uses:
        with pytest.raises(ValueError, match="closed"):
            use()
    assert p.name == "to-close"
    assert re.fullmatch(
        rf"<{type(p).__name__} name='to-close' parent={os.getpid()} closed>", repr(p)
    )


def test_close_unstarted_then_start_raises(ctx: BaseContext) -> None:
    p = ctx.Process(target=_targets.noop)
    p.close()
    with pytest.raises(ValueError, match="closed"):
        p.start()


def test_close_running_raises(ctx: BaseContext, tmp_path: Path) -> None:
    p = start_sleeper(ctx, tmp_path, name="busy")
    with pytest.raises(ValueError, match="still running") as excinfo:
        p.close()
    assert "busy" in str(excinfo.value)
    # The process object is still usable.
    assert p.is_alive()
    finish(p)
    p.close()


# --- repr ------------------------------------------------------------------------------------


def test_repr(ctx: BaseContext, tmp_path: Path) -> None:
    cls = ctx.Process.__name__
    me = os.getpid()
    p = ctx.Process(target=_targets.sleep_forever, args=(str(tmp_path / "r.json"),), name="rp")
    assert repr(p) == f"<{cls} name='rp' parent={me} initial>"
    p.daemon = True
    assert repr(p) == f"<{cls} name='rp' parent={me} initial daemon>"
    p.start()
    wait_for_json(tmp_path / "r.json")
    assert repr(p) == f"<{cls} name='rp' pid={p.pid} parent={me} started daemon>"
    p.terminate()
    p.join(DEADLINE)
    assert repr(p) == f"<{cls} name='rp' pid={p.pid} parent={me} stopped exitcode=-SIGTERM daemon>"
    p.close()
    assert repr(p) == f"<{cls} name='rp' parent={me} closed daemon>"


def test_repr_exitcode(ctx: BaseContext) -> None:
    p = ctx.Process(target=_targets.exit_with, args=(3,))
    p.start()
    p.join(DEADLINE)
    assert re.fullmatch(
        r"<\w*Process name='\w*Process-\d+' pid=\d+ parent=\d+ stopped exitcode=3>", repr(p)
    )


# --- interpreter exit --------------------------------------------------------------------------


def test_exit_terminates_daemons_and_joins_others(start_method: str, tmp_path: Path) -> None:
    ready, out = tmp_path / "ready.json", tmp_path / "worker.json"
    code = _targets.python_code(
        "import json, phalanx, _targets\n"
        "method, ready, out = sys.argv[1:4]\n"
        "ctx = phalanx.get_context(method)\n"
        "d = ctx.Process(target=_targets.sleep_forever, args=(ready,), daemon=True)\n"
        "d.start()\n"
        "_targets.wait_for_json(ready)\n"
        "w = ctx.Process(target=_targets.sleep_then_write, args=(0.3, out))\n"
        "w.start()\n"
        "print(json.dumps({'daemon': d.pid, 'worker': w.pid}))\n"
    )
    # run_python also checks that nothing of that interpreter's session survives it.
    result = _targets.run_python(["-c", code, start_method, str(ready), str(out)])
    assert result.returncode == 0, result.stderr
    pids = json.loads(result.stdout)
    assert wait_for_json(out, timeout=0)["pid"] == pids["worker"]
    assert not _targets.pid_exists(pids["daemon"])
    assert not _targets.pid_exists(pids["worker"])


def test_child_exit_joins_its_own_children(start_method: str, tmp_path: Path) -> None:
    # The same rule one level down: a child's children are dealt with when it ends.
    code = _targets.python_code(
        "import phalanx, _targets\n"
        "ctx = phalanx.get_context(sys.argv[1])\n"
        "p = ctx.Process(target=_targets.start_grandchild, args=(sys.argv[2], sys.argv[1]))\n"
        "p.start(); p.join(30); sys.exit(p.exitcode)\n"
    )
    out = tmp_path / "gc.json"
    result = _targets.run_python(["-c", code, start_method, str(out)])
    assert result.returncode == 0, result.stderr
    assert wait_for_json(out, timeout=0)["grandchild_exitcode"] == 0


def test_interpreter_flags_in_child(start_method: str) -> None:
    # Under -O the child runs optimized too (sys.flags.optimize), like the stdlib.
    code = _targets.python_code(
        "import phalanx, _targets\n"
        "ctx = phalanx.get_context(sys.argv[1])\n"
        "p = ctx.Process(target=_targets.exit_with, args=(10 + sys.flags.optimize,))\n"
        "p.start(); p.join(30); print(p.exitcode)\n"
    )
    result = _targets.run_python(["-c", code, start_method], flags=["-O"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "11"


def test_stdout_of_child_reaches_parent(start_method: str) -> None:
    code = _targets.python_code(
        "import phalanx\n"
        "ctx = phalanx.get_context(sys.argv[1])\n"
        "print('before', flush=True)\n"
        "p = ctx.Process(target=print, args=('from child',))\n"
        "p.start(); p.join(30)\n"
        "print('after', p.exitcode)\n"
    )
    result = _targets.run_python(["-c", code, start_method])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["before", "from child", "after 0"]


def test_child_waits_for_its_threads(ctx: BaseContext, tmp_path: Path) -> None:
    out = tmp_path / "thread.json"
    p = ctx.Process(target=_targets.start_thread_then_return, args=(str(out),))
    p.start()
    p.join(DEADLINE)
    assert p.exitcode == 0
    assert wait_for_json(out, timeout=0)["pid"] == p.pid


def test_child_sees_parent_death(start_method: str, tmp_path: Path) -> None:
    # A sibling started after the watcher, and outliving the parent by two
    # seconds, must not hold a handle that hides the parent's death from it.
    code = _targets.python_code(
        "import os, time, phalanx, _targets\n"
        "ctx = phalanx.get_context(sys.argv[1])\n"
        "ctx.Process(target=_targets.watch_parent, args=sys.argv[2:4]).start()\n"
        "_targets.wait_for_json(sys.argv[2])\n"
        "ctx.Process(target=_targets.sleep_then_write, args=(2.0, sys.argv[4])).start()\n"
        "_targets.write_json(sys.argv[5], {'time': time.time()})\n"
        "os._exit(0)  # no atexit: the children are not joined\n"
    )
    names = ("ready.json", "out.json", "sibling.json", "exit.json")
    ready, out, sibling, exited = (tmp_path / name for name in names)
    result = _targets.run_python(
        ["-c", code, start_method, str(ready), str(out), str(sibling), str(exited)]
    )
    assert result.returncode == 0, result.stderr
    assert wait_for_json(ready, timeout=0)["alive"] is True
    after = wait_for_json(out, timeout=0)  # run_python waited for the whole session
    assert after["alive"] is False
    # Seen at once, not when the sibling (2 s later) closed a copy of our handle.
    assert after["time"] - wait_for_json(exited, timeout=0)["time"] < 1.0
    assert wait_for_json(sibling, timeout=0)


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_close_releases_fds(ctx: BaseContext) -> None:
    warm = ctx.Process(target=_targets.noop)  # starts the fork server if needed
    warm.start()
    warm.join(DEADLINE)
    warm.close()
    before = _fds()
    for _ in range(4):
        p = ctx.Process(target=_targets.noop)
        p.start()
        p.join(DEADLINE)
        assert p.exitcode == 0
        p.close()
    assert _fds() == before


def test_collected_process_releases_fds(ctx: BaseContext) -> None:
    warm = ctx.Process(target=_targets.noop)
    warm.start()
    warm.join(DEADLINE)
    del warm
    gc.collect()
    before = _fds()
    for _ in range(4):
        p = ctx.Process(target=_targets.noop)
        p.start()
        p.join(DEADLINE)
        del p
    gc.collect()
    assert _fds() == before


# --- the fork server dying ------------------------------------------------------------------


def _kill_fork_server() -> int:
    pid = _forkserver._forkserver.server_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _targets.wait_until(lambda: not _targets.pid_exists(pid), what="fork server dead")
    return pid


def test_dead_fork_server_is_restarted(tmp_path: Path) -> None:
    ctx = phalanx.get_context("forkserver")
    p = ctx.Process(target=_targets.noop)
    p.start()
    p.join(DEADLINE)
    old = _kill_fork_server()
    q = ctx.Process(target=_targets.report, args=(str(tmp_path / "r.json"),))
    q.start()
    q.join(DEADLINE)
    assert q.exitcode == 0
    new = _forkserver._forkserver.server_pid()
    assert new is not None and new != old
    assert wait_for_json(tmp_path / "r.json")["ppid"] == new


def test_child_outliving_fork_server_stays_controllable(tmp_path: Path) -> None:
    ctx = phalanx.get_context("forkserver")
    p = start_sleeper(ctx, tmp_path)
    pid = p.pid
    assert pid is not None
    try:
        _kill_fork_server()
        assert _targets.pid_exists(pid)
        assert p.is_alive()
        assert p.exitcode is None
        p.kill()
        _targets.wait_until(lambda: not _targets.pid_exists(pid), timeout=5, what="child gone")
    finally:
        try:
            os.kill(pid, signal.SIGKILL)  # orphaned: init reaps it
        except ProcessLookupError:
            pass
        _targets.wait_until(lambda: not _targets.pid_exists(pid), what="child gone")
        p.join(DEADLINE)
        _forkserver._forkserver.stop()  # reap the dead server


def test_a_child_reads_dev_null_as_stdin_and_so_does_its_child(
    ctx: BaseContext, tmp_path: Path
) -> None:
    """Forked children share one /dev/null stream made by their parent before the
    fork (issue 16: building it in each child cost it 0.1 ms); it must read as
    empty in a child, in that child's own children, and leave the parent's stdin
    as it was."""
    before = sys.stdin
    out = str(tmp_path / "stdin.json")
    p = ctx.Process(target=_targets.report_stdin, args=(out, ctx.get_start_method()))
    p.start()
    p.join(DEADLINE)
    assert p.exitcode == 0
    got = wait_for_json(out, timeout=0)
    dev_null = os.stat(os.devnull).st_rdev
    empty_dev_null = {"rdev": dev_null, "read": "", "closed": False}
    assert got["child"] == empty_dev_null
    assert got["grandchild"] == {"child": empty_dev_null, "grandchild": None}
    assert sys.stdin is before


_STDIN_WARNINGS = """
import sys
import phalanx

def read_stdin():
    sys.stdin.read()

if __name__ == "__main__":
    for _ in range(2):
        p = phalanx.get_context(sys.argv[1]).Process(target=read_stdin)
        p.start()
        p.join(30)
        assert p.exitcode == 0, p.exitcode
    print("done")
"""


def test_the_shared_dev_null_stdin_leaves_no_resource_warning(
    start_method: str, tmp_path: Path
) -> None:
    """Parent and children exit without an unclosed-file warning (``-X dev``)."""
    script = tmp_path / "prog.py"
    script.write_text(_STDIN_WARNINGS)
    result = _targets.run_python(
        [str(script), start_method], flags=["-X", "dev", "-W", "error::ResourceWarning"]
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["done"]
    assert "ResourceWarning" not in result.stderr
