"""One small Popen class per start method, all with the protocol of ``process.Popen``.

Loaded lazily by the context layer, so a program that only forks never
imports the spawn or forkserver machinery.
"""
