"""Sphinx configuration for phalanx's documentation (``docs/``).

Build: ``python -m sphinx -W --keep-going -n -b html docs docs/_build/html``
(``pip install -e '.[docs]'`` first).  Warnings are errors, and ``-n`` checks
every cross-reference, so a broken link or reference fails the build.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import phalanx

project = "phalanx"
author = "the phalanx developers"
copyright = "2026, the phalanx developers"
release = phalanx.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "examples/README.md"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"phalanx {release}"
html_static_path = ["_static"]

# No intersphinx: the build runs without network; the stdlib's pages are plain links.

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
# ignore-module-all: a module's page documents what it defines (what reports it as its
# ``__module__``), not everything its ``__all__`` re-exports (the errors, say, which
# have their own page).
autodoc_default_options = {
    "members": True,
    "undoc-members": False,
    "show-inheritance": True,
    "ignore-module-all": True,
}

# -n checks every reference; these are names in signatures that have no page of
# their own (type variables, typing helpers, private aliases).
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(typing|typing_extensions|_typeshed|collections\.abc|types)\..*"),
    (r"py:.*", r"(.*[.\[ ])?_\w.*"),  # private names and type variables (_T, _Address ...)
    (r"py:.*", r"(T|S|SendT|RecvT|KT|VT)"),
    (r"py:class", r"(socket\.socket|threading\.\w+|queue\.Queue|array\.array|ctypes\.\w+)"),
    (r"py:class", r"(mmap\.mmap|os\.PathLike|logging\.Logger|weakref\.\w+|builtins\.\w+)"),
    (r"py:class", r"(concurrent\.futures\.[\w.]+|multiprocessing\.[\w.]+)"),
    (r"py:class", r"(c_\w+|ctypes\.\w+.*|ReadableBuffer|WriteableBuffer|dict\[str.*)"),
    (r"py:class", r"(Self|Any|Callable|Iterable|Iterator|Mapping|Sequence|Literal|TypeAlias)"),
    (r"py:class", r"(sys\._\w+|numpy\.\w+|np\.\w+|ModuleType|TracebackType)"),
    (r"py:exc", r"(queue\.\w+|concurrent\.futures\.[\w.]+|OSError|ValueError|TypeError)"),
]
