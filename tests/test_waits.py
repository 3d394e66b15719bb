"""Waiting on a busy machine (issue 16): a waiter polls before sleeping only while
a CPU is free for it (``_platform.spare_cpu``), and every wait still works when
none is.  Speed is measured by ``benchmarks/`` (``--busy``), never here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

import phalanx
from _targets import DEADLINE
from phalanx import _platform

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="spare_cpu() counts runnable tasks on Linux only"
)


@pytest.fixture
def hogs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """More CPU-bound processes than CPUs, killed on the way out."""
    yes = shutil.which("yes")
    if yes is None:
        pytest.skip("needs the yes command")
    procs = [
        subprocess.Popen([yes], stdout=subprocess.DEVNULL) for _ in range((os.cpu_count() or 1) + 1)
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(DEADLINE)


@linux_only
def test_no_spare_cpu_while_more_cpu_bound_processes_than_cpus_run(
    hogs: list[subprocess.Popen[bytes]],
) -> None:
    deadline = time.monotonic() + DEADLINE
    while _platform.spare_cpu():
        assert time.monotonic() < deadline, "spare_cpu() stayed True beside the CPU-bound hogs"
        time.sleep(0.01)


def _report_spare_cpu(conn: Any) -> None:
    answers = []
    for _ in range(20):  # the answer of an idle machine too, whatever else runs now
        time.sleep(_platform._linux._SPARE_CPU_EVERY)
        answers.append(_platform.spare_cpu())
    conn.send(any(answers))


@linux_only
@pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2 if hasattr(os, "sched_getaffinity") else True,
    reason="needs two CPUs to take one away",
)
def test_no_spare_cpu_for_a_process_held_to_one_cpu() -> None:
    """Under ``taskset -c 0`` (or a one-CPU cpuset) the process a waiter waits for
    shares its only CPU: polling would keep it from running."""
    ctx = phalanx.get_context("fork")
    ours, theirs = ctx.Pipe()
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})  # the forked child inherits one CPU
    try:
        child = ctx.Process(target=_report_spare_cpu, args=(theirs,))
        child.start()
    finally:
        os.sched_setaffinity(0, before)
    try:
        assert ours.poll(DEADLINE)
        assert ours.recv() is False
    finally:
        child.join(DEADLINE)
    assert child.exitcode == 0


@linux_only
@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        (b"max 100000\n", float("inf")),
        (b"50000 100000\n", 0.5),
        (b"400000 100000\n", 4.0),
        (b"garbage\n", float("inf")),
    ],
)
def test_a_cgroup_quota_is_read_as_cpus(tmp_path: Any, text: bytes, cpus: float) -> None:
    path = tmp_path / "cpu.max"
    path.write_bytes(text)
    assert _platform._linux._cgroup_quota_cpus(str(path)) == cpus
    assert _platform._linux._cgroup_quota_cpus(str(tmp_path / "absent")) == float("inf")


def _echo(q_in: Any, q_out: Any, n: int) -> None:
    for _ in range(n):
        q_out.put(q_in.get(timeout=DEADLINE))


def _pipe_echo(conn: Any, n: int) -> None:
    for _ in range(n):
        conn.send(conn.recv())


def test_round_trips_complete_beside_cpu_bound_processes(
    hogs: list[subprocess.Popen[bytes]],
) -> None:
    """Queue and Pipe ping-pong while no CPU is spare: the waits sleep on their
    doorbell or socket and are woken by the sender."""
    n = 200
    ctx = phalanx.get_context("fork")
    q_in = ctx.Queue()
    q_out = ctx.Queue()
    ours, theirs = ctx.Pipe()
    workers = [
        ctx.Process(target=_echo, args=(q_in, q_out, n)),
        ctx.Process(target=_pipe_echo, args=(theirs, n)),
    ]
    for w in workers:
        w.start()
    try:
        for i in range(n):
            q_in.put(i)
            assert q_out.get(timeout=DEADLINE) == i
            ours.send(i)
            assert ours.poll(DEADLINE)
            assert ours.recv() == i
    finally:
        for w in workers:
            w.join(DEADLINE)
            if w.exitcode is None:
                w.kill()
                w.join(DEADLINE)
    assert [w.exitcode for w in workers] == [0, 0]
