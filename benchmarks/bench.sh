#!/usr/bin/env bash
# Set up the benchmark virtualenv (nixlet editable + pylightnix 0.3.0) and run the benchmark.
# Usage (from anywhere): bash benchmarks/bench.sh [--quick] [--no-plx-1000] [--tmp DIR]
# Environment: BENCH_VENV (default: <repo>/.venv-bench), PYTHON (default: python3).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${BENCH_VENV:-$repo/.venv-bench}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
# pylightnix 0.3.0 declares no dependencies; it imports distutils, present up to Python 3.11.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$repo" "pylightnix==0.3.0"
exec "$venv/bin/python" "$repo/benchmarks/run.py" "$@"
