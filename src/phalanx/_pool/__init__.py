"""The pool's engine, behind ``phalanx.pool`` and ``phalanx.futures``.

``results`` holds the chunks and the results callers wait on; ``backend`` is
the interface the fronts use; ``supervisor`` (with ``worker`` on the other end
of each link, and ``blame`` for the pure decisions about a dead worker's
chunks) runs them on processes, ``threads`` on threads of this process;
``progress`` draws bars.  Importing this package loads none of them: a spawned
worker imports only ``worker`` and what it needs.
"""
