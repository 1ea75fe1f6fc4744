# The two commands of the README's quick start, and the checks behind them.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test check lint system-deps deploy-assets clean

# What the exporter needs to run, and no more (the demo's set-up).
$(BIN)/.installed-run: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

# Everything the tests and linters need besides.
$(BIN)/.installed-test: $(BIN)/.installed-run
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

## demo: install the exporter and run it against its built-in simulated CCE API
demo: $(BIN)/.installed-run
	$(BIN)/cce-job-exporter --demo

## system-deps: install the real programs the tests use (promtool, ...)
system-deps:
	.ci/install-system-deps

## lint: ruff and mypy
lint: $(BIN)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## check: lint and the fast tiers (unit, integration), for the edit loop
check: lint
	$(BIN)/pytest -q tests/unit tests/integration

## test: install everything the tests need, then lint and run the whole suite
test: $(BIN)/.installed-test system-deps lint
	$(BIN)/pytest --cov --cov-report=term

## deploy-assets: copy the alerting rules and the dashboard into deploy/kubernetes/prometheus-operator/
deploy-assets: $(BIN)/.installed-run
	$(BIN)/python deploy/sync_assets.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage test-artifacts
