# digitops: `make run` runs the KFP pipeline locally on the defaults; `make test` runs every test.
# Both create .venv and install the pinned environment (requirements.lock) first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DIGITOPS := $(BIN)/digitops

.PHONY: install run stages compile test test-fast lint format bench lock clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@# The browser tests drive Debian's chromium (Playwright never downloads browsers here).
	command -v chromium >/dev/null || { apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# The compiled pipeline (prepare -> tune -> train -> evaluate, explain, drift -> register) with the
# KFP local runner.
run: install
	$(DIGITOPS) pipeline run

# The same stages called directly, without KFP.
stages: install
	$(DIGITOPS) prepare
	$(DIGITOPS) tune
	$(DIGITOPS) train --params artifacts/tune
	$(DIGITOPS) evaluate
	$(DIGITOPS) explain
	$(DIGITOPS) drift --model artifacts/model
	$(DIGITOPS) register --drift artifacts/drift

compile: install
	$(DIGITOPS) pipeline compile

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow and not e2e"

lint: install
	$(BIN)/ruff check src tests benchmarks manifests/aws scripts
	$(BIN)/ruff format --check src tests benchmarks manifests/aws scripts
	$(BIN)/mypy src
	$(DIGITOPS) pipeline compile >/dev/null && git diff --exit-code -- pipelines components

format: install
	$(BIN)/ruff check --fix src tests benchmarks manifests/aws scripts
	$(BIN)/ruff format src tests benchmarks manifests/aws scripts

bench: install
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/serve_latency.py
	$(BIN)/python benchmarks/lambda_cold_start.py

# Re-pin after changing dependencies in pyproject.toml (keeps torch on the CPU build).
lock: install
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	{ head -3 requirements.lock; $(BIN)/python -m pip freeze --exclude-editable \
	  | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) artifacts mlflow.db mlruns lightning_logs .pytest_cache .ruff_cache .mypy_cache
