#!/usr/bin/env bash
# What CI runs (via `make test`): sync check, notebook tests, docs build + browser test, pytest.
set -euo pipefail
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONWARNINGS=ignore
start=$(date +%s)
echo "== 1/3 notebooks clean and library in sync"
bash tools/check_sync.sh
python tools/readme.py --check
echo "== 2/3 notebook tests (nbdev_test, CPU flags only)"
nbdev_test --n_workers 2 --timing
echo "== 3/3 pytest"
python -m pytest -q -p no:cacheprovider tests
echo "make test: all green in $(( $(date +%s) - start )) s"
