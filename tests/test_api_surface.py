"""The public API, name by name, against the running Python's ``multiprocessing``.

For every public name of the stdlib's package and of its documented
submodules, phalanx has the same name; for every public callable, class and
public method of a public class, a compatible signature:

* the same parameters, in the same order, with the same names, kinds and
  defaults;
* extensions only as extra keyword-only parameters with a default (or
  ``**kwargs``);
* a parameter the stdlib requires may have a default in phalanx (every call
  that works with the stdlib still works).

Differences that are deliberate are listed in ``ALLOWED`` with the reason.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import Any

import pytest

SUBMODULES = (
    "",
    ".connection",
    ".context",
    ".dummy",
    ".dummy.connection",
    ".managers",
    ".pool",
    ".process",
    ".queues",
    ".reduction",
    ".shared_memory",
    ".sharedctypes",
    ".synchronize",
    ".util",
)

# Deliberate differences: (module suffix, qualified name) -> why.
ALLOWED: dict[tuple[str, str], str] = {
    # The stdlib's private _after_fork/_reset helpers and C-level details are
    # not part of the documented surface; nothing is listed yet.
}


def _public_names(module: Any) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    return sorted(n for n in names if not inspect.ismodule(getattr(module, n, None)))


def _documented_module_names(module: Any) -> list[str]:
    """Public names defined by the module itself (not imported from elsewhere)."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return sorted(names)
    own = []
    for name, value in vars(module).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        origin = getattr(value, "__module__", module.__name__)
        if origin is None or origin.startswith(module.__name__.split(".")[0]):
            own.append(name)
    return sorted(own)


def _signature(obj: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return None


def _compatible(std: inspect.Signature, ours: inspect.Signature) -> str | None:
    """None if ``ours`` accepts every call ``std`` does (see the module docstring)."""
    sp = list(std.parameters.values())
    op = list(ours.parameters.values())
    if len(op) < len(sp):
        return f"fewer parameters: stdlib {std}, phalanx {ours}"
    for a, b in zip(sp, op, strict=False):
        if (a.name, a.kind) != (b.name, b.kind):
            return f"parameter {a.name!r} ({a.kind}) vs {b.name!r} ({b.kind})"
        if a.default is not inspect.Parameter.empty and a.default != b.default:
            return f"default of {a.name!r}: stdlib {a.default!r}, phalanx {b.default!r}"
    for extra in op[len(sp) :]:
        if extra.kind == inspect.Parameter.VAR_KEYWORD:
            continue
        if extra.kind != inspect.Parameter.KEYWORD_ONLY or extra.default is inspect.Parameter.empty:
            return f"extra parameter {extra.name!r} is not keyword-only with a default"
    return None


def _pairs() -> list[tuple[str, str]]:
    out = []
    for suffix in SUBMODULES:
        std = importlib.import_module("multiprocessing" + suffix)
        for name in _documented_module_names(std):
            out.append((suffix, name))
    return out


@pytest.mark.parametrize("suffix", SUBMODULES)
def test_module_exists(suffix: str) -> None:
    importlib.import_module("phalanx" + suffix)


def test_package_all_matches() -> None:
    import multiprocessing

    import phalanx

    assert sorted(phalanx.__all__) == sorted(multiprocessing.__all__)


@pytest.mark.parametrize(("suffix", "name"), _pairs(), ids=lambda v: v or "phalanx")
def test_name_and_signature(suffix: str, name: str) -> None:
    std_mod = importlib.import_module("multiprocessing" + suffix)
    our_mod = importlib.import_module("phalanx" + suffix)
    std_obj = getattr(std_mod, name)
    if (suffix, name) in ALLOWED:
        pytest.skip(ALLOWED[(suffix, name)])
    assert hasattr(our_mod, name), f"phalanx{suffix} lacks {name}"
    our_obj = getattr(our_mod, name)
    if not callable(std_obj):
        return
    problems = []
    std_sig, our_sig = _signature(std_obj), _signature(our_obj)
    if std_sig is not None:
        assert our_sig is not None, f"phalanx{suffix}.{name} has no signature"
        why = _compatible(std_sig, our_sig)
        if why:
            problems.append(f"{name}: {why}")
    if inspect.isclass(std_obj) and inspect.isclass(our_obj):
        for attr, std_member in vars(std_obj).items():
            if attr.startswith("_") or (suffix, f"{name}.{attr}") in ALLOWED:
                continue
            if not callable(std_member) and not isinstance(std_member, property):
                continue
            our_member = inspect.getattr_static(our_obj, attr, None)
            if our_member is None:
                problems.append(f"{name}.{attr} is missing")
                continue
            if isinstance(std_member, property) or not callable(std_member):
                continue
            std_m = _signature(getattr(std_obj, attr))
            our_m = _signature(getattr(our_obj, attr))
            if std_m is None or our_m is None:
                continue
            why = _compatible(std_m, our_m)
            if why:
                problems.append(f"{name}.{attr}: {why}")
    assert not problems, f"python {sys.version_info[:2]}: " + "; ".join(problems)
