"""The Dask distributed adapter of the cluster backend (``Pool(backend="dask")``).

Imported only when a program names Dask (``pip install phalanx[dask]``).
Dask itself imports ``multiprocessing``: that is the one documented exception
to phalanx's independence rule, and it stays inside this module.

An engine task is ``client.submit(run_task, spec, task_id, pure=False)``;
everything else goes over the pool's hub (see ``phalanx._cluster.runner``).
What Dask cannot do, said plainly:

* a running task cannot be stopped: a task over its ``timeout=`` fails on
  time, and its worker process is killed (its nanny restarts it) only when it
  runs one thread and phalanx started the cluster (or ``kill_overdue=True``);
  otherwise a ``ClusterSemanticsWarning`` says that the thread runs on;
* ``maxtasksperchild`` is refused (the worker processes are Dask's).
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import distributed

from .._cluster.engine import Done, TaskEnd
from .._cluster.net import LOST_AFTER, local_address_towards
from .._cluster.runner import run_task

__all__ = ("DaskEngine",)


class DaskEngine:
    name = "dask"

    def __init__(self, options: Any) -> None:
        self._cluster: Any = None
        self._owns_client = False
        if options.client is not None:
            client = options.client
        elif options.address:
            client = distributed.Client(options.address)  # type: ignore[no-untyped-call,unused-ignore]
            self._owns_client = True
        else:
            try:
                client = distributed.get_client()
            except ValueError:  # no client yet: a local cluster of our own
                self._cluster = distributed.LocalCluster(  # type: ignore[no-untyped-call,unused-ignore]
                    n_workers=options.n_workers or os.cpu_count() or 1,
                    threads_per_worker=options.threads_per_worker,
                    processes=True,
                    dashboard_address=None,
                )
                client = distributed.Client(self._cluster)  # type: ignore[no-untyped-call,unused-ignore]
                self._owns_client = True
        self.client = client
        self._kill_overdue = bool(options.kill_overdue or self._cluster is not None)
        self._closed = False
        self._lock = threading.Lock()
        self._disconnected_at: float | None = None
        self._capacity = 1

    # -- the Engine protocol ----------------------------------------------------------

    def capacity(self) -> int:
        if str(self.client.status) == "running":  # (else the call would wait for a scheduler)
            self._capacity = max(1, int(sum(self.client.nthreads().values())))
        return self._capacity

    def hub_host(self) -> str:
        host = urlsplit(self.client.scheduler.address).hostname or "127.0.0.1"
        return local_address_towards(host)

    def put(self, data: memoryview) -> Any:
        return self.client.scatter(bytes(data), hash=False)

    def stored_lost(self, ref: Any) -> bool:
        return str(ref.status) != "finished"

    def submit(self, spec: Any, task_id: int, done: Done, refs: list[Any]) -> Any:
        future = self.client.submit(
            run_task, spec, task_id, *refs, pure=False, key=f"phalanx-{spec.pool}-{task_id}"
        )
        future.add_done_callback(lambda f: done(f, _end_of(f)))
        return future

    def hosts_lost(self) -> int:
        return 0  # the scheduler reschedules a removed worker's tasks itself

    def head_answered_since(self, since: float) -> bool:
        # The client's status changes as soon as its connection to the scheduler ends.
        return str(self.client.status) == "running"

    def lost(self) -> str | None:
        status = str(self.client.status)
        if status == "running":
            self._disconnected_at = None
            return None
        if status in ("closing", "closed", "failed"):
            return f"the client is {status}"
        now = time.monotonic()
        if self._disconnected_at is None:
            self._disconnected_at = now
        elif now - self._disconnected_at > LOST_AFTER:
            return (
                f"no scheduler at {self.client.scheduler.address} for "
                f"{now - self._disconnected_at:.0f} s"
            )
        return None

    def cancel(self, handle: Any, force: bool) -> bool:
        try:
            handle.cancel()
        except Exception:
            pass
        return not force  # a running Dask task goes on; only kill() stops it

    def kill(self, host: str, pid: int) -> bool:
        if not self._kill_overdue:
            return False
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        try:
            pids = self.client.run(os.getpid)  # runs in the workers' event loops, not tasks
        except Exception:
            return False
        for address, worker_pid in pids.items():
            info = workers.get(address, {})
            if worker_pid != pid or info.get("nthreads") != 1:
                continue
            if _is_local(info.get("host", "")) and _is_local(host):
                try:
                    os.kill(pid, signal.SIGKILL)  # its nanny starts another
                except ProcessLookupError:
                    pass
                return True
            # Its own event loop ends the process at once (its nanny starts another);
            # the call never gets an answer, so it waits in a thread of its own.
            threading.Thread(
                target=_quietly,
                args=(self.client.run, os._exit, 1),
                kwargs={"workers": [address]},
                name="phalanx-dask-kill",
                daemon=True,
            ).start()
            return True
        return False

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._owns_client:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def _quietly(func: Any, *args: Any, **kwargs: Any) -> None:
    try:
        func(*args, **kwargs)
    except Exception:
        pass


def _end_of(future: Any) -> TaskEnd:
    status = future.status
    if status == "finished":
        return TaskEnd(True)
    if status == "cancelled":
        return TaskEnd(False, cancelled=True)
    try:
        error = future.exception(timeout=1)
    except Exception as exc:  # the client lost the scheduler, say
        error = exc
    lost = type(error).__name__ == "KilledWorker"
    return TaskEnd(False, error=error, lost=lost)


def _is_local(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback or host in _own_addresses()
    except ValueError:
        return host in ("localhost", socket.gethostname())


def _own_addresses() -> set[str]:
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        return set()
