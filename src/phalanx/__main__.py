"""The ``phalanx`` command (also ``python -m phalanx``).

``phalanx demo [--method M]`` runs the tutorial's first example under each
start method (or just ``M``): the parent prints its module name, parent pid and
pid, then a child does the same and says hello.

``phalanx manager serve --address HOST:PORT [--authkey-file PATH]`` runs a
manager server (``phalanx.managers.RemoteManager``) that clients on other
machines reach with the same authkey.  The key comes from the file, or from
the ``PHALANX_AUTHKEY`` environment variable; never from the command line,
where other users could read it.
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


AUTHKEY_ENV = "PHALANX_AUTHKEY"


def _authkey(path: str | None) -> bytes:
    if path is not None:
        with open(path, "rb") as f:
            key = f.read().rstrip(b"\r\n")
    else:
        key = os.environb.get(AUTHKEY_ENV.encode(), b"")
    if not key:
        raise SystemExit(
            f"phalanx manager serve: no authkey. Put one in the {AUTHKEY_ENV} environment "
            "variable or in a file given with --authkey-file (never on the command line)."
        )
    return key


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (got {text!r})")
    return host.strip("[]") or "127.0.0.1", int(port)


def serve_manager(address: tuple[str, int], authkey: bytes) -> int:
    from .managers import RemoteManager

    server = RemoteManager(address=address, authkey=authkey).get_server()
    host, port = server.address[:2]
    print(f"phalanx manager serving on {host}:{port}", flush=True)
    server.serve_forever()
    return 0  # pragma: no cover - serve_forever exits the process


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="phalanx", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo_parser = sub.add_parser("demo", help="run the tutorial's first example")
    demo_parser.add_argument(
        "--method",
        choices=phalanx.get_all_start_methods(),
        help="only this start method (default: all of them)",
    )
    manager_parser = sub.add_parser("manager", help="run a manager server")
    manager_sub = manager_parser.add_subparsers(dest="action", required=True)
    serve_parser = manager_sub.add_parser("serve", help="serve shared objects over TCP")
    serve_parser.add_argument("--address", type=_address, required=True, help="HOST:PORT")
    serve_parser.add_argument("--authkey-file", help=f"file holding the key (else ${AUTHKEY_ENV})")
    args = parser.parse_args(argv)
    if args.command == "manager":
        return serve_manager(args.address, _authkey(args.authkey_file))
    if args.command == "demo":
        methods = [args.method] if args.method else phalanx.get_all_start_methods()
        return demo(methods)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
