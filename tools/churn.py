"""Another program beside the test suite: churns /dev/shm and processes until stopped.

The suite must judge only what it created itself (issue 14).  This loop, run
beside it, creates and removes ``/dev/shm`` entries of other names (plain
segments and POSIX-semaphore-like ``sem.*`` files, some left for a while),
starts and stops child processes (some killed, some left to exit, some
grandchildren that outlive their parent), and opens and closes listening
ports.  Run it as::

    python tools/churn.py --seconds 3600 &      # then run the suite; kill it after

It stops by itself after ``--seconds``, on SIGTERM/SIGINT, or when the
process that started it exits (``--parent``), and removes what it created.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import time

SHM = "/dev/shm"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3600.0)
    parser.add_argument("--parent", type=int, default=0, help="stop when this pid is gone")
    args = parser.parse_args()
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    tag = f"churn-{os.getpid()}"
    rng = random.Random(os.getpid())
    files: list[str] = []
    children: list[subprocess.Popen[bytes]] = []
    sockets: list[socket.socket] = []
    deadline = time.monotonic() + args.seconds
    rounds = 0
    try:
        while not stop and time.monotonic() < deadline:
            if args.parent and not _alive(args.parent):
                break
            rounds += 1
            # /dev/shm: new entries of other programs' names, old ones removed.
            for _ in range(rng.randint(1, 4)):
                prefix = rng.choice(["", "sem.", "psm-other-", "wnsm_"])
                path = os.path.join(SHM, f"{prefix}{tag}-{rounds}-{rng.randrange(1 << 30):x}")
                try:
                    with open(path, "wb") as f:
                        f.truncate(rng.choice([0, 32, 4096, 1 << 16]))
                    files.append(path)
                except OSError:
                    pass
            while len(files) > 20 or (files and rng.random() < 0.5):
                _remove(files.pop(rng.randrange(len(files))))
            # Processes: some exit, some are killed, some leave an orphan behind.
            kind = rng.random()
            if kind < 0.4:
                cmd = ["sleep", f"{rng.uniform(0.05, 0.5):.2f}"]
            elif kind < 0.7:
                cmd = [sys.executable, "-c", "import time; time.sleep(0.3)"]
            else:
                cmd = ["sh", "-c", "sleep 0.4 & exit 0"]  # the grandchild is orphaned
            children.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL))
            for child in list(children):
                if child.poll() is not None:
                    children.remove(child)
                elif rng.random() < 0.2:
                    child.kill()
                    child.wait()
                    children.remove(child)
            # Ports: a listener now and then, closed a little later.
            if rng.random() < 0.3:
                sock = socket.socket()
                sock.bind(("127.0.0.1", 0))
                sock.listen()
                sockets.append(sock)
            while len(sockets) > 5:
                sockets.pop(0).close()
            time.sleep(rng.uniform(0.01, 0.1))
    finally:
        for child in children:
            child.kill()
            child.wait()
        for sock in sockets:
            sock.close()
        for path in files:
            _remove(path)
    print(f"churn: {rounds} rounds", file=sys.stderr)
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


if __name__ == "__main__":
    sys.exit(main())
