"""Network helpers the engine adapters share, with no engine imported.

``local_address_towards`` picks the address an engine's workers can reach
this process at; ``HeadWatch`` notices that an engine's head (its scheduler
or control store) stopped answering, for engines whose client library would
rather wait, or end the program, than say so.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time

__all__ = ("LOST_AFTER", "HeadWatch", "local_address_towards")

LOST_AFTER = 5.0  # seconds without an engine's head before a pool gives up


def local_address_towards(host: str) -> str:
    """This machine's address on the route to ``host`` (where its workers can reach us)."""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return "127.0.0.1"
    except ValueError:
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host, 9))  # no packet is sent: only a route is chosen
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


class HeadWatch:
    """Connect to ``host:port`` once a second, in a thread of its own.

    ``silent_for()`` is how long every attempt has failed (0.0 while the
    head answers); ``answered_since(t)`` whether an attempt begun at or after
    ``t`` succeeded (if none has been made yet, one is made at once).  A probe
    is a TCP connect closed at once, which the head sees as a client that went
    away; it never blocks the caller.
    """

    EVERY = 1.0

    def __init__(self, host: str, port: int) -> None:
        self.address = f"{host}:{port}"
        self._target = (host, port)
        self._failing_since: float | None = None
        self._answered_at = -1.0  # when the last probe that succeeded began
        self._stop = threading.Event()
        self._poke = threading.Event()
        self._thread = threading.Thread(target=self._run, name="phalanx-head-watch", daemon=True)
        self._thread.start()

    def silent_for(self) -> float:
        since = self._failing_since
        return 0.0 if since is None else time.monotonic() - since

    def answered_since(self, since: float) -> bool:
        if self._answered_at >= since:
            return True
        self._poke.set()
        return False

    def stop(self) -> None:
        self._stop.set()
        self._poke.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._poke.clear()
            began = time.monotonic()
            try:
                socket.create_connection(self._target, timeout=self.EVERY).close()
                self._failing_since = None
                self._answered_at = began
            except OSError:
                if self._failing_since is None:
                    self._failing_since = began
            self._poke.wait(self.EVERY)
