# The two commands of the README's quick start: `make serve` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup serve test test-unit bench

setup:
	@bash scripts/setup.sh

serve: setup
	$(VENV)/bin/hybridgw serve

test: setup
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest -q tests/unit
