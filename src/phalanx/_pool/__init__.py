"""The pool's engine, behind ``phalanx.pool`` and ``phalanx.futures``.

``results`` holds the chunks and the results callers wait on; ``backend`` is
the interface the fronts use; ``supervisor`` runs chunks on worker processes
(``worker`` is the other end of each link, ``protocol`` what travels on it,
``blame`` the pure decisions about a dead worker's chunks); ``threads`` runs
them on threads of this process; ``progress`` draws bars.  Importing this
package loads none of them: a spawned worker imports only ``worker`` and
what it needs.
"""
