"""Pools on a cluster engine (Dask, Ray): the engine-neutral part (issue 15).

``backend`` runs in the pool's process and holds every policy (batching,
blame, retries, timeouts, shutdown); ``runner`` runs inside the engine's
workers; ``engine`` declares what an adapter provides; ``fake`` is an engine
for tests.  The adapters for real engines live in ``phalanx.ext``.
"""
