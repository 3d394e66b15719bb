"""Multi-host tests on network namespaces (tier 3 of issue 15): Dask across "hosts".

The test builds three hosts on a private bridge (``_netns.Hosts``): h1 runs
the Dask scheduler, a phalanx manager server and the driver; h2 and h3 run one
one-thread Dask worker each (under a nanny).  Skipped, saying why, without
root or ``ip``.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import _cluster_targets as t
import _netns
from _targets import TESTS_DIR

pytest.importorskip("distributed")
_why = _netns.usable()
pytestmark = [
    pytest.mark.cluster,
    pytest.mark.timeout(300),
    pytest.mark.skipif(_why is not None, reason=f"multi-host tests: {_why}"),
]

BIN = os.path.dirname(sys.executable)
KEY = secrets.token_hex(16)


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    import conftest

    hosts = _netns.Hosts()
    try:
        env = {"PYTHONPATH": TESTS_DIR, "PHALANX_AUTHKEY": KEY}
        scheduler = f"{hosts.ip['h1']}:8786"
        hosts.popen(
            "h1",
            [
                os.path.join(BIN, "dask"),
                "scheduler",
                "--host",
                hosts.ip["h1"],
                "--port",
                "8786",
                "--no-dashboard",
            ],
            env=hosts.env("h1", **env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name in ("h2", "h3"):
            hosts.popen(
                name,
                [
                    os.path.join(BIN, "dask"),
                    "worker",
                    f"tcp://{scheduler}",
                    "--nthreads",
                    "1",
                    "--nworkers",
                    "1",
                    "--host",
                    hosts.ip[name],
                    "--no-dashboard",
                    "--local-directory",
                    hosts.tmp[name],
                ],
                env=hosts.env(name, **env),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        manager = (hosts.ip["h1"], 7400)
        hosts.popen(
            "h1",
            [
                os.path.join(BIN, "phalanx"),
                "manager",
                "serve",
                "--address",
                f"{manager[0]}:{manager[1]}",
            ],
            env=hosts.env("h1", **env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for proc in hosts._procs:
            conftest.LONG_LIVED.add(proc.pid)
        yield {"hosts": hosts, "scheduler": scheduler, "manager": manager}
    finally:
        hosts.close()
        import conftest as c

        for proc in hosts._procs:
            c.LONG_LIVED.discard(proc.pid)


DRIVER = """\
import sys, time
sys.path.insert(0, {tests!r})
import distributed
import phalanx
import _cluster_targets as t
from phalanx.cluster import Dask
from phalanx.pool import WorkerLostError

client = distributed.Client("tcp://{scheduler}", timeout=60)
client.wait_for_workers(2, timeout=120)
with phalanx.Pool(backend=Dask(client=client)) as pool:
{body}
client.close()
"""


def drive(cluster: dict[str, Any], body: str, tmp_path: Path) -> list[str]:
    hosts = cluster["hosts"]
    script = tmp_path / "driver.py"
    script.write_text(
        DRIVER.format(
            tests=TESTS_DIR, scheduler=cluster["scheduler"], body=textwrap.indent(body, "    ")
        ),
        encoding="utf-8",
    )
    out = hosts.run(
        "h1",
        [sys.executable, str(script)],
        timeout=240,
        env=hosts.env("h1", PYTHONPATH=TESTS_DIR, PHALANX_AUTHKEY=KEY),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.splitlines()


def test_a_pool_runs_across_hosts_and_blames_a_killed_worker_exactly(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    hosts = cluster["hosts"]
    marks = tmp_path / "marks"
    marks.mkdir()
    h1 = hosts.ip["h1"]
    lines = drive(
        cluster,
        f"""\
print("ips", sorted(set(pool.map(t.my_ip, [{h1!r}] * 40, chunksize=1))))
try:
    pool.map(t.kill_self_on, [({str(marks)!r}, x, 13) for x in range(60)], chunksize=1)
except WorkerLostError as e:
    print("lost", e)
