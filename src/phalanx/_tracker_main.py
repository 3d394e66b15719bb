"""The resource tracker process (entry point; the client side is ``_tracker``).

Reads registration lines from its pipe until EOF, i.e. until every process of
the tree has exited, then unlinks what is still registered and reports it.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

from . import _platform

TYPE_CHECKING = False  # typing is not imported at run time: see phalanx/context.py
if TYPE_CHECKING:
    from typing import NoReturn

# (Looked up at clean-up: binding libc at start-up would compete with the first child.)
_CLEANUP: dict[str, Callable[[str], None]] = {
    "shared_memory": lambda name: _platform.shm_unlink(name)
}


def serve(fd: int) -> dict[str, set[str]]:
    """Collect registrations until EOF; returns what was never unregistered."""
    registry: dict[str, set[str]] = {rtype: set() for rtype in _CLEANUP}
    with open(fd, "rb") as pipe:
        for line in pipe:
            try:
                command, rtype, hexname = line.rstrip(b"\n").decode("ascii").split(":")
                name = bytes.fromhex(hexname).decode()
            except ValueError:
                continue  # garbage: ignore rather than die and leak everything
            if command == "REGISTER" and rtype in registry:
                registry[rtype].add(name)
            elif command == "UNREGISTER" and rtype in registry:
                registry[rtype].discard(name)
    return registry


def main(fd: int) -> NoReturn:
    os.set_inheritable(fd, False)
    # Signals aimed at the user's program are not for us: we must outlive it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    leaked = serve(fd)
    for rtype, names in leaked.items():
        removed = []
        for name in sorted(names):
            try:
                _CLEANUP[rtype](name)
            except OSError:
                continue  # already unlinked by someone else: not left behind
            removed.append(name)
        if not removed:
            continue
        try:
            sys.stderr.write(
                f"phalanx resource tracker: {len(removed)} {rtype} object(s) left behind by "
                f"finished processes, removed them: {removed}\n"
            )
        except (OSError, ValueError):
            pass
    os._exit(0)
