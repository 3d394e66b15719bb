"""Hosts for multi-host tests: network namespaces the test builds and tears down itself.

Each host is a network namespace with one interface on a private bridge (in a
namespace of its own: nothing of the machine's own network is touched), an
address of a /24 chosen at random in 10.0.0.0/8, no route out, and a
temporary directory of its own (``TMPDIR``: unix sockets and scratch files of
one host never meet another's).  Processes are started with ``ip netns exec``
and killed by pid (``ip netns pids``); ``close()`` always removes everything.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any


def usable() -> str | None:
    """Why hosts cannot be built here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    probe = f"phxprobe{os.getpid()}"
    try:
        subprocess.run(["ip", "netns", "add", probe], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"ip netns add fails here: {exc}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class Hosts:
    def __init__(self, names: tuple[str, ...] = ("h1", "h2", "h3")) -> None:
        # Unique enough that a namespace left by a killed earlier run (same pid
        # reused) is never met; interface names stay within 15 characters.
        self.tag = f"phx{os.getpid() % 100000}{random.randrange(0x10000):04x}"
        subnet = f"10.{random.randrange(100, 250)}.{random.randrange(256)}"
        self.switch = f"{self.tag}sw"
        self.ns: dict[str, str] = {}
        self.ip: dict[str, str] = {}
        self.tmp: dict[str, str] = {}
        self._procs: list[subprocess.Popen[Any]] = []
        try:
            _ip("netns", "add", self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            for i, name in enumerate(names):
                ns = f"{self.tag}{name}"
                _ip("netns", "add", ns)
                self.ns[name] = ns
                a, b = f"{self.tag}{i}a", f"{self.tag}{i}b"
                _ip("link", "add", a, "type", "veth", "peer", "name", b)
                _ip("link", "set", a, "netns", ns)
                _ip("link", "set", b, "netns", self.switch)
                _ip("-n", self.switch, "link", "set", b, "master", "br0", "up")
                address = f"{subnet}.{i + 1}"
                _ip("-n", ns, "addr", "add", f"{address}/24", "dev", a)
                _ip("-n", ns, "link", "set", a, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                self.ip[name] = address
                self.tmp[name] = tempfile.mkdtemp(prefix=f"{ns}-")
        except BaseException:
            self.close()
            raise

    def env(self, name: str, **extra: str) -> dict[str, str]:
        return {**os.environ, "TMPDIR": self.tmp[name], **extra}

    def popen(self, name: str, args: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        env = kwargs.pop("env", None) or self.env(name)
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns[name], *args], env=env, **kwargs)
        self._procs.append(proc)
        return proc

    def run(self, name: str, args: list[str], timeout: float, **kwargs: Any) -> Any:
        env = kwargs.pop("env", None) or self.env(name)
        return subprocess.run(
            ["ip", "netns", "exec", self.ns[name], *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )

    def cut(self, name: str) -> None:
        """Take ``name`` off the network, the way a host loses power: no FIN, no RST."""
        index = list(self.ns).index(name)
        _ip("-n", self.ns[name], "link", "set", f"{self.tag}{index}a", "down")

    def pids(self, name: str) -> list[int]:
        out = subprocess.run(
            ["ip", "netns", "pids", self.ns[name]], capture_output=True, text=True, timeout=30
        )
        return [int(p) for p in out.stdout.split()]

    def kill_all(self, name: str) -> None:
        for _ in range(50):
            pids = self.pids(name)
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)

    def close(self) -> None:
        for name in list(self.ns):
            try:
                self.kill_all(name)
            except Exception:
                pass
        for proc in self._procs:
            try:
                proc.wait(10)
            except Exception:
                pass
            for stream in (proc.stdout, proc.stderr, proc.stdin):
                if stream is not None:
                    stream.close()
        for ns in [*self.ns.values(), self.switch]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for path in self.tmp.values():
            shutil.rmtree(path, ignore_errors=True)
