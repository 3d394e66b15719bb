"""Contexts and start methods: choosing them, and what each one guarantees."""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import _targets
import phalanx
from _targets import DEADLINE, START_METHODS, wait_for_json
from phalanx import _forkserver
from phalanx.context import BaseContext


@pytest.fixture
def default_method() -> Iterator[None]:
    """Restore the default context's start method (possibly still unset) afterwards."""
    saved = phalanx.get_start_method(allow_none=True)
    yield
    phalanx.set_start_method(saved, force=True)


@pytest.fixture
def executable() -> Iterator[None]:
    yield
    phalanx.set_executable(sys.executable)


@pytest.fixture
def no_preload() -> Iterator[None]:
    """Leave the fork server preload list empty, whatever a test managed to set."""
    yield
    phalanx.set_forkserver_preload([])


def run_report(ctx: BaseContext, tmp_path: Path, name: str = "report.json") -> dict[str, Any]:
    out = tmp_path / name
    p = ctx.Process(target=_targets.report, args=(str(out),))
    p.start()
    p.join(DEADLINE)
    assert p.exitcode == 0
    result: dict[str, Any] = wait_for_json(out)
    return result


# --- contexts -------------------------------------------------------------------------------


def test_get_context(start_method: str) -> None:
    ctx = phalanx.get_context(start_method)
    assert ctx.get_start_method() == start_method
    assert ctx.get_start_method(allow_none=True) == start_method
    assert phalanx.get_context(start_method) is ctx
    assert ctx.get_context() is ctx
    assert ctx.get_context(start_method) is ctx
    for other in START_METHODS:
        assert ctx.get_context(other) is phalanx.get_context(other)
    assert issubclass(ctx.Process, phalanx.process.BaseProcess)
    assert ctx.Process is not phalanx.Process
    # The whole API hangs off a context.
    assert ctx.current_process() is phalanx.current_process()
    assert ctx.parent_process() is None
    assert ctx.active_children() == []
    assert ctx.cpu_count() == phalanx.cpu_count()
    assert ctx.ProcessError is phalanx.ProcessError


def test_get_context_none_is_the_default(default_method: None) -> None:
    assert phalanx.get_context() is phalanx.get_context(phalanx.get_start_method())
    phalanx.set_start_method("spawn", force=True)
    assert phalanx.get_context() is phalanx.get_context("spawn")


def test_each_context_uses_its_method(ctx: BaseContext, start_method: str, tmp_path: Path) -> None:
    # A forked child shares our memory; spawn and forkserver children are fresh
    # interpreters.
    saved = _targets.CANARY
    _targets.CANARY = "changed in the parent"
    try:
        rep = run_report(ctx, tmp_path)
    finally:
        _targets.CANARY = saved
    expected = "changed in the parent" if start_method == "fork" else "pristine"
    assert rep["canary"] == expected


def test_default_start_method_matches_stdlib() -> None:
    code = (
        "import json, multiprocessing as mp, phalanx as px\n"
        "print(json.dumps([mp.get_start_method(), px.get_start_method(),"
        " mp.get_all_start_methods(), px.get_all_start_methods()]))\n"
    )
    result = _targets.run_python(["-c", code])
    assert result.returncode == 0, result.stderr
    stdlib_default, ours, stdlib_all, ours_all = json.loads(result.stdout)
    assert ours == stdlib_default
    assert ours_all == stdlib_all


def test_get_all_start_methods() -> None:
    methods = phalanx.get_all_start_methods()
    assert sorted(methods) == sorted(START_METHODS)  # Linux has all three
    # The default comes first.
    default = _targets.run_python(["-c", "import phalanx; print(phalanx.get_start_method())"])
    assert methods[0] == default.stdout.strip()
    methods.clear()  # a fresh list each time
    assert len(phalanx.get_all_start_methods()) == 3


