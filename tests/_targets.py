"""Process targets for the test suite, and the parent-side helpers that read their results.

Targets live here, in an importable module, so that spawn and forkserver
children can unpickle them by reference.  A child reports to the test through
a JSON file: written under a temporary name, then ``os.replace``d, so the
parent never reads half a file.  The parent polls for it with a deadline
(``wait_for_json``); nothing synchronizes with sleeps.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import phalanx
from phalanx import context

TESTS_DIR = str(Path(__file__).resolve().parent)
START_METHODS = ["fork", "spawn", "forkserver"]

# Set by a test in the parent: a forked child sees the new value, a spawned or
# forkserver child (a fresh interpreter) sees this one.
CANARY = "pristine"

# Generous bound for anything that should take well under a second.
DEADLINE = 30.0


# --- child -> parent reporting ----------------------------------------------------------


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    tmp = f"{os.fspath(path)}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def wait_for_json(path: str | os.PathLike[str], timeout: float = DEADLINE) -> Any:
    """Poll for a file written by ``write_json``; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} did not appear within {timeout} s") from None
            time.sleep(0.005)


def wait_until(predicate: Any, timeout: float = DEADLINE, what: str = "condition") -> None:
    """Poll ``predicate()`` until true; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.005)


@contextlib.contextmanager
def threads_switching_at_every_bytecode() -> Iterator[None]:
    """Let this process's threads interleave as finely as CPython allows (a race's window
    of a few bytecodes, hit in a test run rather than once in many)."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def pid_exists(pid: int) -> bool:
    """Whether ``pid`` names a live (non-zombie) process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def fd_targets(pid: int) -> list[str]:
    """What process ``pid``'s open fds point to (``socket:[123]``, paths...); fds that
    close meanwhile are left out."""
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return targets


def named_shm_held(pid: int) -> set[str]:
    """The /dev/shm entries process ``pid`` has open or mapped (empty once it is gone).

    Tests judge /dev/shm through their own processes only: other programs
    may create and remove entries there meanwhile.
    """
    held = set()
    try:
        for target in fd_targets(pid):
            if target.startswith("/dev/shm/"):
                held.add(target[len("/dev/shm/") :].removesuffix(" (deleted)"))
        with open(f"/proc/{pid}/maps", encoding="utf-8") as f:
            for line in f:
                path = line.split(maxsplit=5)[5:]
                if path and path[0].startswith("/dev/shm/"):
                    held.add(path[0].rstrip("\n")[len("/dev/shm/") :].removesuffix(" (deleted)"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return held


def session_members(sid: int) -> list[int]:
    """Pids of the live processes in session ``sid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # fields: state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def run_python(
    args: Sequence[str],
    *,
    timeout: float = 60.0,
    flags: Sequence[str] = (),
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    stdin: Any = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``sys.executable [flags] args`` in a new session; kill the session on timeout.

    After it returns, no process of that session may survive (a fork bomb or a
    leaked grandchild fails the test instead of outliving it).
    """
    proc = subprocess.Popen(
        [sys.executable, *flags, *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_session(proc.pid)
        out, err = proc.communicate(timeout=10)
        raise AssertionError(
            f"python {' '.join(args)[:200]} did not finish within {timeout} s\n"
            f"stdout:\n{out}\nstderr:\n{err}"
        ) from None
    finally:
        if proc.poll() is None:  # pragma: no cover - only on an unexpected exception
            _kill_session(proc.pid)
            proc.wait(10)
    try:
        wait_until(lambda: not session_members(proc.pid), timeout=5, what="session empty")
    except AssertionError:
        survivors = session_members(proc.pid)
        _kill_session(proc.pid)
        raise AssertionError(f"processes outlived their parent: {survivors}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _kill_session(sid: int) -> None:
    for pid in session_members(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def python_code(body: str) -> str:
    """``python -c`` code that can import this module (and phalanx)."""
    return f"import sys; sys.path.insert(0, {TESTS_DIR!r})\n{body}"


# --- targets ------------------------------------------------------------------------------


def noop() -> None:
    pass


def describe(proc: Any) -> dict[str, Any] | None:
    if proc is None:
        return None
    return {"name": proc.name, "pid": proc.pid, "ident": proc.ident}


def report(path: str) -> None:
    """Write what this child knows about itself."""
    me = phalanx.current_process()
    parent = phalanx.parent_process()
    write_json(
        path,
        {
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "me": describe(me),
            "daemon": me.daemon,
            "is_alive": me.is_alive(),
            "authkey": me.authkey.hex(),
            "authkey_type": type(me.authkey).__name__,
            "parent": describe(parent),
            "parent_alive": parent.is_alive() if parent is not None else None,
            "start_method": phalanx.get_start_method(),
            "canary": CANARY,
            "executable": sys.executable,
            "argv": sys.argv,
            "main_name": getattr(sys.modules.get("__main__"), "__name__", None),
        },
    )


def report_args(path: str, *args: Any, **kwargs: Any) -> None:
    write_json(path, {"args": list(args), "kwargs": kwargs})


def report_value(path: str, value: Any) -> None:
    write_json(path, {"value": value})


def sleep_forever(ready: str | None = None) -> None:
    """Report ``{"pid": ...}`` to ``ready`` (if given), then never return."""
    if ready is not None:
        write_json(ready, {"pid": os.getpid()})
    while True:
        time.sleep(3600)


def sleep_then_write(seconds: float, path: str) -> None:
    time.sleep(seconds)
    write_json(path, {"pid": os.getpid()})


def raise_error(message: str) -> None:
    raise ValueError(message)


def exit_with(code: Any) -> None:
    sys.exit(code)


def exit_without_code() -> None:
    sys.exit()


def start_grandchild(path: str, method: str) -> None:
    """Start a grandchild with ``method``; report its name as seen from both sides."""
    ctx = phalanx.get_context(method)
    inner = f"{path}.grandchild"
    gp = ctx.Process(target=report, args=(inner,))
    unnamed = ctx.Process(target=noop)
    gp.start()
    gp.join(DEADLINE)
    write_json(
        path,
        {
            "me": describe(phalanx.current_process()),
            "grandchild_name": gp.name,
            "second_name": unnamed.name,
            "grandchild_exitcode": gp.exitcode,
            "grandchild": wait_for_json(inner, timeout=1),
        },
    )


def try_to_start_child(path: str, method: str) -> None:
    """Try to start a child (refused in a daemon); report the exception."""
    p = phalanx.get_context(method).Process(target=noop)
    try:
        p.start()
    except Exception as exc:
        result = {"type": type(exc).__name__, "message": str(exc)}
        result["is_assertion"] = isinstance(exc, AssertionError)
    else:
        p.join(DEADLINE)
        result = {"type": None, "message": "", "is_assertion": False}
    write_json(path, result)


class _Reporter:
    """A Process subclass body: overrides ``run()`` and carries its own state."""

    def __init__(self, path: str, payload: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[call-arg]
        self.path = path
        self.payload = payload

    def run(self) -> None:
        me = phalanx.current_process()
        write_json(
            self.path,
            {
                "payload": self.payload,
                "is_me": me is self,
                "class": type(me).__name__,
                "name": me.name,
            },
        )


class ForkReporter(_Reporter, context.ForkProcess):
    pass


class SpawnReporter(_Reporter, context.SpawnProcess):
    pass


class ForkServerReporter(_Reporter, context.ForkServerProcess):
    pass


REPORTERS: dict[str, type[Any]] = {
    "fork": ForkReporter,
    "spawn": SpawnReporter,
    "forkserver": ForkServerReporter,
}


def ignore_sigterm_then_sleep(ready: str) -> None:
    """Ignore SIGTERM (so only kill() ends us), report ready, sleep forever."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sleep_forever(ready)


