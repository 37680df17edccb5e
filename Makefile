# Each target does its own set-up: a machine with only python3 and make is enough.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench-sandbox bench-compare bench-scale bench-local bench-faults bench-shared bench-kills bench-incremental clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/stripe-reconcile demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n 2 --dist loadfile -m 'not serial'
	$(BIN)/python -m pytest -m serial

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench-sandbox: $(STAMP)
	$(BIN)/python bench/sandbox_bench.py

bench-compare: $(STAMP)
	$(BIN)/python bench/compare_bench.py

bench-scale: $(STAMP)
	$(BIN)/python bench/scale_bench.py
	$(BIN)/python bench/scale_bench.py --customers 20000 --only reconcile --only "reconcile again" --only card-expiry

bench-local: $(STAMP)
	$(BIN)/python bench/local_bench.py

bench-faults: $(STAMP)
	$(BIN)/python bench/fault_matrix.py

bench-shared: $(STAMP)
	$(BIN)/python bench/shared_limit_bench.py --baseline

bench-kills: $(STAMP)
	$(BIN)/python bench/kill_campaign.py

bench-incremental: $(STAMP)
	$(BIN)/python bench/incremental_bench.py

clean:
	rm -rf $(VENV) output .pytest_cache .mypy_cache .ruff_cache