def test_set_start_method(default_method: None, start_method: str, tmp_path: Path) -> None:
    phalanx.set_start_method(start_method, force=True)
    assert phalanx.get_start_method() == start_method
    assert phalanx.get_context() is phalanx.get_context(start_method)
    # A plain phalanx.Process now starts with that method.
    saved = _targets.CANARY
    _targets.CANARY = "changed in the parent"
    try:
        out = tmp_path / "out.json"
        p = phalanx.Process(target=_targets.report, args=(str(out),))
        p.start()
        p.join(DEADLINE)
    finally:
        _targets.CANARY = saved
    assert p.exitcode == 0
    rep = wait_for_json(out)
    assert rep["start_method"] == start_method
    assert rep["canary"] == ("changed in the parent" if start_method == "fork" else "pristine")


def test_set_start_method_twice_needs_force(default_method: None) -> None:
    phalanx.set_start_method(None, force=True)
    phalanx.set_start_method("spawn")  # the first choice needs no force
    assert phalanx.get_start_method() == "spawn"
    with pytest.raises(RuntimeError, match="already been set"):
        phalanx.set_start_method("forkserver")
    assert phalanx.get_start_method() == "spawn"
    phalanx.set_start_method("forkserver", force=True)
    assert phalanx.get_start_method() == "forkserver"


def test_get_start_method_allow_none(default_method: None) -> None:
    phalanx.set_start_method(None, force=True)
    assert phalanx.get_start_method(allow_none=True) is None
    assert phalanx.get_start_method(allow_none=True) is None  # asking does not fix it
    default = phalanx.get_start_method()
    assert default in START_METHODS
    assert phalanx.get_start_method(allow_none=True) == default


def test_unknown_start_method(default_method: None) -> None:
    before = phalanx.get_start_method(allow_none=True)
    with pytest.raises(ValueError, match="'nope'"):
        phalanx.get_context("nope")
    with pytest.raises(ValueError, match="'nope'"):
        phalanx.get_context("spawn").get_context("nope")
    with pytest.raises(ValueError, match="'nope'"):
        phalanx.set_start_method("nope", force=True)
    assert phalanx.get_start_method(allow_none=True) == before


def test_concrete_context_refuses_set_start_method(ctx: BaseContext) -> None:
    with pytest.raises(ValueError, match="concrete context"):
        ctx.set_start_method("spawn")
    with pytest.raises(ValueError):
        ctx.set_start_method("spawn", force=True)


def test_freeze_support_is_a_no_op(ctx: BaseContext) -> None:
    assert phalanx.freeze_support() is None  # type: ignore[func-returns-value]
    assert ctx.freeze_support() is None  # type: ignore[func-returns-value]


def test_child_default_start_method_is_its_own(
    default_method: None, ctx: BaseContext, start_method: str, tmp_path: Path
) -> None:
    # Make the parent's default differ from the method starting the child.
    other = next(m for m in START_METHODS if m != start_method)
    phalanx.set_start_method(other, force=True)
    assert run_report(ctx, tmp_path)["start_method"] == start_method


def test_child_default_start_method_unset_parent(
    default_method: None, ctx: BaseContext, start_method: str, tmp_path: Path
) -> None:
    phalanx.set_start_method(None, force=True)
    assert run_report(ctx, tmp_path)["start_method"] == start_method


# --- set_executable ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [str, os.fsencode, Path], ids=["str", "bytes", "Path"])
def test_set_executable(executable: None, tmp_path: Path, kind: Any) -> None:
    phalanx.set_executable(kind(sys.executable))
    rep = run_report(phalanx.get_context("spawn"), tmp_path)
    assert rep["executable"] == sys.executable
    assert rep["start_method"] == "spawn"


