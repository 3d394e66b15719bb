"""Running a ``Pool`` (or ``ProcessPoolExecutor``) on a cluster engine: ``backend=``.

``Pool(backend=...)`` takes one of:

* ``"dask"``: the current ``distributed.Client``, else a ``LocalCluster``
  that phalanx starts and stops; ``"dask://HOST:PORT"``: that scheduler;
* ``"ray"``: the Ray already initialized, else a local one phalanx starts;
  ``"ray://HOST:PORT"``: a Ray Client address, as ``ray.init`` takes it;
* ``Dask(...)`` or ``Ray(...)`` below, for options;
* any object implementing ``phalanx._cluster.engine.Engine`` (tests use a
  fake engine).

The engines are imported only here, only when named (``pip install
phalanx[dask]`` / ``phalanx[ray]``): ``import phalanx`` and local pools never
import them.  phalanx shuts down only what it started.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ClusterSemanticsWarning

__all__ = ("ClusterSemanticsWarning", "Dask", "Ray", "engine_for")


@dataclass
class Dask:
    """Options of a pool on Dask distributed.

    ``client``: a ``distributed.Client`` to use (else the current one, else a
    ``LocalCluster`` phalanx starts with ``n_workers``/``threads_per_worker``);
    ``address``: a scheduler's address instead.  ``kill_overdue``: a task
    over its ``timeout=`` kills its worker process (its nanny restarts it)
    even on a cluster phalanx did not start; off by default, because other
    clients' work on that worker would be lost.
    """

    client: Any = None
    address: str | None = None
    n_workers: int | None = None
    threads_per_worker: int = 1
    kill_overdue: bool = False

    def engine(self) -> Any:
        from .ext.dask import DaskEngine

        return DaskEngine(self)


@dataclass
class Ray:
    """Options of a pool on Ray.

    ``address``: as ``ray.init`` takes it (``"ray://HOST:PORT"`` for Ray
    Client); None: the Ray already initialized in this process, else a local
    one phalanx starts (``num_cpus``).  ``remote_args``: options for every
    task (``{"num_cpus": 1}``, ``{"num_gpus": 1}``, resources ...).
    """

    address: str | None = None
    num_cpus: int | None = None
    remote_args: dict[str, Any] = field(default_factory=dict)

    def engine(self) -> Any:
        from .ext.ray import RayEngine

        return RayEngine(self)


_ENGINE_METHODS = ("capacity", "hub_host", "submit", "cancel", "kill", "close")


def engine_for(backend: Any) -> Any:
    """The engine adapter that ``backend=`` names (see the module docstring)."""
    if isinstance(backend, str):
        scheme, _, rest = backend.partition("://")
        if backend == "dask":
            return Dask().engine()
        if scheme == "dask" and rest:
            return Dask(address=f"tcp://{rest}" if "://" not in rest else rest).engine()
        if backend == "ray":
            return Ray().engine()
        if scheme == "ray" and rest:
            return Ray(address=backend).engine()
        raise ValueError(
            f"unknown backend {backend!r}: use 'dask', 'dask://HOST:PORT', 'ray', "
            "'ray://HOST:PORT', or a phalanx.cluster.Dask(...)/Ray(...) object"
        )
    if isinstance(backend, (Dask, Ray)):
        return backend.engine()
    if all(callable(getattr(backend, name, None)) for name in _ENGINE_METHODS):
        return backend
    raise TypeError(
        f"backend must be a string ('dask', 'ray', 'dask://HOST:PORT', 'ray://HOST:PORT') or "
        f"a phalanx.cluster.Dask/Ray object (got {backend!r})"
    )
