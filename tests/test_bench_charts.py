"""``tools/bench_charts.py``: the performance page's charts, from benchmarks' ``--json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import bench_charts

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "perf"


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_the_committed_results_are_valid() -> None:
    files = sorted(RESULTS.glob("*.json"))
    assert files, RESULTS
    assert bench_charts.main(["--check", *map(str, files)]) == 0
    conditions = {bench_charts.load(f)["condition"] for f in files}
    assert conditions == {"idle", "busy"}


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ({"benchmark": "b", "condition": "idle"}, "no 'cases'"),
        ({"benchmark": "b", "condition": "lazy", "cases": []}, "is not idle or busy"),
        (
            {
                "benchmark": "b",
                "condition": "idle",
                "cases": [{"name": "x", "seconds": {"stdlib": 1}}],
            },
            "lacks the stdlib or phalanx",
        ),
        (
            {
                "benchmark": "b",
                "condition": "busy",
                "cases": [{"name": "x", "seconds": {"stdlib": 1.0, "phalanx": 0}}],
            },
            "phalanx took 0",
        ),
    ],
)
def test_a_bad_results_file_is_refused_with_the_reason(
    tmp_path: Path, data: object, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench_charts.main(["--check", str(_write(tmp_path, data))]) == 1
    assert why in capsys.readouterr().err


def test_a_chart_is_drawn_per_file(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    data = {
        "benchmark": "bench_demo",
        "condition": "busy",
        "cases": [
            {"name": "a", "seconds": {"stdlib": 2.0, "phalanx": 1.0, "loky": 3.0}},
            {"name": "b", "seconds": {"stdlib": 1.0, "phalanx": 1.5}},
        ],
    }
    out = tmp_path / "charts"
    assert bench_charts.main([str(_write(tmp_path, data)), "--out", str(out)]) == 0
    chart = out / "bench_demo-busy.png"
    assert chart.read_bytes().startswith(b"\x89PNG")
