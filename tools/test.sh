#!/usr/bin/env bash
# What CI runs (via `make test`): sync check, every notebook executed once, the docs site built from those executed
# copies, pytest (two workers; the Run-All and docs browser tests read the same copies), then where the time went.
#   bash tools/test.sh          everything (make test)
#   bash tools/test.sh --fast   the developer's loop (make test-fast): sync check, the notebooks' cells in-process
#                               (nbdev_test, CPU flags only) and the unit-level tests (pytest -m "not e2e"): a few minutes
set -euo pipefail
cd "$(dirname "$0")/.."
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONWARNINGS=ignore
# two notebooks or two test workers at a time on 2 cores: one torch thread each, or they oversubscribe the CPU several-fold
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
WORKERS=${TEST_WORKERS:-2}
OUT=_exec                          # executed notebooks, timings and the pytest report of the last run (git-ignored)
start=$(date +%s); mkdir -p $OUT; : > $OUT/stages.tsv
stage() { echo "$1	$(( $(date +%s) - t0 ))" >> $OUT/stages.tsv; }

t0=$(date +%s)
echo "== 1/4 notebooks clean and library in sync"
bash tools/check_sync.sh
python tools/readme.py --check
python tools/hoist_imports.py --check nbs/*.ipynb   # nbdev's docs processing runs any cell with an import
stage sync

if [ "${1:-}" = "--fast" ]; then
  t0=$(date +%s)
  echo "== 2/3 notebook cells in-process (nbdev_test, CPU flags only)"
  nbdev_test --n_workers $WORKERS --timing
  stage notebooks
  t0=$(date +%s)
  echo "== 3/3 unit-level tests (pytest -m 'not e2e')"
  python -m pytest -q -p no:cacheprovider -n $WORKERS -m 'not e2e' --durations=5 tests
  stage pytest
  echo "make test-fast: all green in $(( $(date +%s) - start )) s"
  exit 0
fi

# the docs browser test's Chromium (apt on a fresh machine: mostly download, ~25 s) comes while the notebooks run
bash tools/install_browser.sh > $OUT/install_browser.log 2>&1 & browser=$!

t0=$(date +%s)
echo "== 2/4 every notebook executed once (CPU flags only; the tutorial as JupyterLab's Run All) -> $OUT/"
python tools/run_nbs.py --to $OUT --run_all nbs/10_tutorial.ipynb --n_workers $WORKERS
stage notebooks

# DeepSpeed compiles its CPU shared-memory op (deepspeed_shm_comm: ~30 s, once per machine) when the first DeepSpeed run
# starts, and every DeepSpeed test waits for it; the docs build below keeps one core busy, so it is built on the other.
MAX_JOBS=1 python -c "from deepspeed.accelerator import get_accelerator as a; a().create_op_builder('ShareMemCommBuilder').load(verbose=False)" \
  > $OUT/deepspeed_shm_op.log 2>&1 & ds_op=$!

t0=$(date +%s)
echo "== 3/4 docs site from the executed notebooks (make docs: Quarto if installed, else mkdocs-material)"
wait $browser || { cat $OUT/install_browser.log >&2; exit 1; }
cat $OUT/install_browser.log
bash tools/docs.sh --if_stale --executed $OUT
stage docs
wait $ds_op || echo "(DeepSpeed's shm op did not build ahead: $OUT/deepspeed_shm_op.log; the DeepSpeed tests build it themselves)"

t0=$(date +%s)
echo "== 4/4 pytest ($WORKERS workers)"
python -m pytest -q -p no:cacheprovider -n $WORKERS --dist loadgroup --junitxml=$OUT/pytest.xml -o junit_family=xunit1 tests
stage pytest

total=$(( $(date +%s) - start ))
python tools/test_report.py $OUT $total
echo "make test: all green in $total s"
