"""The message format of a ``Connection``.

Every message is one frame: an 8-byte big-endian header, then the body::

    header bits 63..62   kind
    header bits 61..0    body length in bytes (so no 2 or 4 GiB limit)

    kind 0  RAW   the body is the message (send_bytes, or a pickle from send())
    kind 1  OOB   a pickle with out-of-band buffers (protocol 5):
                  u32 n | n x u64 buffer sizes | pickle bytes | buffer 0 | ... | buffer n-1

Out-of-band buffers (numpy arrays, PickleBuffer) are written straight from
their memory with ``writev`` and read straight into their final buffers: no
copy into or out of the pickle stream.

A reader never trusts a length: a header that claims more than this machine's
memory is rejected before anything is allocated, and large bodies are read
into lazily-allocated memory, so a lying peer costs only what it really sends.
"""

from __future__ import annotations

import mmap
import os
import struct

from ..errors import ProtocolError

ByteData = bytes | bytearray | memoryview | mmap.mmap

HEADER = struct.Struct("!Q")
_COUNT = struct.Struct("!I")
_SIZE = struct.Struct("!Q")

KIND_RAW = 0
KIND_OOB = 1
_KIND_SHIFT = 62
_LENGTH_MASK = (1 << _KIND_SHIFT) - 1
MAX_OOB_BUFFERS = 1 << 16


def _memory_limit() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # pragma: no cover - sysconf names exist on Linux/macOS
        return 1 << 40


# No single message can be larger than physical memory: a header claiming more
# is corrupt (or hostile).
MAX_MESSAGE = _memory_limit()


def pack_header(kind: int, length: int) -> bytes:
    return HEADER.pack((kind << _KIND_SHIFT) | length)


def unpack_header(header: bytes) -> tuple[int, int]:
    """(kind, body length) of a header; ProtocolError for an impossible one."""
    (value,) = HEADER.unpack(header)
    kind, length = value >> _KIND_SHIFT, value & _LENGTH_MASK
    if kind > KIND_OOB:
        raise ProtocolError(f"bad message header: unknown kind {kind}{_stdlib_hint(header)}")
    if length > MAX_MESSAGE:
        raise ProtocolError(
            f"bad message length: {length} bytes claimed, more than this machine's memory"
            f"{_stdlib_hint(header)}"
        )
    return kind, length


def _stdlib_hint(header: bytes) -> str:
    """The stdlib frames a message with a 4-byte length: a pickle's first byte follows."""
    if header[4:8] == b"#PHA":  # a keyed phalanx Listener's banner (see _wire.handshake)
        return " (the server authenticates its clients: connect with its authkey)"
    (stdlib_length,) = struct.unpack_from("!i", header)
    if stdlib_length > 0 and header[4:5] == b"\x80":
        return (
            " (this is how the stdlib's multiprocessing frames a pickle: the peer speaks "
            "its wire protocol, not phalanx's; use the same library on both ends)"
        )
    return ""


def pack_oob_prefix(pickle_len: int, sizes: list[int]) -> bytes:
    """Header and buffer table of an OOB message (the pickle and buffers follow)."""
    table = _COUNT.pack(len(sizes)) + b"".join(_SIZE.pack(s) for s in sizes)
    body_len = len(table) + pickle_len + sum(sizes)
    return pack_header(KIND_OOB, body_len) + table


def parse_oob_table(count_bytes: ByteData, body_len: int) -> int:
    """Number of buffers announced by an OOB body, checked against its length."""
    (count,) = _COUNT.unpack(count_bytes)
    if count > MAX_OOB_BUFFERS or _COUNT.size + _SIZE.size * count > body_len:
        raise ProtocolError(f"bad out-of-band message: {count} buffers in {body_len} bytes")
    return int(count)


def parse_oob_sizes(table: ByteData, count: int, body_len: int) -> tuple[list[int], int]:
    """(buffer sizes, pickle length) of an OOB body; ProtocolError if inconsistent."""
    sizes = [int(s) for (s,) in _SIZE.iter_unpack(table)]
    pickle_len = body_len - _COUNT.size - _SIZE.size * count - sum(sizes)
    if pickle_len < 0:
        raise ProtocolError("bad out-of-band message: buffers larger than the message")
    return sizes, pickle_len


def inline_buffers(data: ByteData, buffers: list[ByteData]) -> bytes:
    """Turn a pickle with out-of-band buffers into an equivalent in-band pickle.

    For ``recv_bytes()`` on a message sent with ``send()``: the result is what
    a plain protocol-5 ``pickle.dumps`` would have produced.  The pickle is
    only *parsed* (``pickletools.genops``), never executed: receiving bytes
    must not run code from the peer.  Each NEXT_BUFFER becomes BYTEARRAY8
    with the buffer's bytes, and FRAME opcodes are dropped (their lengths
    would no longer hold; framing is optional).
    """
    import pickletools  # only on this rare path

    raw = bytes(data)
    out: list[bytes] = []
    pending = iter(buffers)
    ops = list(pickletools.genops(raw))
    try:
        for i, (op, _arg, pos) in enumerate(ops):
            end = ops[i + 1][2] if i + 1 < len(ops) else len(raw)
            if op.name == "FRAME":
                continue
            if op.name == "NEXT_BUFFER":
                chunk = bytes(next(pending))
                out.append(b"\x96" + struct.pack("<Q", len(chunk)) + chunk)  # BYTEARRAY8
                continue
            out.append(raw[pos:end])
    except StopIteration:
        raise ProtocolError(
            "bad out-of-band message: more buffer references than buffers"
        ) from None
    return b"".join(out)
