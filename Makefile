# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Each creates .venv (if needed) and installs the package with everything it needs, at the versions
# in constraints.txt (the library itself declares ranges: settings.ini).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast nbtest pytest sync docs outputs bench clean

$(STAMP): settings.ini setup.py constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

## The main job on the embedded tiny default: data -> LoRA finetune -> eval -> merge -> predict
## (again: replaces the previous demo_out; the console script alone refuses to, without --overwrite).
demo: install
	$(BIN)/llava_lora_demo --output_dir demo_out --overwrite

## Everything CI runs (every notebook executed once, the docs site built from those copies, pytest on two workers);
## it ends with the ten slowest notebooks and tests.
test: install
	PATH="$(abspath $(BIN)):$$PATH" bash tools/test.sh

## The developer's loop (a few minutes): sync check, every notebook's cells in-process, the unit-level tests.
test-fast: install
	PATH="$(abspath $(BIN)):$$PATH" bash tools/test.sh --fast

## Pieces of `make test`, for development.
sync: install
	PATH="$(abspath $(BIN)):$$PATH" bash tools/check_sync.sh
nbtest: install
	$(BIN)/nbdev_test --n_workers 2 --timing
pytest: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadgroup tests

docs: install
	PATH="$(abspath $(BIN)):$$PATH" bash tools/docs.sh

## Re-execute the notebooks in place, so the outputs committed with them (plots, tables) show on GitHub.
outputs: install
	PATH="$(abspath $(BIN)):$$PATH" OMP_NUM_THREADS=1 $(BIN)/python tools/run_nbs.py

bench: install
	PATH="$(abspath $(BIN)):$$PATH" bash bench/run_all.sh

clean:
	rm -rf _docs _docs.tmp-* _docs.src-* _docs.old-* _proc _exec demo_out
