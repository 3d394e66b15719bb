"""``SharedMemoryManager``: segments its server unlinks when it shuts down.

Documented, and pickled by reference, under ``phalanx.managers`` (as the
stdlib's ``multiprocessing.managers.SharedMemoryManager``), which re-exports
both classes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from ..errors import ProcessStateError
from .base import BaseManager, State
from .proxy import dispatch
from .server import Server

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TypeVar

    from ..shared_memory import ShareableList as _ShareableList
    from ..shared_memory import SharedMemory as _SharedMemory

    # What a ShareableList holds (as typeshed's multiprocessing.shared_memory._SLT).
    _SLT = TypeVar("_SLT", int, float, bool, str, bytes, None)

__all__ = ("SharedMemoryManager", "SharedMemoryServer")


class SharedMemoryServer(Server):
    """A server that also unlinks, at shutdown, the segments its clients created."""

    segments: list[str]
    _segments_lock: threading.Lock

    if not TYPE_CHECKING:  # checkers see Server's parameters, which these pass on

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.segments = []
            self._segments_lock = threading.Lock()

    def _track(self, name: str) -> tuple[str, Any]:
        with self._segments_lock:
            self.segments.append(name)
        return "#RETURN", None

    def _release(self, name: str) -> tuple[str, Any]:
        with self._segments_lock:
            if name in self.segments:
                self.segments.remove(name)
        _unlink_segment(name)
        return "#RETURN", None

    def _list(self) -> tuple[str, Any]:
        with self._segments_lock:
            return "#RETURN", list(self.segments)

    def _shutdown(self) -> tuple[str, Any]:
        with self._segments_lock:
            names, self.segments = self.segments, []
        for name in names:
            _unlink_segment(name)
        return super()._shutdown()

    _ops = {
        **Server._ops,
        "track_segment": _track,
        "release_segment": _release,
        "list_segments": _list,
        "shutdown": _shutdown,
    }


def _unlink_segment(name: str) -> None:
    from ..shared_memory import SharedMemory

    try:
        segment = SharedMemory(name, track=False)
    except FileNotFoundError:
        return
    segment.close()
    segment.unlink()


class SharedMemoryManager(BaseManager):
    """Creates ``SharedMemory``/``ShareableList`` segments that its server frees at shutdown."""

    _Server = SharedMemoryServer

    if TYPE_CHECKING:
        # Checkers see BaseManager's __init__ (the run-time one passes *args, **kwargs on,
        # with the stdlib's signature); get_server() makes a SharedMemoryServer (_Server).
        def get_server(self) -> SharedMemoryServer: ...

    else:

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)

    def SharedMemory(self, size: int) -> _SharedMemory:
        """A new ``SharedMemory`` of ``size`` bytes, unlinked when the manager shuts down."""
        from ..shared_memory import SharedMemory

        self._check_started()
        segment = SharedMemory(None, create=True, size=size)
        self._track(segment.name, segment)
        return segment

    def ShareableList(self, sequence: Iterable[_SLT] | None) -> _ShareableList[_SLT]:
        """A new ``ShareableList``, unlinked when the manager shuts down."""
        from ..shared_memory import ShareableList

        self._check_started()
        shared: _ShareableList[_SLT] = ShareableList(sequence)
        self._track(shared.shm.name, shared.shm)
        return shared

    def _check_started(self) -> None:
        if self._state.value != State.STARTED:
            raise ProcessStateError(
                f"{type(self).__name__} not started: call start() (or use it in a with block) "
                "before creating segments"
            )

    def _track(self, name: str, segment: Any) -> None:
        try:
            dispatch(
                self._address, self._serializer, bytes(self._authkey), "track_segment", (name,)
            )
        except BaseException:
            segment.close()
            segment.unlink()
            raise


for _public in (SharedMemoryServer, SharedMemoryManager):
    _public.__module__ = "phalanx.managers"
