"""What a fresh interpreter needs to become a copy of this one (spawn and forkserver).

The parent builds *preparation data* (sys.path, argv, cwd, authkey, how to find
the main module); the child applies it with :func:`prepare`, which re-imports
the parent's main module under the name ``__mp_main__`` so that
``if __name__ == "__main__":`` blocks do not run again.
"""

from __future__ import annotations

import os
import sys
import types

from . import _platform, _runtime, process
from ._wire.pickling import is_package_main

TYPE_CHECKING = False  # typing is not imported at run time: see phalanx/context.py
if TYPE_CHECKING:
    from typing import Any

__all__ = (
    "get_command_line",
    "get_executable",
    "get_preparation_data",
    "import_main_path",
    "prepare",
    "set_executable",
)

FORK_MARKER = "--phalanx-fork"

_executable: str = sys.executable or ""
# The directory phalanx is imported from: the child needs it on sys.path before
# it can read its preparation data, even if only the parent's sys.path had it.
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def set_executable(executable: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> None:
    """Use ``executable`` (a Python interpreter) for children started with spawn."""
    global _executable
    path = os.fsdecode(executable)
    if not path:
        raise ValueError(f"executable must name a Python interpreter (got {executable!r})")
    _executable = path


def get_executable() -> str:
    if not _executable:
        raise RuntimeError(
            "sys.executable is empty or None: cannot spawn a Python child; "
            "call set_executable() with the path of a Python interpreter"
        )
    return _executable


def get_command_line(entry: str, *args: object) -> list[str]:
    """argv for a child interpreter that runs ``phalanx.<entry>.main(*args)``."""
    call = ", ".join(repr(a) for a in args)
    prog = (
        f"import sys; sys.path.insert(0, {_PACKAGE_ROOT!r}); "
        f"from phalanx.{entry} import main; main({call})"
    )
    return [get_executable(), *_platform.interpreter_flags(), "-c", prog, FORK_MARKER]


_GUARD_MESSAGE = """\
An attempt has been made to start a new process before the current process
has finished its bootstrapping phase.

This child was started with the '{method}' start method, which re-imports your
main module; the code that started it runs again at import time.  Start
processes only when the module is run as a program, never when it is imported:

    # wrong                            # right
    p = Process(target=f)              if __name__ == "__main__":
    p.start()                              p = Process(target=f)
                                           p.start()

(A frozen executable also needs freeze_support() first in that block.)"""


def check_not_importing_main() -> None:
    """Refuse to start a child while a spawned child imports its main module."""
    if getattr(process.current_process(), "_inheriting", False):
        method = getattr(process.current_process(), "_start_method", None) or "spawn"
        raise RuntimeError(_GUARD_MESSAGE.format(method=method))


def child_sys_path() -> list[str]:
    """``sys.path`` for a child, with ``''`` (the cwd at startup) made absolute."""
    sys_path = sys.path.copy()
    if "" in sys_path and process.ORIGINAL_DIR is not None:
        sys_path[sys_path.index("")] = process.ORIGINAL_DIR
    return sys_path


def get_preparation_data(name: str, start_method: str | None) -> dict[str, Any]:
    """Everything :func:`prepare` needs to rebuild this interpreter's state in a child."""
    check_not_importing_main()
    log_to_stderr, log_level = _runtime.logging_settings()
    data: dict[str, Any] = {
        "log_to_stderr": log_to_stderr,
        "authkey": process.current_process().authkey,
        "name": name,
        "sys_argv": sys.argv,
        "orig_dir": process.ORIGINAL_DIR,
        "dir": os.getcwd(),
        "start_method": start_method,
    }
    if log_level is not None:
        data["log_level"] = log_level
    data["sys_path"] = child_sys_path()

    main_module = sys.modules.get("__main__")
    spec_name = getattr(getattr(main_module, "__spec__", None), "name", None)
    if spec_name is not None:
        data["init_main_from_name"] = spec_name
    else:
        main_path = getattr(main_module, "__file__", None)
        # A script read from standard input (``python - < script``) or given
        # with -c has no file to import again: like an interactive __main__,
        # its functions travel by value instead (see _wire.pickling).
        if isinstance(main_path, str) and not main_path.startswith("<"):
            if not os.path.isabs(main_path) and process.ORIGINAL_DIR is not None:
                main_path = os.path.join(process.ORIGINAL_DIR, main_path)
            data["init_main_from_path"] = os.path.normpath(main_path)
    return data


def prepare(data: dict[str, Any]) -> None:
    """Apply preparation data in the child (everything but the start method)."""
    me = process.current_process()
    if "name" in data:
        me.name = data["name"]
    if "authkey" in data:
        me.authkey = data["authkey"]
    if data.get("log_to_stderr"):
        _runtime.log_to_stderr()
    if "log_level" in data:
        _runtime.get_logger().setLevel(data["log_level"])
    if "sys_path" in data:
        sys.path = data["sys_path"]
    if "sys_argv" in data:
        sys.argv = data["sys_argv"]
    if "dir" in data:
        os.chdir(data["dir"])
    if "orig_dir" in data:
        process.ORIGINAL_DIR = data["orig_dir"]
    if "init_main_from_name" in data:
        _fixup_main_from_name(data["init_main_from_name"])
    elif "init_main_from_path" in data:
        import_main_path(data["init_main_from_path"])


def _fixup_main_from_name(mod_name: str) -> None:
    current_main = sys.modules.get("__main__")
    if is_package_main(mod_name):
        # `python -m pkg`: re-running pkg/__main__.py would rerun the program;
        # objects defined there are pickled by value instead.
        return
    if getattr(getattr(current_main, "__spec__", None), "name", None) == mod_name:
        return
    import runpy

    main_content = runpy.run_module(mod_name, run_name="__mp_main__", alter_sys=True)
    _install_main(main_content)


def import_main_path(main_path: str) -> None:
    """Run the parent's main script as module ``__mp_main__`` and make it ``__main__``."""
    current_main = sys.modules.get("__main__")
    main_name = os.path.splitext(os.path.basename(main_path))[0]
    if main_name == "ipython":
        return
    if getattr(current_main, "__file__", None) == main_path:
        return
    if _run_main_source(main_path):
        return
    import runpy

    main_content = runpy.run_path(main_path, run_name="__mp_main__")
    _install_main(main_content)


def _run_main_source(path: str) -> bool:
    """Run a plain ``.py`` main script as ``__mp_main__``, as ``runpy.run_path`` would;
    False (nothing done) for anything else: a directory, a zip archive, a ``.pyc``.

    Without runpy: it and the pkgutil it loads are 1.5-5 ms of every spawned
    child's start (pkgutil brings typing on 3.11).  The module is the one the
    script ran in, so its functions' globals are ``__main__``'s own, where
    runpy hands back a copy of them.
    """
    if not path.endswith(".py"):
        return False
    import io

    try:
        with io.open_code(path) as f:
            source = f.read()
    except OSError:
        return False  # runpy raises the error users expect
    if b"PK\x05\x06" in source[-65_557:]:
        return False  # a zip archive (a .pyz renamed .py): runpy imports from it
    code = compile(source, path, "exec", dont_inherit=True)
    module = types.ModuleType("__mp_main__")
    module.__dict__.update(
        __file__=path, __cached__=None, __loader__=None, __package__="", __spec__=None
    )
    saved_argv0 = sys.argv[0] if sys.argv else None
    previous = sys.modules.get("__mp_main__")
    sys.modules["__mp_main__"] = module
    if sys.argv:
        sys.argv[0] = path
    try:
        exec(code, module.__dict__)
    except BaseException:
        if previous is None:
            sys.modules.pop("__mp_main__", None)
        else:
            sys.modules["__mp_main__"] = previous
        raise
    finally:
        if saved_argv0 is not None:
            sys.argv[0] = saved_argv0
    sys.modules["__main__"] = module
    return True


def _install_main(namespace: dict[str, Any]) -> None:
    main_module = types.ModuleType("__mp_main__")
    main_module.__dict__.update(namespace)
    sys.modules["__main__"] = sys.modules["__mp_main__"] = main_module
