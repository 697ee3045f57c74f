#!/usr/bin/env bash
# Install the peers the benchmarks measure against, into the project's virtualenv.
# vowpalwabbit and mabwiser come with the `bench` extra; obp pins torch 1.12 and Python < 3.11, so it
# is installed without its dependencies, plus the few it needs at import time (torch 2.13.0 is the
# CPU build this machine keeps on disk).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -m pip install -q -e '.[bench]'
"$PY" -m pip install -q --no-deps --ignore-requires-python obp==0.5.7
"$PY" -m pip install -q tqdm pyyaml seaborn scikit-learn torch==2.13.0
