# mlplatform: `make run` serves on the embedded defaults; `make test` runs the whole suite on real services.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint typecheck format services unit clean prometheus k8s-tools nginx container-tools \
	ui-assets chromium

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "mlplatform needs Python >= 3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,tensorflow]'
	touch $(STAMP)

install: $(STAMP) ui-assets

run: install
	$(BIN)/mlplatform serve

services: install
	bash scripts/services.sh

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: install
	$(BIN)/mypy src

format: install
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

# Test files run on PYTEST_WORKERS processes (pytest-xdist), each file's tests in one of them (module fixtures such as
# a Dask LocalCluster are not started twice); every test has its own schema, key prefix, folder and ports.
PYTEST_WORKERS ?= 2
test: install services prometheus k8s-tools nginx container-tools chromium lint typecheck
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile

# --- tools the tests run, installed when missing (Debian packages through apt-get) ---
# promtool and the Prometheus server (Debian's `prometheus`) for the alert-rule, dashboard and scrape tests.
prometheus:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || \
		$(APT_GET) install -y --no-install-recommends prometheus || \
		($(APT_GET) update && $(APT_GET) install -y --no-install-recommends prometheus)

# The load balancer of the scale-out test (tests/e2e/test_scale_out.py runs it itself, on loopback).
nginx:
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || $(APT_GET) install -y nginx || \
		($(APT_GET) update && $(APT_GET) install -y nginx)

# tests/e2e/test_container.py serves as `nobody` (setpriv) in a mount namespace (unshare, mount): util-linux, mount.
container-tools:
	@command -v setpriv >/dev/null && command -v unshare >/dev/null || $(APT_GET) install -y util-linux \
		|| ($(APT_GET) update && $(APT_GET) install -y util-linux)
	@command -v mount >/dev/null || $(APT_GET) install -y mount || ($(APT_GET) update && $(APT_GET) install -y mount)

# --- the web console's browser-side files: htmx and uPlot from their npm packages (versions pinned by
# ui/package-lock.json), copied into the package (gitignored; the wheel ships them: pyproject `artifacts`), and
# axe-core, which only the browser tests inject. Node.js is needed to build, never to run.
UI_CACHE := .cache/ui-assets
UI_VENDOR := src/mlplatform/ui/static/vendor
UI_MODULES := $(UI_CACHE)/node_modules

$(UI_VENDOR)/.installed-stamp: ui/package.json ui/package-lock.json
	@command -v npm >/dev/null || $(APT_GET) install -y nodejs npm || ($(APT_GET) update && $(APT_GET) install -y nodejs npm)
	rm -rf $(UI_CACHE) && mkdir -p $(UI_CACHE)
	cp ui/package.json ui/package-lock.json $(UI_CACHE)/
	cd $(UI_CACHE) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	rm -rf $(UI_VENDOR) && mkdir -p $(UI_VENDOR)
	cp $(UI_MODULES)/htmx.org/dist/htmx.min.js $(UI_MODULES)/uplot/dist/uPlot.iife.min.js \
		$(UI_MODULES)/uplot/dist/uPlot.min.css $(UI_VENDOR)/
	cp $(UI_MODULES)/htmx.org/LICENSE $(UI_VENDOR)/LICENSE-htmx.txt
	cp $(UI_MODULES)/uplot/LICENSE $(UI_VENDOR)/LICENSE-uplot.txt
	touch $@

ui-assets: $(UI_VENDOR)/.installed-stamp

# The browser tests (tests/e2e/test_ui_browser.py) drive Debian's Chromium through Playwright, never a browser
# Playwright downloads.
chromium:
	@command -v chromium >/dev/null || $(APT_GET) install -y --no-install-recommends chromium || \
		($(APT_GET) update && $(APT_GET) install -y --no-install-recommends chromium)

unit: install
	$(BIN)/pytest tests/unit

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .cache src/mlplatform/ui/static/vendor

# --- what tests/deploy/test_k8s_manifests.py checks the custom resources of deploy/k8s against: the DaskCluster
# CRD from the dask-kubernetes wheel (read in place, never installed: its `dask` CLI plugin would load on every
# `dask worker`), and prometheus-operator's ServiceMonitor schema from npm (run by Node.js).
K8S_TOOLS := .cache/k8s-tools
DASK_KUBERNETES_VERSION := 2026.3.0
K8S_VALIDATORS := tests/deploy/validators

