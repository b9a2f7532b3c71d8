#!/usr/bin/env bash
# Wall time of the default study from a fresh clone: installation, then `make run`, on this machine.
# The reference is the installation measured in the same run, so the ratio shows what the study adds.
#   bash benchmarks/bench_study.sh [CLONE_DIR]
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
clone="${1:-$(mktemp -d)/partages}"
git clone -q "$src" "$clone"
cd "$clone"
# The data mirror sits beside the source checkout on offline machines; keep pointing at it.
if [ -z "${PARTAGES_MIRROR:-}" ] && [ -d "$src/../shared/data/mirror" ]; then
    export PARTAGES_MIRROR="$(cd "$src/../shared/data/mirror" && pwd)"
fi
t0=$(date +%s)
make install >/dev/null
t1=$(date +%s)
make run CONFIG=configs/default.yaml >/dev/null
t2=$(date +%s)
install_s=$((t1 - t0)); run_s=$((t2 - t1)); total_s=$((t2 - t0))
echo "install: ${install_s} s"
echo "study:   ${run_s} s ($(python3 -c "print(f'{$run_s / max($install_s, 1):.1f}')")x the installation)"
echo "total:   ${total_s} s on $(nproc) cores (target: 900 s)"