def test_set_executable_missing_interpreter(executable: None, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-python"
    phalanx.get_context("spawn").set_executable(str(missing))
    p = phalanx.get_context("spawn").Process(target=_targets.noop)
    with pytest.raises(OSError):
        p.start()
    assert p.pid is None
    assert phalanx.active_children() == []
    phalanx.set_executable(sys.executable)
    p.start()  # the failed start left the object startable
    p.join(DEADLINE)
    assert p.exitcode == 0


# --- set_forkserver_preload ------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["json", ["json", 1], [b"json"], ("json", None)], ids=["str", "int", "bytes", "none"]
)
def test_set_forkserver_preload_rejects_non_strings(no_preload: None, bad: Any) -> None:
    with pytest.raises(TypeError, match="module_names must be a list of strings"):
        phalanx.set_forkserver_preload(bad)


@pytest.mark.parametrize("bad", [None, 42], ids=["None", "int"])
def test_set_forkserver_preload_rejects_non_iterables(no_preload: None, bad: Any) -> None:
    with pytest.raises(TypeError, match="module_names must be a list of strings"):
        phalanx.set_forkserver_preload(bad)


_PRELOAD_SCRIPT = """
import json, os, phalanx, _targets
out, kind = sys.argv[1:3]
names = ["phalanx_test_no_such_module", "_preload_probe"]
container = {"list": list, "tuple": tuple, "iter": iter}[kind](names)
ctx = phalanx.get_context("forkserver")
try:
    ctx.set_forkserver_preload(container)
except TypeError:
    print(json.dumps("rejected"))
    sys.exit(0)
p = ctx.Process(target=_targets.report_modules, args=(out, "_preload_probe"))
p.start(); p.join(30)
from phalanx import _forkserver
print(json.dumps({
    "exitcode": p.exitcode,
    "server": _forkserver._forkserver.server_pid(),
    "parent_has_it": "_preload_probe" in sys.modules,
}))
"""


def _run_preload(tmp_path: Path, kind: str) -> Any:
    """Run _PRELOAD_SCRIPT; check what it reports unless the preload was refused."""
    log, out = tmp_path / "imports.log", tmp_path / "child.json"
    env = dict(os.environ, PHALANX_TEST_PRELOAD_LOG=str(log))
    code = _targets.python_code(_PRELOAD_SCRIPT)
    result = _targets.run_python(["-c", code, str(out), kind], env=env)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    if summary == "rejected":
        return summary
    assert summary["exitcode"] == 0
    assert summary["parent_has_it"] is False
    # Imported once, by the server; its child inherited it already imported.
    assert log.read_text().split() == [str(summary["server"])]
    assert wait_for_json(out, timeout=0) == {"_preload_probe": True}
    return summary


@pytest.mark.parametrize("kind", ["list", "tuple"])
def test_set_forkserver_preload_imports_in_server(tmp_path: Path, kind: str) -> None:
    assert _run_preload(tmp_path, kind) != "rejected"


def test_set_forkserver_preload_iterator_not_dropped(tmp_path: Path) -> None:
    # Refusing an iterator (TypeError) would be fine too; dropping it silently is not.
    _run_preload(tmp_path, "iter")


