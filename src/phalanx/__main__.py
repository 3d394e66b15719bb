"""The ``phalanx`` command (also ``python -m phalanx``).

``phalanx demo [--method M]`` runs the tutorial's first example under each
start method (or just ``M``): the parent prints its module name, parent pid and
pid, then a child does the same and says hello.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import phalanx


def info(title: str) -> None:
    print(title, flush=True)
    print("module name:", __name__, flush=True)
    print("parent process:", os.getppid(), flush=True)
    print("process id:", os.getpid(), flush=True)


def f(name: str) -> None:
    info("function f")
    print("hello", name, flush=True)


def demo(methods: Sequence[str]) -> int:
    for method in methods:
        ctx = phalanx.get_context(method)
        print(f"=== start method: {method} ===", flush=True)
        info("main line")
        p = ctx.Process(target=f, args=("bob",))
        p.start()
        p.join(timeout=60)
        if p.exitcode != 0:
            print(f"child failed under {method}: exitcode {p.exitcode}", file=sys.stderr)
            return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="phalanx", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo_parser = sub.add_parser("demo", help="run the tutorial's first example")
    demo_parser.add_argument(
        "--method",
        choices=phalanx.get_all_start_methods(),
        help="only this start method (default: all of them)",
    )
    args = parser.parse_args(argv)
    if args.command == "demo":
        methods = [args.method] if args.method else phalanx.get_all_start_methods()
        return demo(methods)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
