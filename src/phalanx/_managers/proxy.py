"""The client side of managers: tokens, the request protocol and proxies (layer 4).

A manager's server holds objects ("referents"); a proxy names one by a
``Token`` (typeid, server address, id) and calls its methods over a
connection to the server.  Each thread of each process keeps one connection
per server, opened on first use.

Requests and replies (tuples, so that the ``xmlrpclib`` serializer can carry
them too)::

    request  (op, args, decrefs)     decrefs: ids whose proxies died here since
                                     the last request (piggybacked; see below)
    reply    (status, value)

    op        args                          value on success
    create    (typeid, args, kwds)          (id, exposed)
    call      (id, method, args, kwds)      the result, or for a method that
                                            makes a new referent (method_to_typeid)
                                            status PROXY and (typeid, id, exposed)
    incref    (id,)                         None
    methods   (id,)                         exposed method names
    count     ()                            number of referents
    info      ()                            text describing the referents
    shutdown  ()                            None (the server then stops)

    status  RETURN  value is the result
            ERROR   value is an exception raised by the referent: re-raised as is
            REMOTE  value is text (a traceback, a refused method): RemoteError

A proxy that is garbage collected must tell the server (decref).  Doing it
from the collector, possibly in the middle of another request on the same
connection, could corrupt the conversation; so the id is queued and rides on
the next request to that server (and at exit, on a last request).
"""

from __future__ import annotations

import os
import sys
import threading
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .. import _runtime
from .._listener import Client as _SocketClient
from .._listener import Listener as _SocketListener
from .._wire.pickling import register
from ..errors import AuthenticationError, RemoteError, ServerGoneError
from ..process import current_process

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TypeAlias

    # A manager's server address: an AF_UNIX path (bytes: a Linux abstract name) or
    # (host, port), as ``multiprocessing.connection`` takes them.
    _Address: TypeAlias = str | bytes | tuple[str, int]

__all__ = (
    "AutoProxy",
    "BaseProxy",
    "MakeProxyType",
    "RebuildProxy",
    "RemoteError",
    "ServerGoneError",
    "Token",
    "dispatch",
    "listener_client",
)

RETURN, ERROR, REMOTE, PROXY = "#RETURN", "#ERROR", "#TRACEBACK", "#PROXY"

# At exit: proxies queue their decrefs, then one request per server sends
# them, then (priority 0) managers shut their servers down.
_PROXY_PRIORITY = 10
_FLUSH_PRIORITY = 5


class Token:
    """Names a referent: its type id, the server's address and its id there."""

    __slots__ = ("address", "id", "typeid")

    typeid: str
    address: _Address | None
    id: str

    def __init__(self, typeid: str, address: _Address | None, id: str) -> None:
        self.typeid, self.address, self.id = typeid, address, id

    def __getstate__(self) -> tuple[str, _Address | None, str]:
        return (self.typeid, self.address, self.id)

    def __setstate__(self, state: tuple[str, _Address | None, str]) -> None:
        self.typeid, self.address, self.id = state

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(typeid={self.typeid!r}, address={self.address!r}, id={self.id})"
        )


# -- serializers ------------------------------------------------------------------------


def _view_as_list(view: Any) -> tuple[Any, ...]:
    return list, (list(view),)


# dict views (d.keys() ...) travel as lists, as with the stdlib's managers.
_VIEW_TYPES: tuple[type, ...] = (type({}.keys()), type({}.values()), type({}.items()))
for _view_type in _VIEW_TYPES:
    register(_view_type, _view_as_list)


