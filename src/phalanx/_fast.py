"""The optional compiled hot path, ``phalanx._speedups``, or None.

``pip install`` builds it where a C compiler exists; where it was not built,
or when the environment sets ``PHALANX_PURE_PYTHON=1``, phalanx runs the
ctypes path it replaces (same behaviour, slower uncontended locks).
"""

from __future__ import annotations

import os
from types import ModuleType

__all__ = ("PURE_PYTHON", "speedups")

PURE_PYTHON = os.environ.get("PHALANX_PURE_PYTHON", "").strip().lower() in ("1", "true", "yes")

API_VERSION = 2  # what _speedups.c must say: another is a stale build, not used

speedups: ModuleType | None = None
if not PURE_PYTHON:
    try:
        from . import _speedups as speedups  # type: ignore[attr-defined,no-redef,unused-ignore]
    except Exception:  # not built (ImportError), or refused on this interpreter
        speedups = None
    if speedups is not None and getattr(speedups, "API_VERSION", None) != API_VERSION:
        speedups = None
