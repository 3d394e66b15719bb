"""Named shared memory, under the stdlib's ``multiprocessing.shared_memory`` names.

``SharedMemory`` is a POSIX shared-memory object (``/dev/shm`` on Linux) that
any process can attach to by name.  The creator's process tree tracks it: if
nobody unlinks it, the resource tracker removes it once every process of the
tree has exited, even after SIGKILL.  Attaching by name never registers the
segment for removal, so a process that merely uses somebody else's segment
cannot make it disappear (gh-82300); ``track=False`` opts a creator out too.

``ShareableList`` stores a fixed-length list of int, float, bool, str, bytes
and None in one segment, in the stdlib's byte layout.
"""

from __future__ import annotations

import mmap
import os
import secrets
import struct
import types
from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any, Generic, TypeVar, overload

from . import _platform, _tracker

__all__ = ("ShareableList", "SharedMemory")

# The item types a ShareableList holds (as typeshed's ``_SLT``).
_SLT = TypeVar("_SLT", int, float, bool, str, bytes, None)

_O_CREX = os.O_CREAT | os.O_EXCL
_SHM_NAME_PREFIX = "/psm_"
_SHM_SAFE_NAME_LENGTH = 14  # macOS allows 31 characters; stay well below


def _make_filename() -> str:
    nbytes = (_SHM_SAFE_NAME_LENGTH - len(_SHM_NAME_PREFIX)) // 2
    return _SHM_NAME_PREFIX + secrets.token_hex(nbytes)


class SharedMemory:
    """A named block of shared memory: create it, or attach to it by ``name``.

    ``buf`` is a writable memoryview of the whole block.  ``close()`` unmaps it
    in this process; ``unlink()`` removes the name (call it once, usually in
    the creator, when no process needs to attach any more).
    """

    _name: str | None = None
    _fd = -1
    _mmap: mmap.mmap | None = None
    _buf: memoryview | None = None
    _flags = os.O_RDWR
    _mode = 0o600
    _prepend_leading_slash = True
    # Held by the class: __del__ may run after this module's globals are cleared.
    _os_close = staticmethod(os.close)

    def __init__(
        self, name: str | None = None, create: bool = False, size: int = 0, *, track: bool = True
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"'size' must be a positive integer (got {size!r})")
        if create:
            self._flags = _O_CREX | os.O_RDWR
            if size == 0:
                raise ValueError("'size' must be a positive number different from zero")
        if name is None and not self._flags & os.O_EXCL:
            raise ValueError("'name' can only be None if create=True")
        if name is not None and "\0" in name:
            raise ValueError(f"shared memory name contains a NUL character: {name!r}")
        self._track = track
        if name is None:
            while True:
                name = _make_filename()
                try:
                    self._fd = _platform.shm_open(name, self._flags, self._mode)
                except FileExistsError:
                    continue
                break
        else:
            name = "/" + name if self._prepend_leading_slash else name
            self._fd = _platform.shm_open(name, self._flags, self._mode)
        self._name = name
        try:
            if create:
                os.ftruncate(self._fd, size)
            size = os.fstat(self._fd).st_size
            if size == 0:
                raise ValueError(f"shared memory {name!r} is empty: nothing to map")
            self._mmap = mmap.mmap(self._fd, size)
        except BaseException:
            if create:
                self.unlink()
            self.close()
            raise
        self._size = size
        self._buf = memoryview(self._mmap)
        if create and track:
            _tracker.register(name, "shared_memory")

    def __del__(self) -> None:
        try:
            self.close()
        except (OSError, ValueError):
            pass

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.name, False, self.size)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.name!r}, size={self.size})"

    @property
    def buf(self) -> memoryview:
        """A memoryview of the whole block (invalid after ``close()``)."""
        if self._buf is None:
            raise ValueError("shared memory is closed")
        return self._buf

    @property
    def name(self) -> str:
        """The name to attach with (without the leading '/')."""
        name = self._name or ""
        if self._prepend_leading_slash and name.startswith("/"):
            name = name[1:]
        return name

    @property
    def size(self) -> int:
        """Size in bytes (rounded up to a page on some systems)."""
        return self._size

    def close(self) -> None:
        """Unmap the block in this process; it stays available to the others."""
        if self._buf is not None:
            self._buf.release()
            self._buf = None
        if self._mmap is not None:
            self._mmap.close()
            self._mmap = None
        if self._fd >= 0:
            self._os_close(self._fd)
            self._fd = -1

    def unlink(self) -> None:
        """Remove the name: no new attachments; memory is freed when all have closed."""
        if self._name:
            _platform.shm_unlink(self._name)
            if self._track:
                _tracker.unregister(self._name, "shared_memory")