print("runs", max(t.runs_of({str(marks)!r}).values()))
""",
        tmp_path,
    )
    ips = eval(lines[0].split(" ", 1)[1])
    assert ips == sorted([hosts.ip["h2"], hosts.ip["h3"]])
    assert lines[1].startswith("lost") and "item 13" in lines[1], lines
    assert hosts.ip["h2"] in lines[1] or hosts.ip["h3"] in lines[1], lines[1]
    assert lines[2] == "runs 1"


def test_tasks_on_two_hosts_share_a_manager_on_a_third(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    hosts = cluster["hosts"]
    host, port = cluster["manager"]
    h1 = hosts.ip["h1"]
    lines = drive(
        cluster,
        f"""\
time.sleep(0.5)
where = pool.map(t.count_on_remote_manager, [({host!r}, {port}, 1000, {h1!r})] * 4, chunksize=1)
print("where", sorted(set(where)))
from phalanx.managers import RemoteManager
m = RemoteManager(address=({host!r}, {port}))
m.connect()
print("total", m.get_dict("counts")["n"])
print("wrong key", pool.apply(t.connect_with_wrong_key, (({host!r}, {port}),)))
""",
        tmp_path,
    )
    assert lines[1] == "total 4000", lines
    assert lines[2] == "wrong key refused", lines
    where = eval(lines[0].split(" ", 1)[1])
    assert set(where) <= {hosts.ip["h2"], hosts.ip["h3"]}


def test_retries_a_poison_item_a_timeout_a_large_array_and_a_nested_pool_across_hosts(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    poison = tmp_path / "poison"
    poison.mkdir()
    lines = drive(
        cluster,
        f"""\
import numpy as np
from phalanx.pool import TaskTimeoutError
with phalanx.Pool(backend=Dask(client=client), retries=1) as again:
    items = [({str(marks)!r}, x, 13) for x in range(40)]
    ok = again.map(t.kill_self_on, items, chunksize=1) == list(range(40))
    runs = t.runs_of({str(marks)!r})
    print("retries", ok, runs[13], max(n for x, n in runs.items() if x != 13))
client.wait_for_workers(2, timeout=120)
with phalanx.Pool(backend=Dask(client=client), retries=2) as again:
    try:
        again.apply(t.kill_self_always_on, (({str(poison)!r}, 7, 7),))
    except WorkerLostError as e:
        print("poison", "after 3 attempts" in str(e), t.runs_of({str(poison)!r})[7])
client.wait_for_workers(2, timeout=120)
with phalanx.Pool(backend=Dask(client=client, kill_overdue=True)) as timed:
    start = time.monotonic()
    try:
        timed.apply(t.sleep_then, (60,), timeout=1)
    except TaskTimeoutError as e:
        print("timeout", "was stopped" in str(e), round(time.monotonic() - start, 1) < 3)
client.wait_for_workers(2, timeout=120)
big = np.arange(64 * 1024 * 1024 // 8, dtype=np.float64).reshape(64, -1)
sums = pool.map(t.row_sum, [(big, i) for i in range(64)], chunksize=1)
print("array", sums == [float(big[i].sum()) for i in range(64)], pool._backend.store.puts)
print("nested", pool.apply(t.nested_sum, (10,)))
""",
        tmp_path,
    )
    assert lines == [
        "retries True 2 1",
        "poison True 3",
        "timeout True True",
        "array True 1",
        f"nested {sum(x * x for x in range(10))}",
    ], lines


def test_ctrl_c_to_a_driver_on_another_host_returns_within_a_second(
    cluster: dict[str, Any], tmp_path: Path
) -> None:

    hosts = cluster["hosts"]
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "driver.py"
    script.write_text(
        DRIVER.format(
            tests=TESTS_DIR,
            scheduler=cluster["scheduler"],
            body=textwrap.indent(
                f"""\
print("ready", flush=True)
try:
    pool.map(t.marked_square, [({str(marks)!r}, x, 0.2) for x in range(200)], 1)
except KeyboardInterrupt:
    print("interrupted", time.monotonic(), flush=True)
""",
                "    ",
            ),
        ),
        encoding="utf-8",
    )
    proc = hosts.popen(
        "h1",
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        env=hosts.env("h1", PYTHONPATH=TESTS_DIR, PHALANX_AUTHKEY=KEY),
    )
    t.check_ctrl_c(proc, str(marks), 2)