class _XmlConnection:
    """A connection that carries xmlrpc-marshalled values (the ``xmlrpclib`` serializer).

    ``xmlrpc.client`` (http.client, email, ssl: ~25 ms) is imported by the first
    such connection, not by every manager and manager server.
    """

    def __init__(self, conn: Any) -> None:
        import xmlrpc.client

        self._xmlrpc = xmlrpc.client
        self._conn = conn

    def send(self, obj: Any) -> None:
        self._conn.send_bytes(self._xmlrpc.dumps((obj,), None, None, None, True).encode())

    def recv(self) -> Any:
        data = self._conn.recv_bytes().decode()
        (obj,), _method = self._xmlrpc.loads(data, use_builtin_types=True)
        return obj

    def poll(self, timeout: float | None = 0.0) -> bool:
        return bool(self._conn.poll(timeout))

    def fileno(self) -> int:
        return int(self._conn.fileno())

    def close(self) -> None:
        self._conn.close()


class _XmlListener(_SocketListener):
    def _wrap(self, conn: Any) -> Any:
        return _XmlConnection(conn)


def _xml_client(*args: Any, **kwds: Any) -> _XmlConnection:
    return _XmlConnection(_SocketClient(*args, **kwds))


listener_client: dict[str, tuple[type[_SocketListener], Callable[..., Any]]] = {
    "pickle": (_SocketListener, _SocketClient),
    "xmlrpclib": (_XmlListener, _xml_client),
}


def _client_type(serializer: str) -> Callable[..., Any]:
    try:
        return listener_client[serializer][1]
    except KeyError:
        raise ValueError(
            f"unknown serializer {serializer!r}: use one of {sorted(listener_client)}"
        ) from None


# -- connections and requests -----------------------------------------------------------


def _freeze(address: Any) -> Any:
    return tuple(address) if isinstance(address, list) else address


