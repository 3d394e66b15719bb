"""Large arguments go to the engine's own store once, however many tasks use them.

A chunk's items are pickled (protocol 5) as the chunk is dispatched.  Every
buffer of at least ``BIG`` bytes (a numpy array's data, a ``bytes`` or
``bytearray``) leaves the pickle out of band and is put in the engine's store
(Dask ``scatter``, Ray ``ray.put``) once per object: the 64 tasks of a map
over one 64 MiB array store it once and pass the engine a reference.  The
runner unpickles with the buffers the engine hands it; numpy arrays rebuilt
on them are read-only, as Ray's are (copy one to write to it).

Objects are recognized by identity while they live, for the last ``KEEP`` of
them; the store keeps them alive meanwhile (so an id is never reused).
"""

from __future__ import annotations

import collections
import io
import pickle
from typing import Any

from .._wire import pickling

__all__ = ("BIG", "Store", "encode")

BIG = 1 << 20
KEEP = 32


class _BigBytes:
    """A large ``bytes`` object, marked to go out of band (pickle never asks about bytes)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> Any:
        return bytes, (pickle.PickleBuffer(self.data),)


def _mark(obj: Any, depth: int = 3) -> Any:
    """``obj`` with its large ``bytes`` (in containers up to ``depth`` deep) marked."""
    kind = type(obj)
    if kind is bytes:
        return _BigBytes(obj) if len(obj) >= BIG else obj
    if depth == 0:
        return obj
    if kind is tuple or kind is list:
        marked = [_mark(item, depth - 1) for item in obj]
        if all(a is b for a, b in zip(marked, obj, strict=True)):
            return obj
        return kind(marked)
    if kind is dict:
        values = {key: _mark(value, depth - 1) for key, value in obj.items()}
        if all(values[key] is obj[key] for key in obj):
            return obj
        return values
    return obj


def encode(payload: Any) -> tuple[bytes, list[memoryview]]:
    """``payload`` pickled, and its large buffers (out of band, in order)."""
    payload = _mark(payload)
    big: list[memoryview] = []

    def callback(buffer: pickle.PickleBuffer) -> bool:
        raw = buffer.raw()
        if raw.nbytes < BIG:
            return True  # small: in the pickle itself
        big.append(raw)
        return False

    out = io.BytesIO()
    pickling.Pickler(out, buffer_callback=callback).dump(payload)
    return out.getvalue(), big


class Store:
    """What this pool has put in ``engine``'s store, by the identity of the object."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._refs: collections.OrderedDict[int, tuple[Any, Any]] = collections.OrderedDict()
        self.puts = 0

    def ref(self, raw: memoryview) -> Any:
        owner = raw.obj
        key = id(owner)
        known = self._refs.get(key)
        if known is not None and known[0] is owner:
            self._refs.move_to_end(key)
            return known[1]
        ref = self._engine.put(raw)
        self.puts += 1
        self._refs[key] = (owner, ref)
        while len(self._refs) > KEEP:
            self._refs.popitem(last=False)
        return ref

    def drop(self, lost: list[Any]) -> None:
        """Forget the references in ``lost`` (their data left the store): the next chunk
        that needs that data puts it again."""
        for key, (_owner, ref) in list(self._refs.items()):
            if any(ref is gone for gone in lost):
                del self._refs[key]

    def clear(self) -> None:
        self._refs.clear()