$(K8S_TOOLS)/.installed-stamp: $(K8S_VALIDATORS)/package.json $(K8S_VALIDATORS)/package-lock.json Makefile
	@command -v npm >/dev/null || $(APT_GET) install -y nodejs npm || ($(APT_GET) update && $(APT_GET) install -y nodejs npm)
	rm -rf $(K8S_TOOLS) && mkdir -p $(K8S_TOOLS)
	cp $(K8S_VALIDATORS)/package.json $(K8S_VALIDATORS)/package-lock.json $(K8S_TOOLS)/
	cd $(K8S_TOOLS) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	$(BIN)/python -m pip download --quiet --no-deps --dest $(K8S_TOOLS) dask-kubernetes==$(DASK_KUBERNETES_VERSION)
	touch $@

k8s-tools: $(STAMP) $(K8S_TOOLS)/.installed-stamp

# --- bench: mlplatform against Seldon MLServer 1.7.1 under wrk, same box, same run (benchmarks/README.md) ---
# `make bench` takes about 11 minutes on 2 cores, `make bench-quick` about 4. MLServer has its own venv; its ML libraries
# are pinned to the versions in $(VENV), so both servers load the very same model files the same way.
MLSERVER_VENV ?= .venv-mlserver
MLSERVER_STAMP := $(MLSERVER_VENV)/.installed-stamp
MLSERVER_PACKAGES := mlserver==1.7.1 mlserver-sklearn==1.7.1 mlserver-xgboost==1.7.1 mlserver-lightgbm==1.7.1 \
	'uvloop<0.22'
APT_GET ?= apt-get
BENCH_ARGS ?=
# Expanded only when the recipe runs, once $(VENV) exists.
SAME_ML_AS_VENV = $(shell $(BIN)/python -c 'import numpy, sklearn, xgboost, lightgbm; \
	print(f"numpy=={numpy.__version__} scikit-learn=={sklearn.__version__} \
	xgboost=={xgboost.__version__} lightgbm=={lightgbm.__version__}")')

.PHONY: bench bench-quick bench-wrk bench-monitoring bench-monitoring-quick bench-training bench-training-quick

bench-wrk:
	@command -v wrk >/dev/null || $(APT_GET) install -y wrk || ($(APT_GET) update && $(APT_GET) install -y wrk)

$(MLSERVER_STAMP): Makefile $(STAMP)
	@$(PYTHON) -c 'import sys; sys.exit(0 if (3, 9) <= sys.version_info[:2] <= (3, 12) else \
		"MLServer 1.7.1 needs Python 3.9 to 3.12: make bench PYTHON=python3.12")'
	test -x $(MLSERVER_VENV)/bin/python || $(PYTHON) -m venv $(MLSERVER_VENV)
	$(MLSERVER_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MLSERVER_VENV)/bin/python -m pip install --quiet $(MLSERVER_PACKAGES) $(SAME_ML_AS_VENV)
	$(MLSERVER_VENV)/bin/mlserver --help >/dev/null
	touch $(MLSERVER_STAMP)

bench: install bench-wrk $(MLSERVER_STAMP)
	$(BIN)/python benchmarks/serving.py $(BENCH_ARGS)

bench-quick:
	$(MAKE) bench BENCH_ARGS=--quick

# Feedback ingestion (PostgreSQL, SQLite, plain COPY), one drift check on one core, predict with monitoring on and
# off, same run (benchmarks/monitoring.py): about 3 minutes, `bench-monitoring-quick` about 1. Needs PostgreSQL at
# 127.0.0.1:5432, database `test` (or BENCH_ARGS="--postgres DSN").
bench-monitoring: install bench-wrk
	$(BIN)/python benchmarks/monitoring.py $(BENCH_ARGS)

bench-monitoring-quick:
	$(MAKE) bench-monitoring BENCH_ARGS=--quick

# Training jobs against the libraries called directly, POST to first progress update, and a dataset past one Dask
# worker's memory limit failing on one worker and training on two (benchmarks/training.py): the memory case needs
# about 6 GB of free memory (two 3 GB workers) and 2.3 GB of temporary disk; `bench-training-quick` uses a tenth
# of the rows elsewhere and two 2.5 GB workers there (about 5 GB of memory, 1.9 GB of disk).
bench-training: install
	$(BIN)/python benchmarks/training.py $(BENCH_ARGS)

bench-training-quick:
	$(MAKE) bench-training BENCH_ARGS=--quick
