#!/usr/bin/env bash
# Run every benchmark with its defaults; expects the project's venv first on PATH (`make bench` does this).
set -euo pipefail
cd "$(dirname "$0")/.."
python benchmarks/bench_noise.py
python benchmarks/bench_train.py --threads 1
bash benchmarks/bench_study.sh