def report_modules(path: str, *names: str) -> None:
    """Report which of the modules ``names`` this child has already imported."""
    write_json(path, {name: name in sys.modules for name in names})


def report_cwd(path: str) -> None:
    write_json(path, {"cwd": os.getcwd(), "main_name": sys.modules["__main__"].__name__})


def watch_parent(ready: str, out: str) -> None:
    """Report the parent alive, wait for it to die (join), report again."""
    parent = phalanx.parent_process()
    assert parent is not None
    write_json(ready, {"alive": parent.is_alive(), "pid": parent.pid})
    parent.join(DEADLINE)
    write_json(out, {"alive": parent.is_alive(), "time": time.time()})


def start_thread_then_return(path: str) -> None:
    """Leave a non-daemon thread running: the child must wait for it before exiting."""
    threading.Thread(target=sleep_then_write, args=(0.2, path)).start()


def segfault() -> None:
    faulthandler.disable()  # pytest's, inherited by a forked child: no dump on stderr
    ctypes.string_at(0)


def abort() -> None:
    faulthandler.disable()
    os.abort()


def hard_exit(code: int) -> None:
    os._exit(code)


def kill_self(signum: int) -> None:
    os.kill(os.getpid(), signum)


def report_payload(path: str, payload: bytes) -> None:
    write_json(path, {"len": len(payload), "sha256": hashlib.sha256(payload).hexdigest()})


class FailsToUnpickle:
    """Pickles fine; raises when unpickled (in the child)."""

    def __reduce__(self) -> Any:
        return raise_error, ("unpickling failed on purpose",)


# --- starting and ending children from tests -----------------------------------


def start(ctx: Any, target: Any, *args: Any) -> Any:
    """Start ``target(*args)`` in a child of ``ctx``; returns the process."""
    p = ctx.Process(target=target, args=args)
    p.start()
    return p


def finish(p: Any, exitcode: int = 0) -> None:
    """Join ``p`` within DEADLINE (killing it otherwise) and check its exit code."""
    p.join(DEADLINE)
    if p.exitcode is None:
        p.kill()
        p.join(DEADLINE)
        raise AssertionError(f"{p!r} did not end within {DEADLINE} s")
    assert p.exitcode == exitcode


def kill(p: Any) -> None:
    """SIGKILL ``p`` if it is still running, and reap it."""
    if p.exitcode is None:
        p.kill()
    p.join(DEADLINE)


def bounded(fn: Any, timeout: float = DEADLINE) -> Any:
    """``fn()`` run in a helper thread; AssertionError if it is not over within ``timeout`` s."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise AssertionError(f"{fn!r} did not return within {timeout} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def report_stdin(path: str, method: str | None = None) -> None:
    """What a child's sys.stdin is: its device, what it reads; and a grandchild's (``method``)."""
    import stat

    st = os.fstat(sys.stdin.fileno())
    mine = {
        "rdev": st.st_rdev if stat.S_ISCHR(st.st_mode) else None,
        "read": sys.stdin.read(),
        "closed": sys.stdin.closed,
    }
    grandchild = None
    if method is not None:
        import phalanx

        inner = path + ".grandchild"
        p = phalanx.get_context(method).Process(target=report_stdin, args=(inner,))
        p.start()
        p.join(DEADLINE)
        grandchild = wait_for_json(inner, timeout=0)
    write_json(path, {"child": mine, "grandchild": grandchild})