def test_set_forkserver_preload_after_chdir(tmp_path: Path) -> None:
    log = tmp_path / "imports.log"
    code = (
        "import os, sys, phalanx, _targets\n"
        "from phalanx import _forkserver\n"
        "assert sys.path[0] == ''\n"
        "ctx = phalanx.get_context('forkserver')\n"
        "ctx.set_forkserver_preload(['_preload_probe'])\n"
        "os.chdir(sys.argv[1])\n"
        "p = ctx.Process(target=_targets.noop); p.start(); p.join(30)\n"
        "print(_forkserver._forkserver.server_pid(), p.exitcode)\n"
    )
    env = dict(os.environ, PHALANX_TEST_PRELOAD_LOG=str(log))
    # _preload_probe is found through sys.path's '' entry only: run from its directory.
    result = _targets.run_python(["-c", code, str(tmp_path)], cwd=_targets.TESTS_DIR, env=env)
    assert result.returncode == 0, result.stderr
    server, exitcode = result.stdout.split()
    assert exitcode == "0"
    assert log.exists() and log.read_text().split() == [server]


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_child_imports_from_original_dir_after_chdir(tmp_path: Path, method: str) -> None:
    # sys.path's '' means the directory the program started in, not the cwd of
    # the moment (the stdlib's ORIGINAL_DIR).
    out = tmp_path / "out.json"
    code = (
        "import os, sys, phalanx, _targets\n"
        "assert sys.path[0] == ''\n"
        "os.chdir(sys.argv[2])\n"
        "ctx = phalanx.get_context(sys.argv[1])\n"
        "p = ctx.Process(target=_targets.report, args=(sys.argv[3],))\n"
        "p.start(); p.join(30); sys.exit(p.exitcode)\n"
    )
    result = _targets.run_python(
        ["-c", code, method, str(tmp_path), str(out)], cwd=_targets.TESTS_DIR
    )
    assert result.returncode == 0, result.stderr
    assert wait_for_json(out, timeout=0)["start_method"] == method


def test_set_forkserver_preload_main(tmp_path: Path) -> None:
    log, out = tmp_path / "imports.log", tmp_path / "child.json"
    script = tmp_path / "prog.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, sys
            import phalanx
            # Not sys.argv: the fork server imports us with its own argv.
            with open(os.environ["PHALANX_TEST_PRELOAD_LOG"], "a") as f:
                f.write(f"{__name__} {os.getpid()}\\n")

            def target(path):
                import _targets
                _targets.report_value(path, __name__)

            if __name__ == "__main__":
                sys.path.insert(0, sys.argv[2])
                ctx = phalanx.get_context("forkserver")
                ctx.set_forkserver_preload(["__main__"])
                p = ctx.Process(target=target, args=(sys.argv[1],))
                p.start(); p.join(30)
                sys.exit(p.exitcode)
            """
        )
    )
    env = dict(os.environ, PHALANX_TEST_PRELOAD_LOG=str(log))
    result = _targets.run_python([str(script), str(out), _targets.TESTS_DIR], env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert wait_for_json(out, timeout=0) == {"value": "__mp_main__"}
    # Run as __main__ by us, imported once as __mp_main__ by the server; the
    # server's child reuses the server's copy.
    names = [line.split()[0] for line in log.read_text().splitlines()]
    assert names == ["__main__", "__mp_main__"]


# --- main modules ------------------------------------------------------------------------------

_GUARDED_SCRIPT = """
import json, os, sys
import phalanx

def target(path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"name": __name__, "cwd": os.getcwd(), "pid": os.getpid()}, f)
    os.replace(tmp, path)

if __name__ == "__main__":
    method, out, workdir = sys.argv[1:4]
    os.chdir(workdir)
    p = phalanx.get_context(method).Process(target=target, args=(out,))
    p.start()
    p.join(30)
    sys.exit(p.exitcode)
"""


def _run_guarded(tmp_path: Path, main: list[str], method: str) -> dict[str, Any]:
    """Run ``_GUARDED_SCRIPT``'s program, named by ``main`` (a script, an archive,
    ``-m name``), from ``tmp_path``; return what its child reported.  The program
    changes directory before the start: the child must still find its main (by
    an absolute path) and start in the parent's new cwd."""
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    out = tmp_path / "out.json"
    result = _targets.run_python(
        [*main, method, str(out), str(workdir)], cwd=tmp_path, env=dict(os.environ)
    )
    assert result.returncode == 0, result.stderr
    rep: dict[str, Any] = wait_for_json(out, timeout=0)
    assert rep["cwd"] == str(workdir)
    return rep


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_script_main_target(tmp_path: Path, method: str) -> None:
    (tmp_path / "prog.py").write_text(_GUARDED_SCRIPT)
    assert _run_guarded(tmp_path, ["prog.py"], method)["name"] == "__mp_main__"


