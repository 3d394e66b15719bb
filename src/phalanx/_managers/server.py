"""The server side of managers: holds the referents and answers requests (layer 4).

One thread accepts connections (clients authenticate side by side inside
``Listener.accept``, holding no thread); each authenticated connection gets a
thread that runs its requests one after the other (protocol in ``proxy``).  A blocking
call (``Queue.get``, ``Lock.acquire``) blocks only the thread of the client
thread that made it, and a lock taken by a client thread is owned by the one
server thread that serves it, so ``RLock`` and ``Condition`` behave.

A referent lives while references to it exist: one per proxy in any process
(the proxy's creation or unpickling adds one, its garbage collection removes
it) and one per proxy stored inside another referent of this server.
"""

from __future__ import annotations

import errno
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from .. import _runtime
from ..errors import AuthenticationError
from ..process import AuthenticationString, current_process
from .proxy import ERROR, PROXY, REMOTE, RETURN, listener_client

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .._listener import Listener
    from .proxy import _Address

__all__ = ("Server", "all_methods", "public_methods")

_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_BACKOFF_MIN, _BACKOFF_MAX = 0.01, 1.0  # seconds between tries when out of fds or threads

# Methods every referent answers, exposed or not.
_ALWAYS = ("__repr__", "__str__", "#GETVALUE")


def all_methods(obj: Any) -> list[str]:
    """Names of every callable attribute of ``obj``."""
    return [name for name in dir(obj) if callable(getattr(obj, name, None))]


def public_methods(obj: Any) -> list[str]:
    """Names of the callable attributes of ``obj`` that do not start with ``_``."""
    return [name for name in dir(obj) if name[0] != "_" and callable(getattr(obj, name, None))]


class _Entry:
    __slots__ = ("allowed", "exposed", "method_to_typeid", "obj", "refs")

    def __init__(
        self, obj: Any, exposed: tuple[str, ...], method_to_typeid: Mapping[str, str] | None
    ) -> None:
        self.obj = obj
        self.exposed = exposed
        # Each call checks its method name against a set: a dict's proxy exposes
        # 17, and a name read off the wire is never the same string object.
        self.allowed = frozenset(exposed)
        self.method_to_typeid = method_to_typeid
        self.refs = 1


