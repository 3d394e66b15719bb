"""The managers' machinery, behind ``phalanx.managers``.

``proxy`` is the client side (tokens, proxies, one connection per thread and
server) and the wire protocol; ``server`` the server process's side.
Importing this package loads neither.
"""
