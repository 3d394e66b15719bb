"""Imported by the fork server in a test of ``set_forkserver_preload``.

Records each import as a line ``<pid>`` appended to the file named by the
environment variable ``PHALANX_TEST_PRELOAD_LOG`` (if set).
"""

from __future__ import annotations

import os

_log = os.environ.get("PHALANX_TEST_PRELOAD_LOG")
if _log:
    with open(_log, "a", encoding="utf-8") as _f:
        _f.write(f"{os.getpid()}\n")
