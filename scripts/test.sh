#!/usr/bin/env bash
# The whole test suite, as `make test` and CI run it. Expects the project's venv first on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
export PARTAGES_PROGRESS=0

echo "== 1/4 export: partages/ must match the notebooks"
nbdev-export
# nbdev-export also rewrites nbs/llms.txt, the module index it generates.
if [ -n "$(git status --porcelain -- partages nbs/llms.txt)" ]; then
    git status --porcelain -- partages nbs/llms.txt
    git --no-pager diff --stat -- partages nbs/llms.txt
    echo "FAILED: partages/ differs from what the notebooks export; run nbdev-export and commit" >&2
    exit 1
fi

echo "== 2/4 clean: notebooks must be clean"
nbdev-clean
if [ -n "$(git status --porcelain -- nbs)" ]; then
    git status --porcelain -- nbs
    echo "FAILED: nbdev-clean changed the notebooks above; run nbdev-clean and commit" >&2
    exit 1
fi

echo "== 3/4 notebook tests and pytest"
nbdev-test --n-workers 2 --timing
python -m pytest -q tests

echo "== 4/4 documentation site and browser check"
python scripts/build_docs.py
python scripts/check_docs.py
