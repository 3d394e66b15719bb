"""``phalanx.errors``: every exception and warning of phalanx under one public path.

Tracebacks, reprs and pickles name the module in a class's ``__module__``; a
private one (``phalanx._errors``) would break users' pickles at the next
internal rename and reads oddly in a traceback.  The same holds for every
public class and function re-exported from a private module.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
import traceback
from typing import Any

import pytest

import phalanx
import phalanx.errors as errors
from _targets import DEADLINE

# A sample of each error, built as phalanx raises it.
SAMPLES: dict[str, BaseException] = {
    "ProcessError": errors.ProcessError("x"),
    "BufferTooShort": errors.BufferTooShort(b"data"),
    "TimeoutError": errors.TimeoutError("slow"),
    "AuthenticationError": errors.AuthenticationError("digest received was wrong"),
    "ProcessStateError": errors.ProcessStateError("cannot start a process twice"),
    "AbandonedLockWarning": errors.AbandonedLockWarning("taken over from 123"),
    "LockStateError": errors.LockStateError("not owned"),
    "WorkerLostError": errors.WorkerLostError("lost", 123, -9, "SIGKILL", "map(f) item 3"),
    "TaskTimeoutError": errors.TaskTimeoutError("took over 1 s"),
    "PoolTerminatedError": errors.PoolTerminatedError("pool terminated"),
    "RemoteTraceback": errors.RemoteTraceback("Traceback ..."),
    "MaybeEncodingError": errors.MaybeEncodingError(TypeError("no pickle"), lambda: 0),
    "RemoteError": errors.RemoteError("KeyError: 'a'"),
    "ServerGoneError": errors.ServerGoneError("the manager's server is gone"),
    "ProtocolError": errors.ProtocolError("bad message header"),
    "ClusterSemanticsWarning": errors.ClusterSemanticsWarning("no fork here"),
}

# Where the stdlib has them (or phalanx had them before): still there, the same class.
REEXPORTED = {
    "phalanx": ("ProcessError", "BufferTooShort", "TimeoutError", "AuthenticationError"),
    "phalanx.context": ("ProcessError", "BufferTooShort", "TimeoutError", "AuthenticationError"),
    "phalanx.connection": ("AuthenticationError", "BufferTooShort"),
    "phalanx.pool": (
        "MaybeEncodingError",
        "RemoteTraceback",
        "TimeoutError",
        "WorkerLostError",
        "TaskTimeoutError",
        "PoolTerminatedError",
    ),
    "phalanx.managers": ("RemoteError", "ServerGoneError", "ProcessError"),
    "phalanx.synchronize": ("AbandonedLockWarning", "LockStateError"),
    "phalanx.process": ("ProcessStateError",),
    "phalanx.cluster": ("ClusterSemanticsWarning",),
}


# How an error travels from a pool worker (not errors themselves).
CARRIERS = ("ExceptionWithTraceback", "rebuild_exc")


def test_every_error_is_sampled_and_lives_in_phalanx_errors() -> None:
    assert sorted(SAMPLES) == sorted(set(errors.__all__) - set(CARRIERS))
    for name in SAMPLES:
        cls = getattr(errors, name)
        assert issubclass(cls, BaseException)
        assert cls.__module__ == "phalanx.errors", name


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_an_error_pickles_under_its_public_path_and_comes_back_whole(name: str) -> None:
    exc = SAMPLES[name]
    data = pickle.dumps(exc)
    assert b"phalanx._" not in data, data
    assert b"phalanx.errors" in data
    back = pickle.loads(data)
    assert type(back) is type(exc)
    assert back.args == exc.args
    assert str(back) == str(exc)
    assert vars(back) == vars(exc)


@pytest.mark.parametrize("module_name", sorted(REEXPORTED))
def test_errors_are_still_where_they_were(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in REEXPORTED[module_name]:
        assert getattr(module, name) is getattr(errors, name), f"{module_name}.{name}"


def test_the_stdlib_hierarchy_holds() -> None:
    assert issubclass(errors.BufferTooShort, errors.ProcessError)
    assert issubclass(errors.AuthenticationError, errors.ProcessError)
    assert issubclass(errors.TimeoutError, errors.ProcessError)
    assert issubclass(errors.TaskTimeoutError, errors.TimeoutError)
    # existing ``except`` clauses written for the stdlib keep catching these
    assert issubclass(errors.ProcessStateError, (ValueError, AssertionError))
    assert issubclass(errors.LockStateError, (AssertionError, RuntimeError))
    assert issubclass(errors.ServerGoneError, (errors.RemoteError, ConnectionError))
    assert issubclass(errors.ProtocolError, OSError)


def test_a_task_error_travels_under_public_paths_with_its_traceback() -> None:
    try:
        raise KeyError("missing")
    except KeyError as exc:
        carried = errors.ExceptionWithTraceback(exc, exc.__traceback__)
    data = pickle.dumps(carried)
    assert b"phalanx._" not in data and b"phalanx.errors" in data
    back = pickle.loads(data)
    assert type(back) is KeyError and back.args == ("missing",)
    assert isinstance(back.__cause__, errors.RemoteTraceback)
    assert 'raise KeyError("missing")' in str(back.__cause__)
    import phalanx.pool

    assert phalanx.pool.ExceptionWithTraceback is errors.ExceptionWithTraceback
    assert phalanx.pool.rebuild_exc is errors.rebuild_exc


def _public_modules() -> list[str]:
    names = ["phalanx"]
    for info in pkgutil.walk_packages(phalanx.__path__, "phalanx."):
        parts = info.name.split(".")
        if any(part.startswith("_") for part in parts[1:]):
            continue
        if info.name.startswith(("phalanx.ext.", "phalanx.__main__")):
            continue  # engines imported only when a user names them; the CLI
        names.append(info.name)
    return names


def _stdlib_names(module_name: str) -> list[str]:
    """Classes and functions the stdlib's counterpart of a phalanx module defines itself.

    (``multiprocessing.pool.ApplyResult`` is not in ``__all__``, yet it is in
    users' reprs, tracebacks and type annotations.)
    """
    stdlib_name = module_name.replace("phalanx", "multiprocessing", 1)
    try:
        stdlib = importlib.import_module(stdlib_name)
    except ImportError:
        return []
    return [
        name
        for name, value in vars(stdlib).items()
        if name[0] != "_"
        and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", "").startswith("multiprocessing")
    ]


def test_every_public_name_reports_a_public_module() -> None:
    private = []
    for module_name in _public_modules():
        module = importlib.import_module(module_name)
        names = getattr(module, "__all__", None) or [n for n in vars(module) if n[0] != "_"]
        for name in {*names, *_stdlib_names(module_name)}:
            value = getattr(module, name, None)
            if not (inspect.isclass(value) or inspect.isfunction(value)):
                continue
            origin = getattr(value, "__module__", None) or ""
            if origin.startswith("phalanx._") or "._" in origin:
                private.append(f"{module_name}.{name} -> {origin}")
    assert private == []


def _dies(_: int) -> int:
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)
    return 0


def test_a_traceback_of_a_lost_worker_names_the_public_class() -> None:
    with phalanx.get_context("fork").Pool(1) as pool:
        result = pool.apply_async(_dies, (1,))
        with pytest.raises(errors.WorkerLostError) as info:
            result.get(timeout=DEADLINE)
    text = "".join(traceback.format_exception_only(info.type, info.value))
    assert text.startswith("phalanx.errors.WorkerLostError: "), text
    assert info.value.signal == "SIGKILL"
    back: Any = pickle.loads(pickle.dumps(info.value))
    assert (back.pid, back.signal) == (info.value.pid, "SIGKILL")
