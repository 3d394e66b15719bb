"""POSIX semaphores from libc through ctypes (unnamed, process-shared, in shared memory).

The hot paths take a ``ctypes.c_void_p`` built once per semaphore, so a call
costs one ctypes dispatch (~0.3-0.5 us) and no argument conversion.  ctypes
releases the GIL around every call, so a blocked ``sem_clockwait`` does not
stop the other threads of the process.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import time

TYPE_CHECKING = False  # typing is not imported at run time: see phalanx/context.py
if TYPE_CHECKING:
    from typing import Any

__all__ = (
    "HAVE_ROBUST_MUTEX",
    "HAVE_UNNAMED_SEMAPHORES",
    "MUTEX_SIZE",
    "SEM_T_SIZE",
    "TOTAL_STORE_ORDER",
    "DatagramReader",
    "drain",
    "mutex_init",
    "mutex_lock",
    "mutex_trylock",
    "mutex_unlock",
    "poke",
    "raw_sem_post",
    "raw_sem_trywait",
    "recv_bytes_waitall",
    "recv_into_address",
    "sem_destroy",
    "sem_getvalue",
    "sem_init",
    "sem_post",
    "sem_trywait",
    "sem_wait_until",
    "send_nowait",
    "shm_open",
    "shm_unlink",
)


def _open_libc(loader: Any) -> Any:
    """libc through ``loader`` (CDLL: calls drop the GIL; PyDLL: they keep it).

    dlopen(NULL) first: the symbols the interpreter has loaded, libc's among
    them, at no cost (``find_library`` runs ``ldconfig -p`` each time, a few
    milliseconds of every ``import phalanx``, so of every spawned child).
    """
    lib = loader(None, use_errno=True)
    if getattr(lib, "sem_init", None) is None:  # pragma: no cover - a static interpreter
        import ctypes.util

        lib = loader(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return lib


_libc = _open_libc(ctypes.CDLL)

# sizeof(sem_t): 32 bytes on 64-bit glibc and musl, 16 on 32-bit.
SEM_T_SIZE = 32 if ctypes.sizeof(ctypes.c_void_p) == 8 else 16
_CLOCK_MONOTONIC = getattr(time, "CLOCK_MONOTONIC", 1)


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


def _bind(name: str, *argtypes: object) -> Any:
    func = getattr(_libc, name, None)
    if func is not None:
        func.argtypes = list(argtypes)
        func.restype = ctypes.c_int
    return func


_sem_init = _bind("sem_init", ctypes.c_void_p, ctypes.c_int, ctypes.c_uint)
_sem_destroy = _bind("sem_destroy", ctypes.c_void_p)
_sem_post = _bind("sem_post", ctypes.c_void_p)
_sem_trywait = _bind("sem_trywait", ctypes.c_void_p)
_sem_getvalue = _bind("sem_getvalue", ctypes.c_void_p, ctypes.POINTER(ctypes.c_int))
# glibc >= 2.30 waits on CLOCK_MONOTONIC: immune to wall-clock jumps.
_sem_clockwait = _bind("sem_clockwait", ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(_Timespec))
_sem_timedwait = _bind("sem_timedwait", ctypes.c_void_p, ctypes.POINTER(_Timespec))


# For the hot paths (an uncontended acquire, a release): call them with a
# prebuilt c_void_p; non-zero means "not taken" (EAGAIN, or EINTR).  Neither
# ever blocks, so they keep the GIL (PyDLL): dropping and retaking it would
# cost more than the call.
_gil_libc = _open_libc(ctypes.PyDLL)
raw_sem_trywait = _gil_libc.sem_trywait
raw_sem_trywait.argtypes = [ctypes.c_void_p]
raw_sem_trywait.restype = ctypes.c_int
raw_sem_post = _gil_libc.sem_post
raw_sem_post.argtypes = [ctypes.c_void_p]
raw_sem_post.restype = ctypes.c_int


# --- robust process-shared mutexes ------------------------------------------------------
#
# A robust mutex whose holder dies is not left locked: the next locker gets
# EOWNERDEAD, owns it, and repairs what it protects (``mutex_lock`` returns
# True then).  Only short, non-blocking sections run under one.

MUTEX_SIZE = 64  # room for a pthread_mutex_t (40 bytes on 64-bit glibc and musl)
_EOWNERDEAD = getattr(errno, "EOWNERDEAD", 130)
_mutex_trylock: Any = getattr(_gil_libc, "pthread_mutex_trylock", None)
_mutex_unlock: Any = getattr(_gil_libc, "pthread_mutex_unlock", None)
_mutex_lock = _bind("pthread_mutex_lock", ctypes.c_void_p)  # blocks: drops the GIL
_mutex_consistent = _bind("pthread_mutex_consistent", ctypes.c_void_p)
for _func in (_mutex_trylock, _mutex_unlock):
    if _func is not None:
        _func.argtypes = [ctypes.c_void_p]
        _func.restype = ctypes.c_int


def mutex_init(mutex: ctypes.c_void_p) -> None:
    """Initialise a robust, process-shared mutex at ``mutex`` (MUTEX_SIZE zeroed bytes)."""
    attr = ctypes.create_string_buffer(64)  # pthread_mutexattr_t: 4 bytes on glibc
    for name, args in (
        ("pthread_mutexattr_init", ()),
        ("pthread_mutexattr_setpshared", (1,)),  # PTHREAD_PROCESS_SHARED
        ("pthread_mutexattr_setrobust", (1,)),  # PTHREAD_MUTEX_ROBUST
    ):
        rc = getattr(_libc, name)(attr, *args)
        if rc != 0:
            raise OSError(rc, f"{name}: {os.strerror(rc)}")
    rc = _libc.pthread_mutex_init(mutex, attr)
    _libc.pthread_mutexattr_destroy(attr)
    if rc != 0:
        raise OSError(rc, f"pthread_mutex_init: {os.strerror(rc)}")


def mutex_lock(mutex: ctypes.c_void_p, tried: int = 0, spins: int = 64) -> bool:
    """Lock; True if its last holder died holding it (made consistent: repair the data).

    ``tried``: what a ``mutex_trylock`` just returned, if the caller tried first
    (EOWNERDEAD from it means the mutex is already ours).
    """
    rc = tried
    if rc != _EOWNERDEAD:
        for _ in range(spins):  # held for microseconds: try a while before sleeping
            rc = _mutex_trylock(mutex)
            if rc == 0:
                return False
            if rc == _EOWNERDEAD:
                break
    if rc != _EOWNERDEAD:
        while True:
            rc = _mutex_lock(mutex)
            if rc != errno.EINTR:
                break
        if rc == 0:
            return False
    if rc != _EOWNERDEAD:
        raise OSError(rc, f"pthread_mutex_lock: {os.strerror(rc)}")
    _mutex_consistent(mutex)
    return True


# The hot path: try once (0 means taken), then ``mutex_lock``.
mutex_trylock = _mutex_trylock
mutex_unlock = _mutex_unlock


def _probe_robust_mutex() -> bool:
    if None in (_mutex_trylock, _mutex_unlock, _mutex_lock, _mutex_consistent):
        return False
    if getattr(_libc, "pthread_mutexattr_setrobust", None) is None:
        return False  # macOS
    buf = ctypes.create_string_buffer(MUTEX_SIZE)
    try:
        mutex_init(ctypes.c_void_p(ctypes.addressof(buf)))
    except OSError:
        return False
    _libc.pthread_mutex_destroy(ctypes.c_void_p(ctypes.addressof(buf)))
    return True


HAVE_ROBUST_MUTEX = _probe_robust_mutex()

# x86 orders stores with stores and loads with loads (TSO), and glibc's mutex
# operations are full barriers there: a word written after the data it
# commits is never seen before that data, even without a shared lock.
TOTAL_STORE_ORDER = os.uname().machine.lower() in ("x86_64", "amd64", "i386", "i686")


def _probe() -> bool:
    if _sem_init is None:
        return False
    buf = ctypes.create_string_buffer(SEM_T_SIZE)
    if _sem_init(ctypes.addressof(buf), 1, 0) != 0:
        return False  # macOS: ENOSYS
    _sem_destroy(ctypes.addressof(buf))
    return True


HAVE_UNNAMED_SEMAPHORES = _probe()


def _raise(what: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


def sem_init(sem: ctypes.c_void_p, value: int) -> None:
    """Initialise a process-shared semaphore at ``sem`` with ``value``."""
    if not HAVE_UNNAMED_SEMAPHORES:
        raise NotImplementedError("process-shared unnamed semaphores are not available here")
    if _sem_init(sem, 1, value) != 0:
        _raise("sem_init")


def sem_destroy(sem: ctypes.c_void_p) -> None:
    _sem_destroy(sem)


def sem_post(sem: ctypes.c_void_p) -> None:
    if _sem_post(sem) != 0:
        _raise("sem_post")


def sem_trywait(sem: ctypes.c_void_p) -> bool:
    """Take one unit if available at once; False if the count is zero."""
    if _sem_trywait(sem) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EAGAIN, errno.EINTR):
        return False
    _raise("sem_trywait")
    return False  # pragma: no cover


def sem_wait_until(sem: ctypes.c_void_p, deadline: float) -> bool:
    """Take one unit, waiting until ``deadline`` (``time.monotonic()`` seconds).

    Returns False at the deadline and also when a signal interrupts the wait
    (so Python signal handlers run); the caller loops.
    """
    if _sem_clockwait is not None:
        sec = int(deadline)
        ts = _Timespec(sec, int((deadline - sec) * 1e9))
        rc = _sem_clockwait(sem, _CLOCK_MONOTONIC, ctypes.byref(ts))
    else:  # pragma: no cover - glibc < 2.30: a wall-clock deadline
        wall = time.time() + (deadline - time.monotonic())
        sec = int(wall)
        ts = _Timespec(sec, int((wall - sec) * 1e9))
        rc = _sem_timedwait(sem, ctypes.byref(ts))
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ETIMEDOUT, errno.EINTR, errno.EAGAIN):
        return False
    _raise("sem_clockwait")
    return False  # pragma: no cover


def sem_getvalue(sem: ctypes.c_void_p) -> int:
    value = ctypes.c_int()
    if _sem_getvalue(sem, ctypes.byref(value)) != 0:
        _raise("sem_getvalue")
    return max(0, value.value)  # glibc never reports waiters as a negative count


_shm_open = _bind("shm_open", ctypes.c_char_p, ctypes.c_int, ctypes.c_uint)
_shm_unlink = _bind("shm_unlink", ctypes.c_char_p)
if _shm_open is None:  # pragma: no cover - glibc < 2.34 keeps them in librt
    import ctypes.util

    _librt = ctypes.CDLL(ctypes.util.find_library("rt") or "librt.so.1", use_errno=True)
    _shm_open = _librt.shm_open
    _shm_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint]
    _shm_unlink = _librt.shm_unlink
    _shm_unlink.argtypes = [ctypes.c_char_p]


def _shm_error(what: str, name: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, os.strerror(err), name)  # FileNotFoundError, FileExistsError...


def shm_open(name: str, flags: int, mode: int = 0o600) -> int:
    """Open a POSIX shared-memory object (``name`` starts with '/'); returns an fd."""
    while True:
        fd = _shm_open(os.fsencode(name), flags | os.O_CLOEXEC, mode)
        if fd >= 0:
            return int(fd)
        if ctypes.get_errno() != errno.EINTR:
            raise _shm_error("shm_open", name)


def shm_unlink(name: str) -> None:
    """Remove the name of a POSIX shared-memory object (mappings stay valid)."""
    if _shm_unlink(os.fsencode(name)) != 0:
        raise _shm_error("shm_unlink", name)


_recv = _bind("recv", ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_recv.restype = ctypes.c_ssize_t
_new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
_new_bytes.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
_new_bytes.restype = ctypes.py_object
_bytes_data = ctypes.pythonapi.PyBytes_AsString
_bytes_data.argtypes = [ctypes.py_object]
_bytes_data.restype = ctypes.c_void_p
_MSG_WAITALL = 0x100 if os.uname().sysname == "Linux" else 0x40


def recv_into_address(fd: int, address: int, size: int) -> int:
    """recv(MSG_WAITALL) ``size`` bytes on a stream socket into memory at ``address``.

    Returns how many bytes arrived: ``size``, or fewer at EOF (0 if none).
    Straight through libc rather than a ``socket`` object, which would put the
    fd in non-blocking mode under ``socket.setdefaulttimeout()``.  Signals
    interrupt the wait; their Python handlers run and the read resumes.
    """
    got = 0
    while got < size:
        n = _recv(fd, address + got, size - got, _MSG_WAITALL)
        if n > 0:
            got += n
        elif n == 0:
            return got  # EOF
        else:
            err = ctypes.get_errno()
            if err != errno.EINTR:
                raise OSError(err, f"recv: {os.strerror(err)}")
            time.sleep(0)  # let Python run the signal handlers (they may raise)
    return got


def recv_bytes_waitall(fd: int, size: int) -> bytes:
    """A new bytes object filled by one recv(MSG_WAITALL); shorter only at EOF.

    The object is created uninitialised (not zeroed) and filled in place before
    anyone else can see it, so a peer that announces a huge message and sends
    little costs address space, not memory.
    """
    data: bytes = _new_bytes(None, size)
    got = recv_into_address(fd, _bytes_data(data), size)
    return data if got == size else data[:got]


# --- datagrams without releasing the GIL ----------------------------------------------
#
# A thread that serves many peers (the pool's supervisor) drains its sockets
# with non-blocking calls.  Through ``socket`` objects each call releases the
# GIL and must win it back, which under load costs a whole switch interval
# (5 ms) whenever another thread of the process is running Python code.  A
# non-blocking recv/send takes about a microsecond: through PyDLL, which keeps
# the GIL, there is nothing to win back.

_pylibc = _open_libc(ctypes.PyDLL)
_precvmsg = _pylibc.recvmsg
_precvmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
_precvmsg.restype = ctypes.c_ssize_t
_psend = _pylibc.send
_psend.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
_psend.restype = ctypes.c_ssize_t
_AGAIN = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR})


class _Iovec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


_IovLen: Any = ctypes.c_size_t
_CtlLen: Any = ctypes.c_size_t
_CmsgLen: Any = ctypes.c_size_t
if os.uname().sysname != "Linux":  # pragma: no cover - BSD/macOS layout
    _IovLen, _CtlLen, _CmsgLen = ctypes.c_int, ctypes.c_uint, ctypes.c_uint


class _Msghdr(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", _IovLen),
        ("control", ctypes.c_void_p),
        ("controllen", _CtlLen),
        ("flags", ctypes.c_int),
    )


class _Cmsghdr(ctypes.Structure):
    _fields_ = (("len", _CmsgLen), ("level", ctypes.c_int), ("type", ctypes.c_int))


class DatagramReader:
    """Non-blocking ``recvmsg`` of whole datagrams (and the fds they carry), GIL held.

    One reader per thread: it reuses its buffers.
    """

    def __init__(self, bufsize: int, max_fds: int = 4) -> None:
        import socket

        self._size = bufsize
        # Anonymous memory, committed page by page as datagrams land in it:
        # a zeroed ctypes buffer of 64 KiB would touch all 16 pages up front,
        # and again (copy-on-write) after every fork of the process.
        self._memory = mmap.mmap(-1, bufsize)
        self._buf = (ctypes.c_char * bufsize).from_buffer(self._memory)
        self._ctl_size = socket.CMSG_SPACE(4 * max_fds)
        self._ctl = ctypes.create_string_buffer(self._ctl_size)
        self._data_offset = socket.CMSG_LEN(0)
        self._iov = _Iovec(ctypes.addressof(self._buf), bufsize)
        self._hdr = _Msghdr(
            None, 0, ctypes.addressof(self._iov), 1, ctypes.addressof(self._ctl), self._ctl_size, 0
        )
        self._hdr_addr = ctypes.addressof(self._hdr)
        self._flags = socket.MSG_DONTWAIT | getattr(socket, "MSG_CMSG_CLOEXEC", 0)
        self._scm = (socket.SOL_SOCKET, socket.SCM_RIGHTS)

    def recv(self, fd: int) -> tuple[bytes, list[int]] | None:
        """The next datagram and its fds; None if none is waiting; ``b""`` at end of file."""
        hdr = self._hdr
        hdr.controllen = self._ctl_size
        hdr.flags = 0
        n = _precvmsg(fd, self._hdr_addr, self._flags)
        if n < 0:
            err = ctypes.get_errno()
            if err in _AGAIN:
                return None
            raise OSError(err, f"recvmsg: {os.strerror(err)}")
        fds: list[int] = []
        if hdr.controllen:
            cmsg = _Cmsghdr.from_buffer(self._ctl)
            if (cmsg.level, cmsg.type) == self._scm:
                count = (cmsg.len - self._data_offset) // 4
                fds = list((ctypes.c_int * count).from_buffer(self._ctl, self._data_offset))
        if hdr.flags & 0x20:  # MSG_TRUNC: longer than any datagram we send
            for extra in fds:
                os.close(extra)
            raise OSError(errno.EMSGSIZE, f"datagram longer than {self._size} bytes")
        return ctypes.string_at(self._buf, n), fds


_pwrite = _pylibc.write
_pwrite.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
_pwrite.restype = ctypes.c_ssize_t
_pread = _pylibc.read
_pread.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
_pread.restype = ctypes.c_ssize_t
_drain_buf = ctypes.create_string_buffer(4096)


def poke(fd: int) -> None:
    """Write one byte to a non-blocking pipe, GIL held; a full pipe is already poked."""
    _pwrite(fd, b"x", 1)


def drain(fd: int) -> None:
    """Read a non-blocking pipe empty, GIL held (the bytes are thrown away)."""
    while _pread(fd, _drain_buf, 4096) > 0:
        pass


def send_nowait(fd: int, data: bytes) -> bool:
    """Non-blocking send of one datagram, GIL held; False if the socket has no room."""
    n = _psend(fd, data, len(data), _MSG_NOSIGNAL_DONTWAIT)
    if n < 0:
        err = ctypes.get_errno()
        if err in _AGAIN:
            return False
        raise OSError(err, f"send: {os.strerror(err)}")
    return True


_MSG_NOSIGNAL_DONTWAIT = 0x40 | 0x4000 if os.uname().sysname == "Linux" else 0x80
