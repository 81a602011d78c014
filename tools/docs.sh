#!/usr/bin/env bash
# `make docs`: the documentation site in _docs/.
# With Quarto on the PATH: nbdev_docs (the full Quarto theme, search, README.md).
# Without it (as on these machines): tools/docs_html.py executes each notebook (skipping `slow`/`cuda`
# cells), applies nbdev's own docs processing (into _proc/, as nbdev_proc_nbs does) and builds the site with
# mkdocs-material + mkdocs-jupyter (search, top tabs, a table of contents per page) into the same page names,
# navigation in nbs/sidebar.yml order. Options (fallback only):
#   --if_stale         do nothing when _docs/ was built from the current sources
#   --executed DIR     take the notebooks `tools/run_nbs.py --to DIR` executed instead of executing them again (make test)
#   --n_workers N      notebooks built in parallel (default 2)      --timeout S   seconds per notebook (default 300)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONWARNINGS=ignore
start=$(date +%s)
if command -v quarto >/dev/null 2>&1; then
  nbdev_docs
  python tools/docs_html.py --stamp_only   # lets tests/test_docs.py know which pages to open
else
  echo "docs: quarto is not on the PATH: building the site with mkdocs-material instead (same pages and outputs)"
  python tools/docs_html.py "$@"
fi
echo "docs: done in $(( $(date +%s) - start )) s -> _docs/index.html"
