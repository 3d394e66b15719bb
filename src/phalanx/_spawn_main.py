"""Entry point of a spawned child (``python -c "from phalanx._spawn_main import main; ..."``).

Reads two frames from the parent's pipe (preparation data, then the pickled
process object), becomes that process and exits with its exit code.  The pipe
stays open afterwards as the child's sentinel for its parent: EOF means the
parent is gone.
"""

from __future__ import annotations

import os
import sys

from . import _start, process
from ._spawn import prepare
from ._wire.framing import read_frame
from ._wire.pickling import loads

TYPE_CHECKING = False  # typing is not imported at run time: see phalanx/context.py
if TYPE_CHECKING:
    from typing import NoReturn


def run_child(fd: int) -> int:
    """Become the process described on ``fd``; return its exit code."""
    me = process.current_process()
    me._inheriting = True  # type: ignore[attr-defined]
    try:
        data = loads(read_frame(fd))
        method = data.get("start_method")
        if method is not None:
            _start.default.set_start_method(method, force=True)
            me._start_method = method
        if "tracker" in data:
            from . import _tracker

            _tracker.adopt(data["tracker"].detach())
        prepare(data)
        process_obj: process.BaseProcess = loads(read_frame(fd))
    finally:
        del me._inheriting  # type: ignore[attr-defined]
    return process_obj._bootstrap(parent_sentinel=fd)


def main(pipe_handle: int) -> NoReturn:
    os.set_inheritable(pipe_handle, False)
    sys.exit(run_child(pipe_handle))
