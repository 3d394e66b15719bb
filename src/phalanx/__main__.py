"""phalanx: process-based parallelism with the API of multiprocessing.

Commands:
  phalanx demo [--method M]        processes under each start method, then a pool
                                   surviving a killed worker and a task timeout
  phalanx info                     this installation: versions, start methods,
                                   the OS features and fast path in use
  phalanx bench [--method M]       phalanx against the stdlib's multiprocessing
                                   on this machine (under a minute)
  phalanx manager serve --address HOST:PORT [--authkey-file PATH]
                                   serve shared objects (a RemoteManager) over TCP

Also run as ``python -m phalanx``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import phalanx


def _parser() -> argparse.ArgumentParser:
    from ._cli import manager

    parser = argparse.ArgumentParser(
        prog="phalanx",
        description="phalanx: process-based parallelism with the API of multiprocessing.",
        epilog="Run 'phalanx COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"phalanx {phalanx.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    methods = phalanx.get_all_start_methods()
    demo = sub.add_parser(
        "demo",
        help="show processes, then a pool surviving a killed worker and a timeout",
        description="Runs the tutorial's first example under each start method, then shows "
        "a pool carrying on after one of its workers is killed in the middle of a map, "
        "and after a task overruns its per-task timeout.",
    )
    demo.add_argument("--method", choices=methods, help="only this start method (default: all)")
    sub.add_parser(
        "info",
        help="describe this installation (versions, start methods, OS features in use)",
        description="Prints the versions of phalanx and Python, the start methods and the "
        "default one, which OS features phalanx uses here (pidfd, memfd, robust mutexes), "
        "whether the compiled fast path is in use, and the size of /dev/shm.",
    )
    bench = sub.add_parser(
        "bench",
        help="compare phalanx with the stdlib's multiprocessing on this machine",
        description="Runs the same small workloads with phalanx and with the stdlib's "
        "multiprocessing, each in fresh interpreters, and prints their median times and "
        "ratios. Takes under a minute.",
    )
    bench.add_argument("--method", choices=methods, help="start method (default: the default)")
    bench.add_argument("--rounds", type=int, default=5, help="rounds per library (default: 5)")
    mgr = sub.add_parser("manager", help="run a manager server")
    mgr_sub = mgr.add_subparsers(dest="action", required=True, metavar="ACTION")
    serve = mgr_sub.add_parser(
        "serve",
        help="serve shared objects over TCP",
        description="Runs a RemoteManager server: clients on other machines connect with the "
        "same key and share dicts, lists, queues, namespaces and locks by name. The key "
        f"comes from --authkey-file or ${manager.AUTHKEY_ENV}, never the command line.",
    )
    serve.add_argument("--address", type=manager.address, required=True, help="HOST:PORT")
    serve.add_argument(
        "--authkey-file", help=f"file holding the key (default: ${manager.AUTHKEY_ENV})"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from ._cli import demo

            return demo.run([args.method] if args.method else phalanx.get_all_start_methods())
        if args.command == "info":
            from ._cli import info

            return info.run()
        if args.command == "bench":
            from ._cli import bench

            if args.rounds < 1:
                parser.error(f"--rounds must be at least 1 (got {args.rounds})")
            try:
                return bench.run(args.method, args.rounds)
            except bench.BenchError as exc:
                print(f"phalanx bench: {exc}", file=sys.stderr)
                return 1
        if args.command == "manager":
            from ._cli import manager

            try:
                return manager.serve(args.address, args.authkey_file)
            except manager.UsageError as exc:
                print(f"phalanx manager serve: {exc}", file=sys.stderr)
                return 2
    except KeyboardInterrupt:
        return 130
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