_MAIN_STATE_SCRIPT = """
\"\"\"The docstring.\"\"\"
import json, os, sys
import phalanx

COUNT = 0

def bump():
    global COUNT
    COUNT += 1

def target(path):
    bump()
    main = sys.modules["__main__"]
    with open(path + ".tmp", "w") as f:
        json.dump({
            "name": __name__,
            "main_is_mp_main": main is sys.modules.get("__mp_main__"),
            "count_seen_by_main": main.COUNT,
            "file": main.__file__,
            "doc": main.__doc__,
            "spec": main.__spec__,
            "argv0": sys.argv[0],
            "runpy": "runpy" in sys.modules,
            "annotations_future": bool(target.__code__.co_flags & 0x1000000),
        }, f)
    os.replace(path + ".tmp", path)

if __name__ == "__main__":
    method, out = sys.argv[1:3]
    p = phalanx.get_context(method).Process(target=target, args=(out,))
    p.start()
    p.join(30)
    sys.exit(p.exitcode)
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_script_main_runs_in_the_child_as_runpy_would_without_runpy(
    tmp_path: Path, method: str
) -> None:
    """The parent's .py script runs as ``__mp_main__`` (issue 16: without runpy,
    1.5-5 ms of each spawned child); its functions see the installed module's
    globals, and nothing of phalanx's own compile flags leaks into it."""
    (tmp_path / "prog.py").write_text(_MAIN_STATE_SCRIPT)
    out = tmp_path / "out.json"
    result = _targets.run_python(["prog.py", method, str(out)], cwd=tmp_path, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert wait_for_json(out, timeout=0) == {
        "name": "__mp_main__",
        "main_is_mp_main": True,
        "count_seen_by_main": 1,
        "file": str(tmp_path / "prog.py"),
        "doc": "The docstring.",
        "spec": None,
        "argv0": "prog.py",
        "runpy": False,
        "annotations_future": False,
    }


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_zipapp_main_still_runs_in_the_child(tmp_path: Path, method: str) -> None:
    """A zip archive as the main script (``python app.pyz``): the child imports
    ``__main__`` from it through runpy, as the stdlib's does."""
    import zipapp

    src = tmp_path / "app"
    src.mkdir()
    (src / "__main__.py").write_text(_GUARDED_SCRIPT)
    zipapp.create_archive(src, tmp_path / "app.pyz")
    _run_guarded(tmp_path, ["app.pyz"], method)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_module_run_with_dash_m(tmp_path: Path, method: str) -> None:
    # python -m prog: the child re-imports the main module by its name.
    (tmp_path / "prog.py").write_text(_GUARDED_SCRIPT)
    assert _run_guarded(tmp_path, ["-m", "prog"], method)["name"] == "__mp_main__"


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_package_run_with_dash_m(tmp_path: Path, method: str) -> None:
    pkg = tmp_path / "prog_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(_GUARDED_SCRIPT)
    _run_guarded(tmp_path, ["-m", "prog_pkg"], method)


_UNGUARDED_SCRIPT = """
import sys
import phalanx

def target():
    pass

p = phalanx.get_context(sys.argv[1]).Process(target=target)
p.start()
p.join(30)
sys.exit(p.exitcode)
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_script_without_main_guard(tmp_path: Path, method: str) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(_UNGUARDED_SCRIPT)
    # run_python kills the whole session after 60 s and fails if anything of it
    # outlives the script: a fork bomb cannot escape.
    result = _targets.run_python([str(script), method], timeout=60)
    assert result.returncode != 0
    assert "RuntimeError" in result.stderr
    assert 'if __name__ == "__main__":' in result.stderr
    assert result.stderr.count("Traceback (most recent call last)") == 1  # one child, no bomb


_INTERACTIVE_CODE = """
import json, os, sys
import phalanx

def target(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"value": value, "name": __name__}, f)
    os.replace(tmp, path)

class Sub(phalanx.get_context(sys.argv[1]).Process):
    def run(self):
        target(self.out, "from a subclass")

