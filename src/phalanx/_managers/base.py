"""``BaseManager``: starts (or connects to) a manager's server and makes proxies to its objects.

Documented, and pickled by reference, as ``phalanx.managers.BaseManager``
(and ``State``): ``phalanx.managers`` re-exports both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .. import _listener, _platform, _runtime, _start
from ..errors import ProcessError
from ..process import AuthenticationString, current_process
from ..util import get_temp_dir
from .proxy import AutoProxy, Token, _adopt, _channels, dispatch, listener_client
from .server import Server

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Self

    from .._start import Starter
    from ..context import BaseContext
    from .proxy import _Address

__all__ = ("BaseManager", "State")


class State:
    __slots__ = ("value",)
    INITIAL = 0
    STARTED = 1
    SHUTDOWN = 2

    value: int

    def __init__(self) -> None:
        self.value = State.INITIAL


class BaseManager:
    """Starts (or connects to) a server process and makes proxies to objects it holds."""

    _registry: dict[str, tuple[Any, Any, Any, Any]] = {}
    _Server: type[Server] = Server
    shutdown: _runtime.Finalize  # set by start(): stops the server process

    def __init__(
        self,
        address: _Address | None = None,
        authkey: bytes | None = None,
        serializer: str = "pickle",
        ctx: BaseContext | None = None,
        *,
        shutdown_timeout: float = 1.0,
    ) -> None:
        if serializer not in listener_client:
            raise ValueError(
                f"unknown serializer {serializer!r}: use one of {sorted(listener_client)}"
            )
        if authkey is None:
            authkey = current_process().authkey
        self._address = address
        self._authkey = AuthenticationString(authkey)
        self._state = State()
        self._serializer = serializer
        self._Listener, self._Client = listener_client[serializer]
        self._ctx: Starter = _start.default.concrete() if ctx is None else ctx
        self._shutdown_timeout = shutdown_timeout
        self._process: Any = None

    def _server_registry(self) -> dict[str, tuple[Any, Any, Any]]:
        # What the server needs: no proxy types (they live on the client side).
        return {typeid: entry[:3] for typeid, entry in self._registry.items()}

    def get_server(self) -> Server:
        """A server object for this manager, to run in this process (``serve_forever``)."""
        self._check_initial()
        return self._Server(
            self._server_registry(), self._address, bytes(self._authkey), self._serializer
        )

    def connect(self) -> None:
        """Use a server that is already running at ``address`` (another process or machine)."""
        dispatch(self._address, self._serializer, bytes(self._authkey), "dummy")
        self._state.value = State.STARTED

    def _check_initial(self) -> None:
        if self._state.value == State.STARTED:
            raise ProcessError(f"Already started server (manager at {self._address!r})")
        if self._state.value == State.SHUTDOWN:
            raise ProcessError("Manager has shut down")
        if self._state.value != State.INITIAL:
            raise ProcessError(f"Unknown state {self._state.value!r}")

    def start(
        self, initializer: Callable[..., object] | None = None, initargs: Iterable[Any] = ()
    ) -> None:
        """Start the server process; returns once it listens."""
        self._check_initial()
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        from .._connection import Pipe

        if self._address is None and _listener.default_family == "AF_UNIX":
            # The server's socket goes in this process tree's private directory:
            # made here, before the fork, once per process (a fresh fork pays
            # ~0.25 ms to make one, on the way to Manager() returning).
            get_temp_dir()
        reader, writer = Pipe(duplex=False)
        self._process = self._ctx.Process(
            target=type(self)._run_server,
            args=(
                self._server_registry(),
                self._address,
                bytes(self._authkey),
                self._serializer,
                writer,
                initializer,
                tuple(initargs),
            ),
        )
        ident = ":".join(str(i) for i in self._process._identity)
        self._process.name = f"{type(self).__name__}-{ident}"
        self._process._ends_with_parent = True  # a server nobody can shut down is an orphan
        self._process.start()
        writer.close()
        try:
            if not reader.poll(60):
                raise ProcessError("the manager's server did not start within 60 s")
            self._address = reader.recv()
        except EOFError:
            self._process.join(5)
            raise ProcessError(
                f"the manager's server process exited during start-up "
                f"(exit code {self._process.exitcode}); see its traceback above"
            ) from None
        finally:
            reader.close()
        self._state.value = State.STARTED
        self.shutdown = _runtime.Finalize(
            self,
            type(self)._finalize_manager,
            args=(
                self._process,
                self._address,
                bytes(self._authkey),
                self._state,
                self._serializer,
                self._shutdown_timeout,
            ),
            exitpriority=0,
        )

    @classmethod
    def _run_server(
        cls,
        registry: Mapping[str, Any],
        address: _Address | None,
        authkey: bytes,
        serializer: str,
        writer: Any,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        # The manager's owner decides when its server stops (shutdown at exit).
        _platform.ignore_sigint()
        current_process().authkey = authkey  # its own proxies connect back with it
        if initializer is not None:
            initializer(*initargs)
        server = cls._Server(registry, address, authkey, serializer)
        writer.send(server.address)
        writer.close()
        _runtime.info("manager serving at %r", server.address)
        server.serve_forever()

    def _create(self, typeid: str, /, *args: Any, **kwds: Any) -> tuple[Token, tuple[str, ...]]:
        if self._state.value != State.STARTED:
            raise ProcessError(
                f"server not yet started: call start() or connect() before {typeid}()"
            )
        ident, exposed = dispatch(
            self._address, self._serializer, bytes(self._authkey), "create", (typeid, args, kwds)
        )
        return Token(typeid, self._address, ident), tuple(exposed)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the server process to exit."""
        if self._process is not None:
            self._process.join(timeout)
            if not self._process.is_alive():
                self._process = self._process if self._process.exitcode is not None else None

    def _debug_info(self) -> str:
        return str(dispatch(self._address, self._serializer, bytes(self._authkey), "info"))

    def _number_of_objects(self) -> int:
        return int(dispatch(self._address, self._serializer, bytes(self._authkey), "count"))

    def __enter__(self) -> Self:
        if self._state.value == State.INITIAL:
            self.start()
        if self._state.value != State.STARTED:
            raise ProcessError(f"Unable to start server (state {self._state.value})")
        return self

    def __exit__(self, *exc: object) -> None:
        shutdown = getattr(self, "shutdown", None)
        if shutdown is not None:
            shutdown()

    @staticmethod
    def _finalize_manager(
        process: Any,
        address: Any,
        authkey: bytes,
        state: State,
        serializer: str,
        shutdown_timeout: float,
    ) -> None:
        if process.is_alive():
            _runtime.info("sending shutdown message to manager")
            try:
                dispatch(address, serializer, authkey, "shutdown")
            except Exception:
                pass
            process.join(timeout=shutdown_timeout)
            if process.is_alive():
                _runtime.info("manager still alive: terminating it")
                process.terminate()
                process.join(timeout=shutdown_timeout)
                if process.is_alive():
                    process.kill()
                    process.join()
        _channels.drop(address)
        state.value = State.SHUTDOWN

    @property
    def address(self) -> _Address | None:
        """Where the server listens (None before ``start()`` when none was given)."""
        return self._address

    @classmethod
    def register(
        cls,
        typeid: str,
        callable: Callable[..., object] | None = None,
        proxytype: Any = None,
        exposed: Sequence[str] | None = None,
        method_to_typeid: Mapping[str, str] | None = None,
        create_method: bool = True,
    ) -> None:
        """Make ``typeid`` a type this manager can create (``manager.<typeid>(...)``)."""
        if "_registry" not in cls.__dict__:
            cls._registry = cls._registry.copy()
        if proxytype is None:
            proxytype = AutoProxy
        exposed = exposed or getattr(proxytype, "_exposed_", None)
        method_to_typeid = method_to_typeid or getattr(proxytype, "_method_to_typeid_", None)
        if method_to_typeid:
            for key, value in method_to_typeid.items():
                if not isinstance(key, str) or not isinstance(value, str):
                    raise TypeError(
                        f"method_to_typeid must map str to str (got {key!r}: {value!r})"
                    )
        cls._registry[typeid] = (callable, exposed, method_to_typeid, proxytype)
        if create_method:
            setattr(cls, typeid, _creator(typeid, proxytype))


def _creator(typeid: str, proxytype: Any) -> Callable[..., Any]:
    def create(self: BaseManager, /, *args: Any, **kwds: Any) -> Any:
        token, exposed = self._create(typeid, *args, **kwds)
        # The server counted one reference for us at creation: the proxy
        # takes it over instead of adding one.
        proxy = proxytype(
            token,
            self._serializer,
            manager=self,
            authkey=self._authkey,
            exposed=exposed,
            incref=False,
        )
        _adopt(proxy, token.address, token.id)
        return proxy

    create.__name__ = typeid
    create.__qualname__ = f"BaseManager.{typeid}"
    create.__doc__ = (
        f"Create a ``{typeid}`` in the manager's server, called with these arguments there; "
        f"return a proxy to it (``{getattr(proxytype, '__name__', 'AutoProxy')}``).\n\n"
        "Raises ``ProcessError`` if the manager is not started (``start()`` or "
        "``connect()``), ``ServerGoneError`` if its server is gone."
    )
    return create


for _public in (State, BaseManager):
    _public.__module__ = "phalanx.managers"
