# The two commands of the README's quick start: `make serve` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup serve test test-unit lint

setup:
	@bash scripts/setup.sh
	@$(PY) -m local_engine.native.build || echo "setup: native kernels not built; the engine uses its torch path"

# make serve [PORT=8000] [HOST=127.0.0.1] [CONFIG=policy.yaml] [WORKERS=N, default one per core]
serve: setup
	$(VENV)/bin/hybridgw serve $(if $(PORT),--port $(PORT)) $(if $(HOST),--host $(HOST)) $(if $(CONFIG),--config $(CONFIG)) $(if $(WORKERS),--workers $(WORKERS))

# Tests run on TEST_WORKERS processes (pytest-xdist), a whole test file on one worker, files handed out
# in collection order (a worker never goes back to a directory it left): a directory's package-scoped
# processes start at most once per worker.
# `make test TEST_WORKERS=0` runs them in this process, one after the other.
TEST_WORKERS ?= 2
XDIST := $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

# lint first (seconds), then the whole suite; the log ends with its 25 slowest tests
test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -p no:cacheprovider --durations=25 $(XDIST) $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest -q tests/unit

lint: setup
	$(VENV)/bin/ruff check .
