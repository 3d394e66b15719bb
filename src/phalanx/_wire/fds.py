"""Handing file descriptors to a child being started.

While a Popen pickles the process object (``pickling.spawning``), an object
holding an fd reduces it to a :class:`DupFd`.  The Popen decides how the fd
reaches the child: spawn lets it be inherited at the same number, the fork
server sends it with SCM_RIGHTS and the child finds it by index.
"""

from __future__ import annotations

import os

from .pickling import get_spawning_popen

# In a child of the fork server: the fds that came with the request, in order.
_inherited: list[int] = []


def set_inherited_fds(fds: list[int]) -> None:
    _inherited[:] = fds


class DupFd:
    """A picklable reference to a duplicate of an fd, valid in the child being started."""

    def __init__(self, fd: int) -> None:
        popen = get_spawning_popen()
        if popen is None:
            raise TypeError(
                f"fd {fd} can only be pickled to start a child process; "
                "pass it as an argument of Process(...) instead"
            )
        dup = os.dup(fd)
        popen.keep_open_until_started(dup)
        self.handle: int = popen.duplicate_for_child(dup)
        self.by_index = bool(getattr(popen, "fds_by_index", False))

    @classmethod
    def from_handle(cls, handle: int, by_index: bool) -> DupFd:
        """For a handle a Popen's ``duplicate_for_child`` already returned (the stdlib's
        objects reduce their fds that way: see ``_stdlib``)."""
        made = cls.__new__(cls)
        made.handle, made.by_index = handle, by_index
        return made

    @staticmethod
    def spawning() -> bool:
        """Whether the current thread is pickling for a child being started."""
        return get_spawning_popen() is not None

    def discard(self) -> None:
        """In the child: the fd is not needed after all (close it)."""
        os.close(self.detach())

    def detach(self) -> int:
        """In the child: the fd itself (owned by the caller from now on)."""
        fd = _inherited[self.handle] if self.by_index else self.handle
        os.set_inheritable(fd, False)
        return fd
