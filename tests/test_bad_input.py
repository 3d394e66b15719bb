"""Misuse of the Process API: each gives a specific exception whose message names the value."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

import _targets
import phalanx
from _targets import DEADLINE
from phalanx.context import BaseContext
from phalanx.errors import ProcessStateError


def test_process_state_error_is_value_and_assertion_error() -> None:
    assert issubclass(ProcessStateError, ValueError)
    assert issubclass(ProcessStateError, AssertionError)
    assert issubclass(ProcessStateError, phalanx.ProcessError)
    err = ProcessStateError("x")
    assert isinstance(err, ValueError) and isinstance(err, AssertionError)


def test_start_twice(ctx: BaseContext) -> None:
    p = ctx.Process(target=_targets.noop, name="twice")
    p.start()
    with pytest.raises(ProcessStateError, match=r"twice.*'twice'") as excinfo:
        p.start()
    assert isinstance(excinfo.value, ValueError)
    assert isinstance(excinfo.value, AssertionError)
    p.join(DEADLINE)
    assert p.exitcode == 0
    with pytest.raises(ProcessStateError, match="'twice'"):
        p.start()  # nor after it ended


def test_start_twice_under_python_O(start_method: str) -> None:
    # No assert-based validation: -O must not turn the error into a second child.
    code = _targets.python_code(
        "import phalanx, _targets\n"
        "assert False, 'this interpreter must run with -O'\n"
        "p = phalanx.get_context(sys.argv[1]).Process(target=_targets.noop, name='dup')\n"
        "p.start()\n"
        "try:\n"
        "    p.start()\n"
        "except ValueError as exc:\n"
        "    print('refused:', exc)\n"
        "print('children:', len(phalanx.active_children()))\n"
        "p.join(30)\n"
        "print('exitcode:', p.exitcode)\n"
    )
    result = _targets.run_python(["-c", code, start_method], flags=["-O"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("refused:") and "'dup'" in lines[0]
    assert lines[1] in ("children: 1", "children: 0")  # never 2
    assert lines[2] == "exitcode: 0"


def test_join_unstarted(ctx: BaseContext) -> None:
    p = ctx.Process(target=_targets.noop, name="lazy")
    with pytest.raises(ProcessStateError, match=r"join.*'lazy'"):
        p.join()
    with pytest.raises(ValueError, match="'lazy'"):
        p.join(1)


def test_terminate_and_kill_unstarted(ctx: BaseContext) -> None:
    p = ctx.Process(target=_targets.noop, name="idle")
    with pytest.raises(ProcessStateError, match=r"terminate.*'idle'"):
        p.terminate()
    with pytest.raises(ProcessStateError, match=r"kill.*'idle'"):
        p.kill()


def test_join_current_process() -> None:
    with pytest.raises(ProcessStateError, match="child process"):
        phalanx.current_process().join(0)


def test_unknown_start_method_is_named() -> None:
    with pytest.raises(ValueError, match="'nope'"):
        phalanx.get_context("nope")
    saved = phalanx.get_start_method(allow_none=True)
    try:
        with pytest.raises(ValueError, match="'nope'"):
            phalanx.set_start_method("nope", force=True)
    finally:
        phalanx.set_start_method(saved, force=True)


@pytest.mark.parametrize(
    "method", [42, ["fork"], "FORK", ""], ids=["int", "list", "upper", "empty"]
)
def test_odd_start_method_values(method: object) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(method))):
        phalanx.get_context(method)  # type: ignore[arg-type]


@pytest.mark.parametrize("target", [42, "noop", b"x"], ids=["int", "str", "bytes"])
def test_non_callable_target(ctx: BaseContext, target: object) -> None:
    with pytest.raises(TypeError, match=re.escape(repr(target))):
        ctx.Process(target=target)  # type: ignore[arg-type]


def test_non_numeric_timeout(ctx: BaseContext, tmp_path: Path) -> None:
    p = ctx.Process(target=_targets.sleep_forever, args=(str(tmp_path / "ready.json"),))
    p.start()
    try:
        _targets.wait_for_json(tmp_path / "ready.json")
        with pytest.raises(TypeError, match="'soon'"):
            p.join("soon")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="nan"):
            p.join(float("nan"))
        with pytest.raises(TypeError, match=r"\[1\]"):
            p.join([1])  # type: ignore[arg-type]
        assert p.is_alive()  # none of these waited or harmed the child
    finally:
        p.kill()
        p.join(DEADLINE)


def test_non_numeric_timeout_unstarted(ctx: BaseContext) -> None:
    p = ctx.Process(target=_targets.noop)
    with pytest.raises((TypeError, ValueError)):
        p.join("soon")  # type: ignore[arg-type]


@pytest.mark.parametrize("group", [1, "g", object()], ids=["int", "str", "object"])
def test_group_must_be_none(ctx: BaseContext, group: object) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(group))):
        ctx.Process(group=group, target=_targets.noop)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", [42, b"bytes", ["n"]], ids=["int", "bytes", "list"])
def test_name_must_be_str(ctx: BaseContext, name: object) -> None:
    with pytest.raises(TypeError, match=re.escape(repr(name))):
        ctx.Process(target=_targets.noop, name=name)  # type: ignore[arg-type]
    p = ctx.Process(target=_targets.noop, name="ok")
    with pytest.raises(TypeError, match=re.escape(repr(name))):
        p.name = name  # type: ignore[assignment]
    assert p.name == "ok"


def test_daemon_after_start(ctx: BaseContext) -> None:
    p = ctx.Process(target=_targets.noop, name="started")
    p.start()
    try:
        with pytest.raises(ProcessStateError, match=r"already started.*'started'"):
            p.daemon = True
        assert p.daemon is False
    finally:
        p.join(DEADLINE)


def test_authkey_must_be_bytes(ctx: BaseContext) -> None:
    p = ctx.Process(target=_targets.noop)
    with pytest.raises(TypeError, match="str"):
        p.authkey = "not bytes"  # type: ignore[assignment]


def test_close_running_is_a_state_error(ctx: BaseContext, tmp_path: Path) -> None:
    p = ctx.Process(target=_targets.sleep_forever, args=(str(tmp_path / "r.json"),), name="running")
    p.start()
    try:
        _targets.wait_for_json(tmp_path / "r.json")
        with pytest.raises(ProcessStateError, match="'running'"):
            p.close()
    finally:
        p.kill()
        p.join(DEADLINE)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_unpicklable_argument_fails_in_parent(method: str) -> None:
    # The child needs a pickled copy: the error is raised by start(), in the
    # parent, and leaves neither a child nor a started process behind.
    p = phalanx.get_context(method).Process(target=_targets.noop, args=(threading.Lock(),))
    with pytest.raises(TypeError, match="lock"):
        p.start()
    assert p.pid is None
    assert p.exitcode is None
    assert not p.is_alive()
    assert phalanx.active_children() == []
