"""Serialization for everything that crosses a process boundary.

* Pickle protocol 5 everywhere, with out-of-band buffers on request
  (``dumps(obj, buffers=[...])``) so large binary payloads are not copied into
  the pickle stream.
* A reducer registry (:func:`register`) for phalanx's own objects
  (connections, locks, shared memory ...), consulted before ``copyreg``.
* A cloudpickle fallback for callables and classes that plain pickle cannot
  rebuild in another interpreter: lambdas, closures, local classes, and
  anything defined in an interactive ``__main__`` (REPL, notebook, ``-c``).
  Module-level functions of an importable module still travel by reference,
  so the fast path and identity semantics are unchanged.
"""

from __future__ import annotations

import collections
import copyreg
import io
import pickle
import sys
import threading
import types
from collections.abc import Callable, Iterable

from .. import _stdlib

TYPE_CHECKING = False  # typing is not imported at run time: see phalanx/context.py
if TYPE_CHECKING:
    import mmap
    from typing import Any, TypeAlias

    Reducer: TypeAlias = Callable[[Any], str | tuple[Any, ...]]


PROTOCOL = 5
_registry: dict[type, Reducer] = {}


def register(type_: type, reducer: Reducer) -> None:
    """Use ``reducer(obj)`` (a ``__reduce__``-style tuple) to pickle instances of ``type_``."""
    _registry[type_] = reducer


def is_package_main(spec_name: str) -> bool:
    """``python -m pkg`` runs ``pkg.__main__``: a child must not run it again."""
    return spec_name == "__main__" or spec_name.endswith(".__main__")


def main_is_reimported() -> bool:
    """Whether a spawned child re-imports ``__main__`` (so its names resolve there).

    True for a script (``python file.py``) and ``python -m module``; false for a
    REPL, a notebook, ``python -c`` and ``python -m pkg`` (whose ``__main__``
    the child deliberately does not rerun).
    """
    main = sys.modules.get("__main__")
    spec_name = getattr(getattr(main, "__spec__", None), "name", None)
    if spec_name is not None:
        return not is_package_main(spec_name)
    path = getattr(main, "__file__", None)
    return isinstance(path, str) and not path.startswith("<")


def _lookup(module_name: str, qualname: str) -> Any:
    obj: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj


_thread_options = threading.local()
LOCAL_CLUSTER = "local cluster"  # engine workers on this machine
REMOTE_CLUSTER = "remote cluster"  # engine workers that may be on other machines


def pickle_for_cluster_in_this_thread(where: str) -> None:
    """This thread pickles for a cluster engine's workers (``LOCAL_CLUSTER``/``REMOTE_CLUSTER``).

    They never ran our ``__main__``: its functions and classes travel by value.
    Manager proxies check where they go (see ``BaseProxy.__reduce__``).
    """
    _thread_options.cluster = where


def cluster_destination() -> str | None:
    """Where this thread pickles for, if for a cluster's workers."""
    return getattr(_thread_options, "cluster", None)


def by_value_in_this_thread(module_name: str) -> None:
    """What this thread pickles from ``module_name`` travels by value (its destination
    cannot import that module: a cluster worker without the user's local modules)."""
    modules = getattr(_thread_options, "modules_by_value", None)
    if modules is None:
        modules = _thread_options.modules_by_value = set()
    modules.add(module_name)


def dumps_by_value(obj: Any) -> bytes:
    """``obj`` pickled by value, with whatever of modules marked so (see above)."""
    return _dumps_by_value(obj)


def needs_by_value(obj: types.FunctionType | type) -> bool:
    """Whether ``obj`` must be pickled by value because a reference would not resolve."""
    qualname = getattr(obj, "__qualname__", "")
    if "<lambda>" in qualname or "<locals>" in qualname:
        return True
    module = getattr(obj, "__module__", None)
    if module is None:
        return False
    if module in getattr(_thread_options, "modules_by_value", ()):
        return True
    if module == "__main__":
        return cluster_destination() is not None or not main_is_reimported()
    if module not in sys.modules:
        return False  # plain pickle will import it by name
    return _lookup(module, qualname) is not obj


def _load_by_value(data: bytes) -> Any:
    return pickle.loads(data)


_cloud_pickler: Any = None


def _dumps_by_value(obj: Any) -> bytes:
    global _cloud_pickler
    if _cloud_pickler is None:
        import cloudpickle  # deferred: only paid for when a by-value object is met

        # The C pickler reads dispatch_table once, in __init__, so our reducers
        # must be in the class attribute (an instance attribute set after
        # __init__ would be ignored).
        _cloud_pickler = type(
            "CloudPickler",
            (cloudpickle.Pickler,),
            {"dispatch_table": collections.ChainMap(_registry, cloudpickle.Pickler.dispatch_table)},
        )
    import cloudpickle

    for name in getattr(_thread_options, "modules_by_value", ()):
        module = sys.modules.get(name)
        if module is not None and name not in cloudpickle.list_registry_pickle_by_value():
            cloudpickle.register_pickle_by_value(module)
    buf = io.BytesIO()
    _cloud_pickler(buf, protocol=PROTOCOL).dump(obj)
    return buf.getvalue()


