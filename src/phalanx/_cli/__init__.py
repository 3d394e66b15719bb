"""The ``phalanx`` command's subcommands, one module each (``phalanx.__main__`` parses).

``demo`` shows processes under each start method and what phalanx adds;
``info`` describes this installation; ``bench`` compares phalanx with the
stdlib on this machine; ``manager`` serves shared objects over TCP.
"""