class _Channels:
    """This process's connections to servers (one per thread and server) and pending decrefs."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.lock = threading.Lock()
        self.decrefs: dict[Any, list[str]] = {}
        self._flusher_pid = 0
        _runtime.register_after_fork(self, _Channels._reset)

    def _reset(self) -> None:
        # A forked child must not use (or close) its parent's connections.
        self.local = threading.local()
        self.lock = threading.Lock()
        self.decrefs = {}
        self._flusher_pid = 0

    def get(self, address: Any, serializer: str, authkey: bytes | None) -> Any:
        conns = self.local.__dict__.setdefault("conns", {})
        # The key is part of the identity: a manager with another key must not
        # ride on a connection authenticated with ours.
        key = (_freeze(address), authkey, serializer)
        conn = conns.get(key)
        if conn is None:
            try:
                conn = _client_type(serializer)(address, authkey=authkey)
            except AuthenticationError:
                raise
            except (OSError, EOFError) as exc:
                raise ServerGoneError(
                    f"cannot reach the manager server at {address!r}: {exc} "
                    "(was it shut down, or did its process die?)"
                ) from exc
            conns[key] = conn
        return conn

    def drop(self, address: Any) -> None:
        conns = self.local.__dict__.get("conns", {})
        for key in [k for k in conns if k[0] == _freeze(address)]:
            try:
                conns.pop(key).close()
            except OSError:
                pass

    def queue_decref(self, address: Any, ident: str) -> None:
        with self.lock:
            self.decrefs.setdefault(_freeze(address), []).append(ident)
        self.ensure_flush_at_exit()

    def ensure_flush_at_exit(self) -> None:
        """Deliver pending decrefs at this process's exit.

        Registered in the process that holds proxies (a child clears the
        finalizers it inherits), and below the proxies' own priority, so that
        the decrefs they queue at exit go out too.
        """
        if self._flusher_pid != os.getpid():
            self._flusher_pid = os.getpid()
            _runtime.Finalize(None, self.flush_all, exitpriority=_FLUSH_PRIORITY)

    def pop_decrefs(self, address: Any) -> list[str]:
        key = _freeze(address)
        if key not in self.decrefs:  # unlocked peek: the common case
            return []
        with self.lock:
            return self.decrefs.pop(key, [])

    def flush_all(self) -> None:
        """At exit: deliver the pending decrefs (servers free what only we held)."""
        with self.lock:
            pending, self.decrefs = self.decrefs, {}
        for address, idents in pending.items():
            serializer, authkey = _known_servers.get(address, ("pickle", None))
            try:
                request(address, serializer, authkey, "count", (), idents)
            except Exception:
                pass  # the server is gone: nothing left to free


_channels = _Channels()
_known_servers: dict[Any, tuple[str, bytes | None]] = {}


def request(
    address: Any,
    serializer: str,
    authkey: bytes | None,
    op: str,
    args: tuple[Any, ...] | list[Any],
    decrefs: list[str] | None = None,
) -> tuple[str, Any]:
    """Send one request to the server at ``address``; its ``(status, value)`` reply."""
    conn = _channels.get(address, serializer, authkey)
    pending = _channels.pop_decrefs(address)
    if decrefs:
        pending.extend(decrefs)
    try:
        conn.send((op, tuple(args), pending))
    except (OSError, EOFError) as exc:
        _channels.drop(address)
        raise ServerGoneError(
            f"the manager server at {address!r} is gone ({exc}); request {op!r} not sent"
        ) from exc
    except Exception:
        if pending:  # unsendable arguments: the decrefs must still reach the server
            for ident in pending:
                _channels.queue_decref(address, ident)
        raise
    try:
        reply = conn.recv()
    except (OSError, EOFError) as exc:
        _channels.drop(address)
        raise ServerGoneError(
            f"the manager server at {address!r} went away during request {op!r} ({exc})"
        ) from exc
    if op == "shutdown":
        # The server is gone: a later server at the same address (a port the OS
        # hands out again) must get a connection of its own, not this dead one.
        _channels.drop(address)
    status, value = reply
    return str(status), value


def dispatch(
    address: Any,
    serializer: str,
    authkey: bytes | None,
    op: str,
    args: tuple[Any, ...] | list[Any] = (),
) -> Any:
    """A request whose failure is an exception here."""
    status, value = request(address, serializer, authkey, op, args)
    if status == RETURN:
        return value
    error = _error(status, value)
    del value  # no cycle through this frame: the error dies with its handler
    try:
        raise error
    finally:
        del error


def _error(status: str, value: Any) -> BaseException:
    if status == ERROR:
        return value if isinstance(value, BaseException) else RemoteError(value)
    return RemoteError(value)


# -- proxies ----------------------------------------------------------------------------


class BaseProxy:
    """Stands for a referent held by a manager's server; calls go over a connection."""

    _exposed_: tuple[str, ...] | None = None
    _method_to_typeid_: Mapping[str, str] | None = None
    _isauto: bool  # set (True) on the proxies AutoProxy makes

    def __init__(
        self,
        token: Token,
        serializer: str,
        manager: Any = None,
        authkey: bytes | None = None,
        exposed: Iterable[str] | None = None,
        incref: bool = True,
        manager_owned: bool = False,
    ) -> None:
        self._token = token
        self._id = token.id
        self._serializer = serializer
        self._manager = manager
        # Where to find the proxy types of method_to_typeid results once this
        # proxy travels to a process that has no manager object.
        self._manager_class: type | None = type(manager) if manager is not None else None
        self._owned_by_manager = manager_owned
        if authkey is not None:
            self._authkey: bytes | None = bytes(authkey)
        elif manager is not None:
            self._authkey = manager._authkey
        else:
            self._authkey = bytes(current_process().authkey)
        _known_servers.setdefault(_freeze(token.address), (serializer, self._authkey))
        if exposed is not None:
            self._exposed_ = tuple(exposed)
        self._close: _runtime.Finalize | None = None
        if manager_owned:
            release = _server_keepalive(token)
            if release is not None:
                self._close = _runtime.Finalize(self, release)
        elif incref:
            self._incref()
        # else: this proxy holds no reference of its own (a spawned child's
        # copy, covered by its parent's), or the caller hands it one (_adopt).
        _runtime.register_after_fork(self, BaseProxy._after_fork)

    def _adopt(self) -> None:
        """Take over the reference the server counted when it made the referent for us."""
        if self._close is None and not self._owned_by_manager:
            self._watch()

    def _watch(self) -> None:
        """Queue a decref for when this proxy dies (it holds one reference on the server)."""
        self._close = _runtime.Finalize(
            self,
            _channels.queue_decref,
            (self._token.address, self._id),
            exitpriority=_PROXY_PRIORITY,
        )
        _channels.ensure_flush_at_exit()

    def _incref(self) -> None:
        dispatch(self._token.address, self._serializer, self._authkey, "incref", (self._id,))
        self._watch()

    def _after_fork(self) -> None:
        # The child holds a copy of this proxy: it needs its own reference.
        if self._owned_by_manager:
            return
        try:
            self._incref()
        except Exception as exc:
            _runtime.info("could not incref a proxy after fork: %r", exc)

    def _callmethod(
        self, methodname: str, args: tuple[Any, ...] = (), kwds: Mapping[str, Any] = {}
    ) -> Any:
        """Call ``methodname`` on the referent; its result (or a proxy), or its exception."""
        address = self._token.address
        status, value = request(
            address,
            self._serializer,
            self._authkey,
            "call",
            (self._id, methodname, tuple(args), dict(kwds)),
        )
        if status == RETURN:
            return value
        if status == PROXY:
            typeid, ident, exposed = value
            proxytype = self._proxytype_for(typeid)
            token = Token(typeid, address, ident)
            proxy = proxytype(
                token,
                self._serializer,
                manager=self._manager,
                authkey=self._authkey,
                exposed=exposed,
                incref=False,
            )
            if getattr(proxy, "_manager_class", None) is None:
                proxy._manager_class = self._manager_class
            _adopt(proxy, address, ident)
            return proxy
        error = _error(status, value)
        del value  # no cycle through this frame: the error dies with its handler
        try:
            raise error
        finally:
            del error

    def _proxytype_for(self, typeid: str) -> Callable[..., Any]:
        registry = getattr(self._manager or self._manager_class, "_registry", None)
        if registry is not None and typeid in registry:
            proxytype = registry[typeid][-1]
            if proxytype is not None:
                return proxytype  # type: ignore[no-any-return]
        return AutoProxy

    def _getvalue(self) -> Any:
        """A copy of the referent."""
        return self._callmethod("#GETVALUE")

    def __reduce__(self) -> tuple[Any, ...]:
        kwds: dict[str, Any] = {}
        from .._wire import pickling

        cluster = pickling.cluster_destination()
        if cluster == pickling.REMOTE_CLUSTER and _machine_local(self._token.address):
            raise ValueError(
                f"a proxy of the manager at {self._token.address!r} cannot be sent to a task "
                "of a cluster on other machines: that address is reachable only from this "
                "one.  Serve the manager on an address the workers can reach (phalanx manager "
                "serve --address 0.0.0.0:PORT, with $PHALANX_AUTHKEY set on the workers) and "
                "use phalanx.managers.RemoteManager"
            )
        if pickling.get_spawning_popen() is not None or cluster == pickling.LOCAL_CLUSTER:
            kwds["authkey"] = self._authkey
        func: Any = type(self)
        if getattr(self, "_isauto", False):
            kwds["exposed"] = self._exposed_
            func = AutoProxy
        return (RebuildProxy, (func, self._token, self._serializer, kwds, self._manager_class))

    def __deepcopy__(self, memo: Any) -> Any:
        return self._getvalue()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} object, typeid {self._token.typeid!r} at {id(self):#x}>"

    def __str__(self) -> str:
        try:
            return str(self._callmethod("__repr__"))
        except Exception:
            return repr(self)[:-1] + "; '__str__()' failed>"


def _machine_local(address: Any) -> bool:
    """Whether a server at ``address`` is reachable from this machine only."""
    if not isinstance(address, tuple):
        return True  # an AF_UNIX path or abstract name
    import ipaddress

    host = str(address[0])
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _adopt(proxy: Any, address: Any, ident: str) -> None:
    """Give ``proxy`` the reference the server counted for it (or give it back)."""
    adopt = getattr(proxy, "_adopt", None)
    if adopt is not None:
        adopt()
    else:  # not a BaseProxy: nobody will release it, so release it now
        _channels.queue_decref(address, ident)


def _server_keepalive(token: Token) -> Callable[[], None] | None:
    """In the server itself, a proxy to one of its referents keeps that referent alive."""
    server = getattr(current_process(), "_manager_server", None)
    if server is None:
        return None
    release: Callable[[], None] = server.keep_local(token.id)
    return release


def RebuildProxy(
    func: Callable[..., Any],
    token: Token,
    serializer: str,
    kwds: dict[str, Any],
    manager_class: type | None = None,
) -> Any:
    """Unpickle a proxy: in its own server, a server-owned proxy; elsewhere, a new reference."""
    server = getattr(current_process(), "_manager_server", None)
    if server is not None and _freeze(server.address) == _freeze(token.address):
        kwds["manager_owned"] = True
    incref = kwds.pop("incref", True) and not getattr(current_process(), "_inheriting", False)
    proxy = func(token, serializer, incref=incref, **kwds)
    if manager_class is not None and getattr(proxy, "_manager_class", None) is None:
        proxy._manager_class = manager_class
    return proxy


def _make_method(name: str) -> Callable[..., Any]:
    def method(self: BaseProxy, /, *args: Any, **kwds: Any) -> Any:
        return self._callmethod(name, args, kwds)

    method.__name__ = name
    method.__qualname__ = name
    return method


def MakeProxyType(
    name: str,
    exposed: Iterable[str],
    _cache: dict[tuple[str, tuple[str, ...]], type[BaseProxy]] = {},  # noqa: B006 (a deliberate memo)
) -> type[BaseProxy]:
    """A ``BaseProxy`` subclass with one method per exposed name (built without ``exec``)."""
    exposed = tuple(exposed)
    try:
        return _cache[(name, exposed)]
    except KeyError:
        pass
    namespace: dict[str, Any] = {name_: _make_method(name_) for name_ in exposed}
    namespace["_exposed_"] = exposed
    # Importable by reference from the module that made it (for pickling).
    namespace["__module__"] = sys._getframe(1).f_globals.get("__name__", __name__)
    proxytype = type(name, (BaseProxy,), namespace)
    _cache[(name, exposed)] = proxytype
    return proxytype


def AutoProxy(
    token: Token,
    serializer: str,
    manager: Any = None,
    authkey: bytes | None = None,
    exposed: Iterable[str] | None = None,
    incref: bool = True,
    manager_owned: bool = False,
) -> BaseProxy:
    """A proxy whose methods are the referent's exposed ones (asked of the server if unknown)."""
    if authkey is None and manager is not None:
        authkey = manager._authkey
    if authkey is None:
        authkey = bytes(current_process().authkey)
    if exposed is None:
        exposed = dispatch(token.address, serializer, authkey, "methods", (token.id,))
    proxytype = MakeProxyType(f"AutoProxy[{token.typeid}]", exposed)
    proxy = proxytype(
        token,
        serializer,
        manager=manager,
        authkey=authkey,
        incref=incref,
        manager_owned=manager_owned,
    )
    proxy._isauto = True
    return proxy


def class_getitem(cls: type, item: Any) -> types.GenericAlias:
    return types.GenericAlias(cls, item)


# Documented (and pickled by reference) under the public module that re-exports them.
for _public in (Token, BaseProxy, RebuildProxy, MakeProxyType, AutoProxy, dispatch):
    _public.__module__ = "phalanx.managers"
