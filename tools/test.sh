#!/usr/bin/env bash
# What CI runs (via `make test`): sync check, notebook tests, docs build, pytest (incl. the docs browser test).
set -euo pipefail
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONWARNINGS=ignore
start=$(date +%s)
echo "== 1/4 notebooks clean and library in sync"
bash tools/check_sync.sh
python tools/readme.py --check
python tools/hoist_imports.py --check nbs/*.ipynb   # nbdev's docs build runs any cell with an import
echo "== 2/4 notebook tests (nbdev_test, CPU flags only)"
# two notebooks at a time on 2 cores: one torch thread each, or they oversubscribe the CPU several-fold
OMP_NUM_THREADS=1 nbdev_test --n_workers 2 --timing
echo "== 3/4 docs site (make docs: Quarto if installed, else mkdocs-material) for the browser test in pytest"
bash tools/install_browser.sh
bash tools/docs.sh --if_stale
echo "== 4/4 pytest"
python -m pytest -q -p no:cacheprovider --durations=12 tests
echo "make test: all green in $(( $(date +%s) - start )) s"
