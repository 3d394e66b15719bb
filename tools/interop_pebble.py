"""Run pebble's own process tests against phalanx contexts, and against the stdlib's.

    python tools/interop_pebble.py PEBBLE_TEST_DIR [--method fork|spawn|forkserver]
        [--library phalanx|multiprocessing] [--suite process_pool,concurrent_process,...]

pebble's test modules build their pools on a module-level ``mp_context``
(``multiprocessing.get_context(method)``); with ``--library phalanx`` it is
replaced by ``phalanx.get_context(method)`` before the tests run, nothing else.
Prints one line per test that did not pass and a summary line:
``<suite> <method> <library>: N run, P passed, F failed, E errors, S skipped``.
The test files come from pebble's source distribution (``pip download pebble
--no-binary :all:``); nothing of pebble is kept in this repository.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import sys
import unittest
from pathlib import Path


def load(test_dir: Path, name: str) -> object:
    path = test_dir / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _flatten(suite: unittest.TestSuite) -> list[unittest.TestCase]:
    out: list[unittest.TestCase] = []
    for item in suite:
        out.extend(_flatten(item) if isinstance(item, unittest.TestSuite) else [item])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("test_dir", type=Path)
    parser.add_argument("--method", default="fork")
    parser.add_argument("--library", default="phalanx", choices=["phalanx", "multiprocessing"])
    parser.add_argument("--suite", default="process_pool")
    parser.add_argument("--only", default=None, help="run only tests whose id contains this")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the tracebacks")
    args = parser.parse_args()
    sys.path.insert(0, str(args.test_dir))
    failures = 0
    for suite in args.suite.split(","):
        module = load(args.test_dir, f"test_{suite}_{args.method}")
        if args.library == "phalanx":
            import phalanx

            module.mp_context = phalanx.get_context(args.method)  # type: ignore[attr-defined]
        tests = unittest.defaultTestLoader.loadTestsFromModule(module)
        if args.only:
            tests = unittest.TestSuite(t for t in _flatten(tests) if args.only in t.id())
        result = unittest.TextTestRunner(stream=io.StringIO(), verbosity=0).run(tests)
        for test, trace in result.failures:
            print(f"FAIL  {test.id()}" + (f"\n{trace}" if args.verbose else ""))
        for test, trace in result.errors:
            print(f"ERROR {test.id()}" + (f"\n{trace}" if args.verbose else ""))
        passed = result.testsRun - len(result.failures) - len(result.errors) - len(result.skipped)
        print(
            f"{suite} {args.method} {args.library}: {result.testsRun} run, {passed} passed, "
            f"{len(result.failures)} failed, {len(result.errors)} errors, "
            f"{len(result.skipped)} skipped",
            flush=True,
        )
        failures += len(result.failures) + len(result.errors)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