class Pickler(pickle.Pickler):
    """``pickle.Pickler`` with phalanx's reducers and the cloudpickle fallback."""

    # Read by the C pickler at init; a ChainMap sees later copyreg and
    # register() changes without any per-message copying, and is consulted
    # only for objects that are not of a built-in type.
    dispatch_table: Any = collections.ChainMap(_registry, copyreg.dispatch_table)

    def __init__(
        self,
        file: Any,
        protocol: int = PROTOCOL,
        *,
        buffer_callback: Callable[[pickle.PickleBuffer], Any] | None = None,
    ) -> None:
        super().__init__(file, protocol, buffer_callback=buffer_callback)

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (types.FunctionType, type)) and needs_by_value(obj):
            return _load_by_value, (_dumps_by_value(obj),)
        return NotImplemented


# Objects that pickle the same with or without our reducers: the C pickler's
# module function is several times cheaper than a Pickler instance.
ATOMS = frozenset({int, float, complex, str, bytes, bool, type(None)})


def dumps(obj: Any, buffers: list[pickle.PickleBuffer] | None = None) -> bytes:
    """Pickle ``obj``; with ``buffers`` given, large buffers are appended to it out of band."""
    if type(obj) in ATOMS:
        return pickle.dumps(obj, PROTOCOL)
    try:
        kept: _KeptPickler = _kept.pickler
    except AttributeError:
        kept = _kept.pickler = _KeptPickler()
    if kept.busy:  # a dumps() inside a dumps() (a __reduce__ that pickles): a new one
        buf = io.BytesIO()
        Pickler(buf, buffer_callback=None if buffers is None else buffers.append).dump(obj)
        return buf.getvalue()
    return kept.dumps(obj, buffers)


class _KeptPickler:
    """A thread's Pickler, kept from one ``dumps()`` to the next.

    Making a Pickler and its file costs more than pickling a small message
    (~0.7 of 1.2 us for a manager request), and every message of a round trip
    pays it.  Its "file" keeps what the pickler writes, as the pickler made it:
    a message written in one piece is returned without a copy (a BytesIO
    copied large ones once more).  The memo is cleared after each message
    (it would keep the objects alive).
    """

    __slots__ = ("buffers", "busy", "parts", "pickler")

    def __init__(self) -> None:
        self.parts: list[Any] = []
        self.buffers: list[pickle.PickleBuffer] | None = None
        self.busy = False
        sink = types.SimpleNamespace(write=self.parts.append)
        self.pickler = Pickler(sink, buffer_callback=self._buffer)

    def _buffer(self, buf: pickle.PickleBuffer) -> bool:
        # (A true return keeps the buffer in band, as buffer_callback=None would.)
        buffers = self.buffers
        if buffers is None:
            return True
        buffers.append(buf)
        return False

    def dumps(self, obj: Any, buffers: list[pickle.PickleBuffer] | None) -> bytes:
        self.busy = True
        self.buffers = buffers
        parts = self.parts
        try:
            self.pickler.dump(obj)
            if len(parts) == 1 and type(parts[0]) is bytes:
                return parts[0]
            return b"".join(parts)
        finally:
            parts.clear()  # (a large buffer may be written as a view of the caller's)
            self.pickler.clear_memo()
            self.buffers = None
            self.busy = False


_kept = threading.local()


def dump(obj: Any, file: Any) -> None:
    Pickler(file).dump(obj)


def loads(data: bytes | bytearray | memoryview | mmap.mmap, buffers: Iterable[Any] = ()) -> Any:
    """Unpickle data produced by :func:`dumps` (buffers in the same order)."""
    return pickle.loads(data, buffers=buffers)


# --- what a pickling pass is for -------------------------------------------------
# Some objects (an AuthenticationString, an fd) may only be pickled to hand them to
# a child being started; the Popen object in charge is recorded here meanwhile.

_spawning = threading.local()


def get_spawning_popen() -> Any:
    return getattr(_spawning, "popen", None)


def set_spawning_popen(popen: Any) -> None:
    _spawning.popen = popen


class spawning:
    """``with spawning(popen):`` marks the current thread as pickling on behalf of
    ``popen`` (for the stdlib too).  A class, not a ``contextlib`` generator:
    this module is imported by every phalanx program, contextlib is not."""

    def __init__(self, popen: Any) -> None:
        self._popen = popen

    def __enter__(self) -> None:
        stdlib = _stdlib.reducers()
        maps = Pickler.dispatch_table.maps
        if stdlib is not None and not any(m is stdlib for m in maps):
            maps.insert(1, stdlib)  # after ours, before copyreg's
        set_spawning_popen(self._popen)
        _stdlib.set_spawning_popen(self._popen)

    def __exit__(self, *exc_info: object) -> None:
        set_spawning_popen(None)
        _stdlib.set_spawning_popen(None)
