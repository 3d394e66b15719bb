"""The ``phalanx`` command: ``python -m phalanx demo`` and the ``phalanx`` script."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import _targets
from _targets import START_METHODS


def _sections(stdout: str) -> dict[str, str]:
    """Split the demo's output into {start method: its section}."""
    parts = re.split(r"^=== start method: (\w+) ===$", stdout, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _check_all_methods(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("hello bob") == 3
    sections = _sections(result.stdout)
    assert list(sections) == _default_order()
    for method, text in sections.items():
        assert text.count("hello bob") == 1, method
        assert text.count("function f") == 1, method


def _default_order() -> list[str]:
    code = "import phalanx; print(*phalanx.get_all_start_methods())"
    order = _targets.run_python(["-c", code]).stdout.split()
    assert sorted(order) == sorted(START_METHODS)
    return order


def test_demo_every_method() -> None:
    _check_all_methods(_targets.run_python(["-m", "phalanx", "demo"], timeout=120))


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_demo_one_method(method: str) -> None:
    result = _targets.run_python(["-m", "phalanx", "demo", "--method", method], timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("hello bob") == 1
    assert list(_sections(result.stdout)) == [method]
    # The main line, then the child, each report their pid and their parent's.
    pids = [int(x) for x in re.findall(r"^process id: (\d+)$", result.stdout, re.MULTILINE)]
    parents = re.findall(r"^parent process: (\d+)$", result.stdout, re.MULTILINE)
    assert len(pids) == len(parents) == 2
    if method != "forkserver":  # a forkserver child's parent is the server
        assert int(parents[1]) == pids[0]


def test_demo_rejects_unknown_method() -> None:
    result = _targets.run_python(["-m", "phalanx", "demo", "--method", "nope"])
    assert result.returncode == 2
    assert "'nope'" in result.stderr


def test_console_script_demo() -> None:
    script = Path(sys.executable).parent / "phalanx"
    if not script.exists():
        found = shutil.which("phalanx")
        if found is None:
            pytest.skip("the phalanx console script is not installed")
        script = Path(found)
    # run_python runs sys.executable: give it the script to run.
    _check_all_methods(_targets.run_python([str(script), "demo"], timeout=120))


# --- what the demo adds ------------------------------------------------------------------


def test_demo_shows_a_pool_surviving_a_killed_worker_and_a_timeout() -> None:
    result = _targets.run_python(["-m", "phalanx", "demo", "--method", "spawn"], timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "=== what phalanx adds (spawn) ===" in out
    assert re.search(r"^  task 5 failed: WorkerLostError: .*SIGKILL", out, re.MULTILINE), out
    assert "  results: [0, 1, 4, 9, 16, 'lost', 36, 49]" in out
    assert "the pool carries on: map(abs, [-1, -2]) = [1, 2]" in out
    took = re.search(r"^  failed after (\d+\.\d) s: TaskTimeoutError", out, re.MULTILINE)
    assert took and float(took.group(1)) < 10, out
    assert "the pool carries on: apply(pow, (2, 10)) = 1024" in out


# --- --version, --help, no command ----------------------------------------------------------


def test_version() -> None:
    import phalanx

    result = _targets.run_python(["-m", "phalanx", "--version"])
    assert (result.returncode, result.stdout) == (0, f"phalanx {phalanx.__version__}\n")


def test_help_says_what_the_tool_is_and_lists_the_commands() -> None:
    result = _targets.run_python(["-m", "phalanx", "--help"])
    assert result.returncode == 0, result.stderr
    assert "process-based parallelism with the API of multiprocessing" in result.stdout
    for command in ("demo", "info", "bench", "manager"):
        assert re.search(rf"^    {command} ", result.stdout, re.MULTILINE), command
    assert "Traceback" not in result.stderr


def test_no_command_is_a_usage_error() -> None:
    result = _targets.run_python(["-m", "phalanx"])
    assert result.returncode == 2
    assert "usage: phalanx" in result.stderr and "Traceback" not in result.stderr


# --- info -----------------------------------------------------------------------------------


def _info(env: dict[str, str] | None = None) -> dict[str, str]:
    result = _targets.run_python(["-m", "phalanx", "info"], env=env)
    assert result.returncode == 0, result.stderr
    rows = {}
    for line in result.stdout.splitlines():
        name, _, value = line.partition("  ")
        rows[name.strip()] = value.strip()
    return rows


def test_info_describes_this_installation() -> None:
    import platform

    import phalanx
    import phalanx._fast

    rows = _info()
    assert list(rows) == [
        "phalanx", "python", "platform", "cpus", "start methods", "fast path", "pidfd",
        "memfd", "robust mutexes", "/dev/shm",
    ]  # fmt: skip
    assert rows["phalanx"] == phalanx.__version__
    assert rows["python"].startswith(platform.python_version())
    default = _targets.run_python(["-c", "import phalanx; print(phalanx.get_start_method())"])
    assert rows["start methods"].endswith(f"(default: {default.stdout.strip()})")
    assert set(START_METHODS) <= set(rows["start methods"].split(" (")[0].split(", "))
    compiled = phalanx._fast.speedups is not None
    assert rows["fast path"].startswith("compiled" if compiled else "pure Python")
    assert rows["pidfd"].startswith("yes")  # Linux 5.3 and later: every CI machine
    assert rows["memfd"].startswith("yes")
    assert re.fullmatch(r"\d+\.\d \w+ \(\d+\.\d \w+ free\).*", rows["/dev/shm"]), rows


def test_info_says_when_the_pure_path_is_forced() -> None:
    rows = _info(env={**os.environ, "PHALANX_PURE_PYTHON": "1"})
    assert rows["fast path"] == "pure Python (PHALANX_PURE_PYTHON=1 is set)"


# --- bench ----------------------------------------------------------------------------------

BENCH_CASES = [
    "Lock acquire+release",
    "Value += 1 under its lock, 2 processes",
    "Queue, small ints one way",
    "Queue ping-pong (round trip)",
    "Pipe ping-pong (round trip)",
    "Process start and join",
    "Pool(2) start to first result",
    "Pool.map identity, 200k ints",
    "Pool.apply_async (per task)",
    "Manager() start",
    "Manager dict set+get",
]


def test_bench_prints_a_table_of_ratios() -> None:
    result = _targets.run_python(
        ["-m", "phalanx", "bench", "--rounds", "1", "--method", "fork"], timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("phalanx ") and "start method fork" in lines[0]
    assert lines[1].split() == ["case", "multiprocessing", "phalanx", "time", "ratio"]
    rows = lines[2:-1]
    assert [re.split(r"\s{2,}", row)[0] for row in rows] == BENCH_CASES
    for row in rows:
        stdlib, ours, ratio = re.split(r"\s{2,}", row.strip())[1:]
        assert re.fullmatch(r"[\d.]+ (s|ms|us|ns)", stdlib), row
        assert re.fullmatch(r"[\d.]+ (s|ms|us|ns)", ours), row
        assert float(ratio) > 0, row
    assert lines[-1].startswith("time ratio: phalanx's time over the stdlib's")


def test_bench_rejects_zero_rounds() -> None:
    result = _targets.run_python(["-m", "phalanx", "bench", "--rounds", "0"])
    assert result.returncode == 2
    assert "--rounds must be at least 1 (got 0)" in result.stderr
    assert "Traceback" not in result.stderr


def test_bench_reports_a_failing_round_in_one_line(tmp_path: Path) -> None:
    # A module that shadows the stdlib's in the bench's children: its round fails.
    (tmp_path / "multiprocessing.py").write_text("raise ImportError('shadowed for a test')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = _targets.run_python(["-m", "phalanx", "bench", "--rounds", "1"], env=env, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "phalanx bench: multiprocessing failed (exit status 1): ImportError: shadowed for a test"
    ]


# --- manager serve: its error paths (serving is tested in test_managers.py) -------------------


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``phalanx manager serve ARGS``; with no ``env``, in ours without ``PHALANX_AUTHKEY``."""
    if env is None:
        env = {k: v for k, v in os.environ.items() if k != "PHALANX_AUTHKEY"}
    return _targets.run_python(["-m", "phalanx", "manager", "serve", *args], env=env)


def _one_line_error(result: subprocess.CompletedProcess[str], status: int = 2) -> str:
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "serving" not in result.stdout
    return lines[0]


def test_serve_with_a_missing_authkey_file_is_a_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-key"
    line = _one_line_error(_serve("--address", "127.0.0.1:0", "--authkey-file", str(missing)))
    assert line == (
        f"phalanx manager serve: cannot read the authkey file '{missing}': "
        "No such file or directory"
    )


def test_serve_with_an_empty_authkey_file_is_a_one_line_error(tmp_path: Path) -> None:
    empty = tmp_path / "key"
    empty.write_text("\n")
    line = _one_line_error(_serve("--address", "127.0.0.1:0", "--authkey-file", str(empty)))
    assert line == f"phalanx manager serve: the authkey file '{empty}' is empty"


def test_serve_without_any_authkey_says_where_to_put_one() -> None:
    line = _one_line_error(_serve("--address", "127.0.0.1:0"))
    assert line.startswith("phalanx manager serve: no authkey: put one in the PHALANX_AUTHKEY")


def test_serve_on_a_port_in_use_is_a_one_line_error() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _serve(
            "--address", f"127.0.0.1:{port}", env={**os.environ, "PHALANX_AUTHKEY": "k" * 16}
        )
    line = _one_line_error(result)
    assert (
        line == f"phalanx manager serve: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


@pytest.mark.parametrize("address", ["nope", "host:", "127.0.0.1:99999"])
def test_serve_with_a_bad_address_is_a_usage_error(address: str) -> None:
    result = _serve("--address", address)
    assert result.returncode == 2
    assert f"expected HOST:PORT (got {address!r})" in result.stderr
    assert "Traceback" not in result.stderr