class Server:
    """Serves the referents of a manager on ``address`` (see the module docstring)."""

    def __init__(
        self,
        registry: Mapping[str, tuple[Any, ...]],
        address: _Address | None,
        authkey: bytes,
        serializer: str,
    ) -> None:
        if not isinstance(authkey, bytes):
            raise TypeError(f"Authkey {authkey!r} is type {type(authkey)!s}, not bytes")
        self.registry: Mapping[str, tuple[Any, ...]] = registry
        self.authkey: AuthenticationString = AuthenticationString(authkey)
        try:
            listener_type = listener_client[serializer][0]
        except KeyError:
            raise ValueError(
                f"unknown serializer {serializer!r}: use one of {sorted(listener_client)}"
            ) from None
        self.listener: Listener = listener_type(address=address, backlog=128, authkey=authkey)
        # Truthfully an _Address; Any until callers that unpack it as (host, port)
        # (__main__.serve_manager) narrow it first.
        self.address: Any = self.listener.address
        self.serializer: str = serializer
        self._objects: dict[str, _Entry] = {}
        self._mutex = threading.RLock()
        self.stop_event: threading.Event = threading.Event()

    # -- lifetime ----------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve until a ``shutdown`` request (or Ctrl-C); then exit the process."""
        process = current_process()
        process._manager_server = self  # type: ignore[attr-defined]
        try:
            accepter = threading.Thread(
                target=self._accepter, name="phalanx-manager-accept", daemon=True
            )
            accepter.start()
            try:
                while not self.stop_event.is_set():
                    self.stop_event.wait(1)
            except (KeyboardInterrupt, SystemExit):
                pass
        finally:
            if sys.stdout is not None:
                sys.stdout.flush()
            if sys.stderr is not None:
                sys.stderr.flush()
            sys.exit(0)

    def _accepter(self) -> None:
        """Accept clients until the server stops, whatever happens.

        Clients authenticate side by side inside ``accept()`` (a silent or
        slow one delays only itself, and holds no thread); each authenticated
        one gets a thread.  A failed handshake is the client's problem; when
        the process is out of file descriptors or threads, wait a moment
        (doubling up to a second) and go on.
        """
        backoff = 0.0
        while not self.stop_event.is_set():
            try:
                conn = self.listener.accept()
            except (AuthenticationError, EOFError) as exc:
                _runtime.debug("manager: a client failed its handshake: %s", exc)
                continue
            except OSError as exc:
                if self.stop_event.is_set() or self.listener._socket is None:
                    return
                if exc.errno not in _RESOURCE_ERRORS:
                    _runtime.debug("manager: a client failed its handshake: %s", exc)
                    continue
                backoff = self._back_off(backoff, f"cannot accept a client: {exc}")
                continue
            try:
                threading.Thread(
                    target=self._serve_client,
                    args=(conn,),
                    daemon=True,
                    name="phalanx-manager-client",
                ).start()
            except RuntimeError as exc:  # can't start new thread
                conn.close()
                backoff = self._back_off(backoff, f"cannot start a thread for a client: {exc}")
                continue
            backoff = 0.0

    def _back_off(self, backoff: float, why: str) -> float:
        backoff = min(max(2 * backoff, _BACKOFF_MIN), _BACKOFF_MAX)
        _runtime.get_logger().warning("manager server: %s; retrying in %.2f s", why, backoff)
        self.stop_event.wait(backoff)
        return backoff

    # -- one client connection ---------------------------------------------------------

    def _serve_client(self, conn: Any) -> None:
        try:
            self._serve_connection(conn)
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _serve_connection(self, conn: Any) -> None:
        while not self.stop_event.is_set():
            request: Any = None
            try:
                request = conn.recv()
            except (EOFError, OSError):
                return  # the client went away (even in the middle of a call)
            except Exception:
                reply: tuple[str, Any] = (REMOTE, f"unreadable request:\n{traceback.format_exc()}")
            else:
                reply = self._handle(request)
            try:
                conn.send(reply)
            except (EOFError, OSError):
                return
            except Exception:
                try:
                    conn.send((REMOTE, f"the reply could not be sent:\n{traceback.format_exc()}"))
                except Exception:
                    return
            del reply
            if isinstance(request, (tuple, list)) and request and request[0] == "shutdown":
                # Only now that the reply is on its way: the process exits right after.
                self.stop_event.set()
                return

    def _handle(self, request: Any) -> tuple[str, Any]:
        try:
            op, args, decrefs = request
        except (TypeError, ValueError):
            return REMOTE, f"malformed request {request!r}"
        for ident in decrefs:
            self.decref(ident)
        handler = self._ops.get(op)
        if handler is None:
            return REMOTE, f"unknown request {op!r}"
        try:
            return handler(self, *args)
        except Exception:
            return REMOTE, traceback.format_exc()

    # -- requests ----------------------------------------------------------------------

    def _call(self, ident: str, method: str, args: Any, kwds: Any) -> tuple[str, Any]:
        with self._mutex:
            entry = self._objects.get(ident)
        if entry is None:
            return REMOTE, f"no object with id {ident!r} (it was freed, or the server restarted)"
        obj = entry.obj
        if method == "#GETVALUE":
            return RETURN, obj
        if method not in entry.allowed and method not in _ALWAYS:
            return REMOTE, (
                f"method {method!r} of {type(obj)} object is not in exposed={entry.exposed!r}"
            )
        try:
            result = getattr(obj, method)(*args, **kwds)
        except Exception as exc:
            return ERROR, exc
        typeid = entry.method_to_typeid.get(method) if entry.method_to_typeid else None
        if typeid:
            new_ident, exposed = self._add(typeid, result)
            return PROXY, (typeid, new_ident, exposed)
        return RETURN, result

    def _create(self, typeid: str, args: Any = (), kwds: Any = None) -> tuple[str, Any]:
        func = self.registry[typeid][0]
        if func is None:
            if kwds or len(args) != 1:
                raise ValueError(f"typeid {typeid!r} has no callable: pass exactly one object")
            obj = args[0]
        else:
            obj = func(*args, **(kwds or {}))
        return RETURN, self._add(typeid, obj)

    def _add(self, typeid: str, obj: Any) -> tuple[str, tuple[str, ...]]:
        _func, exposed, method_to_typeid = self.registry[typeid][:3]
        if exposed is None:
            exposed = public_methods(obj)
        ident = f"{id(obj):x}"
        with self._mutex:
            entry = self._objects.get(ident)
            if entry is not None and entry.obj is obj:
                entry.refs += 1
            else:
                self._objects[ident] = _Entry(obj, tuple(exposed), method_to_typeid)
        return ident, tuple(exposed)

    def _incref(self, ident: str) -> tuple[str, Any]:
        self.incref(ident)
        return RETURN, None

    def incref(self, ident: str) -> None:
        with self._mutex:
            entry = self._objects.get(ident)
            if entry is None:
                raise KeyError(f"no object with id {ident!r}: it was already freed")
            entry.refs += 1

    def decref(self, ident: str) -> None:
        with self._mutex:
            entry = self._objects.get(ident)
            if entry is None:
                return
            entry.refs -= 1
            if entry.refs > 0:
                return
            del self._objects[ident]
        del entry  # the referent dies here, outside the lock (it may hold proxies)

    def keep_local(self, ident: str) -> Callable[[], None]:
        """A proxy to ``ident`` now lives in this server (inside another referent)."""
        self.incref(ident)
        return lambda: self.decref(ident)

    def _methods(self, ident: str) -> tuple[str, Any]:
        with self._mutex:
            return RETURN, self._objects[ident].exposed

    def _count(self) -> tuple[str, Any]:
        with self._mutex:
            return RETURN, len(self._objects)

    def _info(self) -> tuple[str, Any]:
        with self._mutex:
            lines = [
                f"  {ident}:       refcount={entry.refs}\n    {str(entry.obj)[:75]}"
                for ident, entry in self._objects.items()
            ]
        return RETURN, "\n".join(lines)

    def _shutdown(self) -> tuple[str, Any]:
        _runtime.debug("manager received shutdown message")
        return RETURN, None  # the connection's thread stops the server once it replied

    def _dummy(self) -> tuple[str, Any]:
        return RETURN, None

    _ops: dict[str, Callable[..., tuple[str, Any]]] = {
        "call": _call,
        "create": _create,
        "incref": _incref,
        "methods": _methods,
        "count": _count,
        "info": _info,
        "shutdown": _shutdown,
        "dummy": _dummy,
    }


# Documented (and pickled by reference) under the public module that re-exports them.
for _public in (Server, all_methods, public_methods):
    _public.__module__ = "phalanx.managers"
