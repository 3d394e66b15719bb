"""The ``phalanx`` command: ``python -m phalanx demo`` and the ``phalanx`` script."""

from __future__ import annotations

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
