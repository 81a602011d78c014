# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Each creates .venv (if needed) and installs the package with everything it needs, at the versions
# in constraints.txt (the library itself declares ranges: settings.ini).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test nbtest pytest sync docs outputs bench clean

$(STAMP): settings.ini setup.py constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

## The main job on the embedded tiny default: data -> LoRA finetune -> eval -> merge -> predict
## (again: replaces the previous demo_out; the console script alone refuses to, without --overwrite).
demo: install
	$(BIN)/llava_lora_demo --output_dir demo_out --overwrite

## Everything CI runs.
test: install
	PATH="$(abspath $(BIN)):$$PATH" bash tools/test.sh

## Pieces of `make test`, for development.
sync: install
	PATH="$(abspath $(BIN)):$$PATH" bash tools/check_sync.sh
nbtest: install
	$(BIN)/nbdev_test --n_workers 2 --timing
pytest: install
	$(BIN)/python -m pytest -q tests

docs: install
	PATH="$(abspath $(BIN)):$$PATH" bash tools/docs.sh

## Re-execute the notebooks in place, so the outputs committed with them (plots, tables) show on GitHub.
outputs: install
	PATH="$(abspath $(BIN)):$$PATH" OMP_NUM_THREADS=1 $(BIN)/python tools/run_nbs.py

bench: install
	PATH="$(abspath $(BIN)):$$PATH" bash bench/run_all.sh

clean:
	rm -rf _docs _docs.tmp-* _docs.src-* _docs.old-* _proc demo_out
