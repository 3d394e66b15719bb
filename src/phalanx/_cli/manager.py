"""``phalanx manager serve``: a ``RemoteManager`` server for clients on other machines.

The key comes from ``--authkey-file`` or the ``PHALANX_AUTHKEY`` environment
variable, never from the command line, where other users could read it.  On
start the server prints where it listens and how a client connects.
"""

from __future__ import annotations

import argparse
import os

AUTHKEY_ENV = "PHALANX_AUTHKEY"


class UsageError(Exception):
    """A mistake on the command line: printed as one line, exit status 2."""


def authkey(path: str | None) -> bytes:
    if path is not None:
        try:
            with open(path, "rb") as f:
                key = f.read().rstrip(b"\r\n")
        except OSError as exc:
            raise UsageError(f"cannot read the authkey file {path!r}: {exc.strerror}") from None
        if not key:
            raise UsageError(f"the authkey file {path!r} is empty")
        return key
    key = os.environb.get(AUTHKEY_ENV.encode(), b"")
    if not key:
        raise UsageError(
            f"no authkey: put one in the {AUTHKEY_ENV} environment variable or in a file "
            "given with --authkey-file (never on the command line)"
        )
    return key


def address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (got {text!r})")
    return host.strip("[]") or "127.0.0.1", int(port)


def serve(where: tuple[str, int], key_file: str | None) -> int:
    from ..managers import RemoteManager

    key = authkey(key_file)
    try:
        server = RemoteManager(address=where, authkey=key).get_server()
    except OSError as exc:
        raise UsageError(f"cannot listen on {where[0]}:{where[1]}: {exc.strerror}") from None
    host, port = server.address[:2]
    wildcard = host in ("0.0.0.0", "::", "")
    shown = "HOST" if wildcard else host
    print(f"phalanx manager serving on {host}:{port}", flush=True)
    print(
        "connect from Python, with the same key:\n"
        "    from phalanx.managers import RemoteManager\n"
        f"    manager = RemoteManager(address=({shown!r}, {port}), authkey=KEY)\n"
        "    manager.connect()\n"
        "    shared = manager.get_dict('results')   # the same dict for every client\n"
        + ("(HOST: this machine's name or address, as the clients reach it)\n" if wildcard else "")
        + f"(KEY: the bytes in the key file, or ${AUTHKEY_ENV}; RemoteManager reads "
        f"${AUTHKEY_ENV} itself when authkey is not given)",
        flush=True,
    )
    server.serve_forever()
    return 0  # pragma: no cover - serve_forever exits the process
