"""Charts for the documentation's performance page, from ``benchmarks/ --json`` results.

    python tools/bench_charts.py docs/perf/*.json --out docs/_static/perf

Each results file is one run of one benchmark script (``--json PATH``): its
condition (idle or busy), and per case the median time of each library.  For
each file this draws one horizontal bar chart: per case, every library's time
relative to the stdlib's (the stdlib at 1.0; shorter is faster), and writes
``<benchmark>-<condition>.png`` into ``--out``.  ``--check`` draws nothing and
only validates the files (CI runs it on the committed results).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

COLOURS = {
    "stdlib": "#9e9e9e",
    "phalanx": "#1565c0",
    "loky": "#ef6c00",
    "pebble": "#6a1b9a",
    "concurrent.futures": "#2e7d32",
}


def load(path: Path) -> dict[str, Any]:
    """A results file, checked: benchmark, condition, and cases timing the stdlib."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    for key in ("benchmark", "condition", "cases"):
        if key not in data:
            raise ValueError(f"{path}: no {key!r} (not a benchmarks/ --json file?)")
    if data["condition"] not in ("idle", "busy"):
        raise ValueError(f"{path}: condition {data['condition']!r} is not idle or busy")
    for case in data["cases"]:
        seconds = case.get("seconds", {})
        if "stdlib" not in seconds or "phalanx" not in seconds:
            raise ValueError(f"{path}: case {case.get('name')!r} lacks the stdlib or phalanx")
        for library, value in seconds.items():
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ValueError(f"{path}: {case['name']!r}: {library} took {value!r}")
    return data


def draw(data: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = data["cases"]
    libraries = [lib for lib in COLOURS if any(lib in c["seconds"] for c in cases)]
    # One bar per library a case has, grouped by case (no gaps for the missing ones).
    bars: dict[str, tuple[list[float], list[float]]] = {lib: ([], []) for lib in libraries}
    ticks, y = [], 0.0
    for case in cases:
        present = [lib for lib in libraries if lib in case["seconds"]]
        ticks.append(y + (len(present) - 1) / 2)
        for lib in present:
            bars[lib][0].append(y)
            bars[lib][1].append(case["seconds"][lib] / case["seconds"]["stdlib"])
            y += 1
        y += 0.8  # between cases
    fig, ax = plt.subplots(figsize=(8, 0.22 * y + 1.4))
    for library in libraries:
        ys, widths = bars[library]
        drawn = ax.barh(ys, widths, height=0.85, color=COLOURS[library], label=library)
        ax.bar_label(drawn, labels=[f"{w:.2f}" for w in widths], padding=3, fontsize=7)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(ticks)
    ax.set_yticklabels([case["name"] for case in cases], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("time relative to the stdlib's multiprocessing (shorter is faster)")
    ax.set_title(f"{data['benchmark']}: {data['condition']}, {data.get('machine', '')}", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{data['benchmark']}-{data['condition']}.png"
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="benchmarks/ --json files")
    parser.add_argument("--out", type=Path, default=Path("docs/_static/perf"))
    parser.add_argument("--check", action="store_true", help="validate only, draw nothing")
    args = parser.parse_args(argv)
    try:
        loaded = [load(path) for path in args.results]
    except (ValueError, OSError) as exc:
        print(f"bench_charts: {exc}", file=sys.stderr)
        return 1
    for data in loaded:
        if args.check:
            print(f"ok: {data['benchmark']} ({data['condition']}), {len(data['cases'])} cases")
        else:
            print(draw(data, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
