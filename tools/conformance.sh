#!/usr/bin/env bash
# CPython's own multiprocessing suite against phalanx, scored against the stdlib.
#
#   tools/conformance.sh [CONFORMANCE_DIR]        (default: ../shared/conformance)
#
# For each (Python, start method) below: a venv with phalanx installed
# (editable, under /tmp/phalanx-conformance-<version>), the public tests of the
# suite run with `--module phalanx`, and the score "passed of the tests the
# stdlib passes" (the baseline in the conformance kit).  Prints the README's
# Compatibility table at the end.  Takes about 15 minutes on 2 cores.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
kit="$(cd "${1:-$repo/../shared/conformance}" && pwd)"
pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
runs=("3.11 fork" "3.11 spawn" "3.11 forkserver" "3.12 fork" "3.13 fork")
out="$(mktemp -d /tmp/phalanx-conformance-results.XXXXXX)"
rows=()
for run in "${runs[@]}"; do
    read -r version method <<<"$run"
    venv="/tmp/phalanx-conformance-$version"
    if [ ! -x "$venv/bin/python" ]; then
        python=$(ls -d "$pyenv_root"/versions/"$version".*/bin/python | sort -V | tail -n 1)
        "$python" -m venv "$venv"
        "$venv/bin/pip" install -q -e "$repo"
    fi
    baseline="$kit/results/baseline-multiprocessing-$version-$method.json"
    echo "== python $version, $method =="
    (cd "$kit" && python3 run.py --venv "$venv" --python "$version" --module phalanx \
        --start-method "$method" --public-only --baseline "$baseline" \
        --json "$out/$version-$method.json") | tee "$out/$version-$method.log" | tail -n 4
    score=$(grep -o "public-API conformance vs baseline: [0-9]* of [0-9]*" "$out/$version-$method.log" \
        | sed 's/.*: //')
    rows+=("| $version | $method | $score |")
done
echo
echo "| Python | start method | public tests passing (of those the stdlib passes) |"
echo "| --- | --- | --- |"
printf '%s\n' "${rows[@]}"
echo "(details: $out)"
