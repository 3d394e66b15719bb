"""The Ray adapter of the cluster backend (``Pool(backend="ray")``).

Imported only when a program names Ray (``pip install phalanx[ray]``).  Ray
itself imports ``multiprocessing``: that is the one documented exception to
phalanx's independence rule, and it stays inside this module.

An engine task is a Ray task (not an actor) running ``run_task`` with
``max_retries=0`` (phalanx decides what runs again) and ``num_cpus=1`` unless
``remote_args`` says otherwise; everything else goes over the pool's hub (see
``phalanx._cluster.runner``).  A task over its ``timeout=`` is stopped with
``ray.cancel(force=True)``, which kills its worker process: the local pool's
semantics exactly.
"""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import urlsplit

import ray

from .._cluster.engine import Done, TaskEnd
from .._cluster.net import LOST_AFTER, HeadWatch, local_address_towards
from .._cluster.runner import run_task

__all__ = ("RayEngine",)

_LOST = ("WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "ActorDiedError")


_CLIENT_TRIES = 3  # connections to a Ray Client server (``ray://``) before giving up


def _connect(address: str) -> None:
    """Join the cluster at ``address`` as a driver.

    Ray Client's proxier starts one server process per driver, forking from a
    process full of gRPC threads, and that start sometimes fails
    (ray-project/ray#63202): the connection is then refused with
    ``ConnectionAbortedError`` ("Initialization failure from server") although
    the cluster is fine.  Ray has closed the connection by then and the next one
    gets a server of its own, so a refused ``ray://`` connection is tried again;
    anything else (no such host, a version mismatch) is raised at once.
    """
    for attempt in range(1, _CLIENT_TRIES + 1):
        try:
            ray.init(address=address, log_to_driver=False)
            return
        except ConnectionAbortedError:
            if not address.startswith("ray://") or attempt == _CLIENT_TRIES:
                raise
            time.sleep(0.5 * attempt)


class RayEngine:
    name = "ray"

    def __init__(self, options: Any) -> None:
        self._started = False
        self._address = options.address
        if not ray.is_initialized():
            if options.address:
                _connect(options.address)
            else:
                ray.init(num_cpus=options.num_cpus, include_dashboard=False, log_to_driver=False)
            self._started = True
        remote_args = {"num_cpus": 1, **options.remote_args, "max_retries": 0}
        self._per_task_cpus = float(remote_args.get("num_cpus") or 0) or 1.0
        self._remote_args = remote_args
        self._remote = ray.remote(**remote_args)(run_task)
        self._renew = False  # a host was lost: submit through a new remote function
        self._closed = False
        self._lock = threading.Lock()
        self._alive: set[str] = set()
        self._hosts_lost = 0
        self._capacity = 1
        self._survey()
        self._watch = _watch_head(options.address)
        # The head is asked in a thread of its own: with the head gone, Ray's
        # calls wait for it, and the pool's supervisor must not.
        threading.Thread(target=self._follow_nodes, name="phalanx-ray-nodes", daemon=True).start()

    def limit_tasks_per_process(self, n: int) -> bool:
        """``maxtasksperchild``: a worker process retires after ``n`` tasks (``max_calls``)."""
        self._remote_args = {**self._remote_args, "max_calls": n}
        self._remote = ray.remote(**self._remote_args)(run_task)
        return True

    def capacity(self) -> int:
        return self._capacity

    def hosts_lost(self) -> int:
        return self._hosts_lost

    def _survey(self) -> None:
        """Ask the head which nodes are alive: the capacity is their CPUs, and a node
        that was alive and no longer is counts as a host lost."""
        nodes = ray.nodes()  # type: ignore[no-untyped-call,unused-ignore]
        alive = {str(node["NodeID"]) for node in nodes if node.get("Alive")}
        cpus = sum(
            float(node.get("Resources", {}).get("CPU", 0)) for node in nodes if node.get("Alive")
        )
        self._capacity = max(1, int(cpus / self._per_task_cpus))
        if self._alive - alive:
            self._renew = True
            self._hosts_lost += len(self._alive - alive)
        self._alive = alive

    def _follow_nodes(self) -> None:
        while not self._closed:
            time.sleep(1.0)
            if self._closed or (self._watch is not None and self._watch.silent_for() > 0):
                continue
            try:
                self._survey()
            except Exception:
                pass  # ray shut down meanwhile: lost() says so

    def hub_host(self) -> str:
        if self._address and self._address.startswith("ray://"):
            return local_address_towards(urlsplit(self._address).hostname or "127.0.0.1")
        return str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call,unused-ignore]

    def put(self, data: memoryview) -> Any:
        return ray.put(bytes(data))

    def stored_lost(self, ref: Any) -> bool:
        return False  # ray.put keeps the data where this driver runs, as long as it runs

    def submit(self, spec: Any, task_id: int, done: Done, refs: list[Any]) -> Any:
        if self._renew:
            # Ray queues the tasks of one remote function behind its pending worker
            # leases, and a lease asked of a node that then died stays pending: the
            # tasks would wait for it for ever.  A new remote function (a new Ray
            # "scheduling class") asks for leases afresh, on the nodes alive now.
            self._renew = False
            self._remote = ray.remote(**self._remote_args)(run_task)
        ref = self._remote.remote(spec, task_id, *refs)
        ref.future().add_done_callback(lambda f: done(ref, _end_of(f)))
        return ref

    def cancel(self, handle: Any, force: bool) -> bool:
        try:
            ray.cancel(handle, force=force)
        except Exception:
            return False
        return True

    def head_answered_since(self, since: float) -> bool:
        return self._watch is None or self._watch.answered_since(since)

    def lost(self) -> str | None:
        if not ray.is_initialized():
            return "ray was shut down in this process"
        if self._watch is not None:
            silent = self._watch.silent_for()
            if silent > LOST_AFTER:
                # Ray's own client ends this process once the head has been
                # gone for gcs_rpc_server_reconnect_timeout_s (60 s): the pool
                # says so long before.
                return f"no Ray head at {self._watch.address} for {silent:.0f} s"
        return None

    def kill(self, host: str, pid: int) -> bool:
        return False  # cancel(force=True) already killed the worker process

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._watch is not None:
            self._watch.stop()
        if self._started:
            ray.shutdown()


def _watch_head(address: str | None) -> HeadWatch | None:
    """Watch the Ray Client server for ``ray://`` addresses, else the head's GCS."""
    if address and address.startswith("ray://"):
        parts = urlsplit(address)
        host, port = parts.hostname, parts.port or 10001
    else:
        try:
            gcs = str(ray.get_runtime_context().gcs_address)
        except Exception:
            return None
        host, _, port_text = gcs.rpartition(":")
        port = int(port_text) if port_text.isdigit() else 0
    if not host or not port:
        return None
    return HeadWatch(host, port)


def _end_of(future: Any) -> TaskEnd:
    if future.cancelled():
        return TaskEnd(False, cancelled=True)
    error = future.exception()
    if error is None:
        return TaskEnd(True)
    name = type(error).__name__
    if name == "TaskCancelledError":
        return TaskEnd(False, error=error, cancelled=True)
    return TaskEnd(False, error=error, lost=name in _LOST)