_encoding = "utf8"


class ShareableList(Generic[_SLT]):
    """A fixed-length list of int, float, bool, str, bytes and None in shared memory.

    Items can be replaced but the list cannot grow or shrink; a str or bytes
    item keeps the storage its first value got (rounded up to 8 bytes).
    ``ShareableList[T]`` holds items of type ``T`` for type checkers.
    """

    shm: SharedMemory

    _types_mapping: dict[type, str] = {
        int: "q",
        float: "d",
        bool: "xxxxxxx?",
        str: "%ds",
        bytes: "%ds",
        type(None): "xxxxxx?x",
    }
    _alignment = 8
    _back_transforms_mapping = {
        0: lambda value: value,  # int, float, bool
        1: lambda value: value.rstrip(b"\x00").decode(_encoding),  # str
        2: lambda value: value.rstrip(b"\x00"),  # bytes
        3: lambda _value: None,  # None
    }

    @staticmethod
    def _extract_recreation_code(value: object) -> int:
        if isinstance(value, str):
            return 1
        if isinstance(value, bytes):
            return 2
        if value is None:
            return 3
        return 0

    @overload
    def __init__(self, sequence: None = None, *, name: str | None = None) -> None: ...
    @overload
    def __init__(self, sequence: Iterable[_SLT], *, name: str | None = None) -> None: ...
    def __init__(self, sequence: Iterable[_SLT] | None = None, *, name: str | None = None) -> None:
        if name is None or sequence is not None:
            items = list(sequence or ())
            formats = [self._format_of(item) for item in items]
            self._list_len = len(formats)
            offset = 0
            self._allocated_offsets = [0]
            for fmt in formats:
                offset += self._alignment if fmt[-1] != "s" else int(fmt[:-1])
                self._allocated_offsets.append(offset)
            codes = [self._extract_recreation_code(item) for item in items]
            requested_size = struct.calcsize(
                "q"
                + self._format_size_metainfo
                + "".join(formats)
                + self._format_packing_metainfo
                + self._format_back_transform_codes
            )
            self.shm = SharedMemory(name, create=True, size=requested_size)
            buf = self.shm.buf
            struct.pack_into(
                "q" + self._format_size_metainfo, buf, 0, self._list_len, *self._allocated_offsets
            )
            struct.pack_into(
                "".join(formats),
                buf,
                self._offset_data_start,
                *(v.encode(_encoding) if isinstance(v, str) else v for v in items),
            )
            struct.pack_into(
                self._format_packing_metainfo,
                buf,
                self._offset_packing_formats,
                *(f.encode(_encoding) for f in formats),
            )
            struct.pack_into(
                self._format_back_transform_codes, buf, self._offset_back_transform_codes, *codes
            )
        else:
            self.shm = SharedMemory(name)
            self._list_len = len(self)
            self._allocated_offsets = list(
                struct.unpack_from(self._format_size_metainfo, self.shm.buf, 8)
            )

    def _format_of(self, item: object) -> str:
        try:
            fmt = self._types_mapping[type(item)]
        except KeyError:
            raise TypeError(
                f"ShareableList items must be int, float, bool, str, bytes or None "
                f"(got {type(item).__name__}: {item!r})"
            ) from None
        if isinstance(item, (str, bytes)):
            encoded = item.encode(_encoding) if isinstance(item, str) else item
            fmt = fmt % (self._alignment * (len(encoded) // self._alignment + 1))
        return fmt

    def _get_packing_format(self, position: int) -> str:
        position = self._check_index(position)
        raw: bytes = struct.unpack_from(
            "8s", self.shm.buf, self._offset_packing_formats + position * 8
        )[0]
        return raw.rstrip(b"\x00").decode(_encoding)

    def _get_back_transform(self, position: int) -> Any:
        position = self._check_index(position)
        code = struct.unpack_from("b", self.shm.buf, self._offset_back_transform_codes + position)[
            0
        ]
        return self._back_transforms_mapping[code]

    def _set_packing_format_and_transform(self, position: int, fmt: str, value: Any) -> None:
        position = self._check_index(position)
        struct.pack_into(
            "8s",
            self.shm.buf,
            self._offset_packing_formats + position * 8,
            fmt.encode(_encoding),
        )
        struct.pack_into(
            "b",
            self.shm.buf,
            self._offset_back_transform_codes + position,
            self._extract_recreation_code(value),
        )

    def _check_index(self, position: int) -> int:
        if position < 0:
            position += self._list_len
        if not 0 <= position < self._list_len:
            raise IndexError("Requested position out of range.")
        return position

    def __getitem__(self, position: int) -> _SLT:
        position = position if position >= 0 else position + self._list_len
        if position < 0:  # still negative: below -len (no second wrap-around)
            raise IndexError("index out of range")
        try:
            offset = self._offset_data_start + self._allocated_offsets[position]
            (value,) = struct.unpack_from(self._get_packing_format(position), self.shm.buf, offset)
        except IndexError:
            raise IndexError("index out of range") from None
        return self._get_back_transform(position)(value)  # type: ignore[no-any-return]

    def __setitem__(self, position: int, value: _SLT) -> None:
        position = position if position >= 0 else position + self._list_len
        if position < 0:
            raise IndexError("assignment index out of range")
        try:
            item_offset = self._allocated_offsets[position]
            offset = self._offset_data_start + item_offset
            current_format = self._get_packing_format(position)
        except IndexError:
            raise IndexError("assignment index out of range") from None
        if not isinstance(value, (str, bytes)):
            new_format = self._format_of(value)
            encoded = value
        else:
            allocated = self._allocated_offsets[position + 1] - item_offset
            encoded = value.encode(_encoding) if isinstance(value, str) else value
            if len(encoded) > allocated:
                raise ValueError("bytes/str item exceeds available storage")
            new_format = current_format if current_format[-1] == "s" else f"{allocated}s"
        self._set_packing_format_and_transform(position, new_format, value)
        struct.pack_into(new_format, self.shm.buf, offset, encoded)

    def __reduce__(self) -> tuple[Any, ...]:
        return partial(self.__class__, name=self.shm.name), ()

    def __len__(self) -> int:
        return int(struct.unpack_from("q", self.shm.buf, 0)[0])

    def __iter__(self) -> Iterator[_SLT]:
        for position in range(self._list_len):
            yield self[position]

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({list(self)}, name={self.shm.name!r})"

    @property
    def format(self) -> str:
        """The struct format of all items, in order."""
        return "".join(self._get_packing_format(i) for i in range(self._list_len))

    @property
    def _format_size_metainfo(self) -> str:
        return "q" * (self._list_len + 1)

    @property
    def _format_packing_metainfo(self) -> str:
        return "8s" * self._list_len

    @property
    def _format_back_transform_codes(self) -> str:
        return "b" * self._list_len

    @property
    def _offset_data_start(self) -> int:
        return (self._list_len + 2) * 8

    @property
    def _offset_packing_formats(self) -> int:
        return self._offset_data_start + self._allocated_offsets[-1]

    @property
    def _offset_back_transform_codes(self) -> int:
        return self._offset_packing_formats + self._list_len * 8

    def count(self, value: object) -> int:
        """Occurrences of ``value``."""
        return sum(value == entry for entry in self)

    def index(self, value: object) -> int:
        """Position of the first occurrence of ``value`` (ValueError if absent)."""
        for position, entry in enumerate(self):
            if value == entry:
                return position
        raise ValueError(f"{value!r} not in this container")

    def __class_getitem__(cls, item: Any) -> types.GenericAlias:
        return types.GenericAlias(cls, item)