method, out1, out2 = sys.argv[1:4]
ctx = phalanx.get_context(method)
p = ctx.Process(target=target, args=(out1, [1, 2]))
p.start(); p.join(30)
q = Sub()
q.out = out2
q.start(); q.join(30)
print(p.exitcode, q.exitcode)
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_python_c_main_targets(tmp_path: Path, method: str) -> None:
    out1, out2 = tmp_path / "1.json", tmp_path / "2.json"
    result = _targets.run_python(["-c", _INTERACTIVE_CODE, method, str(out1), str(out2)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "0"]
    assert wait_for_json(out1, timeout=0)["value"] == [1, 2]
    assert wait_for_json(out2, timeout=0)["value"] == "from a subclass"


# --- the fork server's socket -------------------------------------------------------------------


def _recv_frame(sock: socket.socket) -> bytes:
    header = _recv_exact(sock, 8)
    (size,) = struct.unpack("!Q", header)
    assert size <= 4096
    return _recv_exact(sock, size)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = b""
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the peer closes the connection (within DEADLINE) without sending more."""
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def _running_server(tmp_path: Path) -> tuple[str, int]:
    p = phalanx.get_context("forkserver").Process(target=_targets.noop)
    p.start()
    p.join(DEADLINE)
    assert p.exitcode == 0
    address, pid = _forkserver._forkserver._address, _forkserver._forkserver.server_pid()
    assert address is not None and pid is not None
    return address, pid


def _connect(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(DEADLINE)
    sock.connect(address)
    return sock


def test_forkserver_socket_is_private(tmp_path: Path) -> None:
    address, _pid = _running_server(tmp_path)
    assert stat.S_IMODE(os.stat(os.path.dirname(address)).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(address).st_mode) & 0o077 == 0


@pytest.mark.parametrize("attack", ["garbage", "oversized", "wrong-hmac", "hang-up"])
def test_forkserver_refuses_unauthenticated_client(tmp_path: Path, attack: str) -> None:
    address, server = _running_server(tmp_path)
    with _connect(address) as sock:
        challenge = _recv_frame(sock)  # the server challenges first
        assert 0 < len(challenge) <= 256
        if attack == "garbage":
            sock.sendall(b"\x80\x05garbage, not a frame" * 4)
            assert _closed_by_peer(sock)
        elif attack == "oversized":
            sock.sendall(struct.pack("!Q", 1 << 30) + b"x" * 1024)
            assert _closed_by_peer(sock)
        elif attack == "wrong-hmac":
            sock.sendall(struct.pack("!Q", 32) + bytes(32))
            reply = _recv_frame(sock)
            assert b"WELCOME" not in reply
            assert _closed_by_peer(sock)
        else:
            sock.shutdown(socket.SHUT_WR)
            assert _closed_by_peer(sock)
    # The same server still serves a legitimate client.
    rep = run_report(phalanx.get_context("forkserver"), tmp_path)
    assert rep["start_method"] == "forkserver"
    assert _forkserver._forkserver.server_pid() == server
    assert _targets.pid_exists(server)


def test_forkserver_not_blocked_by_stalled_client(tmp_path: Path) -> None:
    address, server = _running_server(tmp_path)
    result: dict[str, Any] = {}

    def start() -> None:
        p = phalanx.get_context("forkserver").Process(target=_targets.noop)
        p.start()
        p.join(DEADLINE)
        result["exitcode"] = p.exitcode

    stalled = _connect(address)
    try:
        _recv_frame(stalled)  # the server now waits for our answer
        t = threading.Thread(target=start)
        t.start()
        t.join(3.0)
        served_meanwhile = not t.is_alive()
    finally:
        stalled.close()
    t.join(DEADLINE)
    assert result.get("exitcode") == 0
    assert _forkserver._forkserver.server_pid() == server
    assert served_meanwhile, "a stalled client blocked the fork server"
