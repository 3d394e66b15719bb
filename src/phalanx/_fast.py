"""The optional compiled hot path, ``phalanx._speedups``, or None.

``pip install`` builds it where a C compiler exists; where it was not built,
or when the environment sets ``PHALANX_PURE_PYTHON=1``, phalanx runs the
ctypes path it replaces (same behaviour, slower locks) for what it makes.
A lock made by a process that had the extension speaks its protocol only
(see ``_semlock``): a process on the pure path that is handed one loads the
extension for it all the same (``load``), or says why it cannot.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

__all__ = ("PURE_PYTHON", "load", "speedups")

PURE_PYTHON = os.environ.get("PHALANX_PURE_PYTHON", "").strip().lower() in ("1", "true", "yes")

API_VERSION = 3  # what _speedups.c must say: another is a stale build, not used


def load() -> ModuleType | None:
    """The extension whatever ``PHALANX_PURE_PYTHON`` says, or None where it is not built."""
    try:
        # By name: a static ``from . import`` reads as an import of the package
        # itself (the layer check sees no module in a compiled file).
        __import__(f"{__package__}._speedups")
        module = sys.modules[f"{__package__}._speedups"]
    except Exception:  # not built (ImportError), or refused on this interpreter
        return None
    return module if getattr(module, "API_VERSION", None) == API_VERSION else None


speedups: ModuleType | None = None if PURE_PYTHON else load()
