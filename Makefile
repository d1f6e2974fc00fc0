PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test lint demo bench chaos

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Installs the package (editable) with its test and dev extras, then runs the whole suite against
# PGJOBS_TEST_DSN, else a Docker Postgres, else an embedded one (see tests/conftest.py).
test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	$(BIN)/pytest

lint: $(BIN)/python
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy pgjobs
	$(BIN)/lint-imports

# Everything a fresh machine needs: a virtualenv with pgjobs and its embedded PostgreSQL, then the
# demo until Ctrl-C. Options go in ARGS, e.g. `make demo ARGS='--workers 4'`.
demo: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[embedded]'
	$(BIN)/pgjobs demo $(ARGS)

# The benchmark suite against the PostgreSQL at $$PGJOBS_BENCH_DSN (default 127.0.0.1:5432, user
# postgres); ARGS are passed through: make bench ARGS="--peers", ARGS="--quick --only drain".
bench: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/python -m benchmarks $(ARGS)

# Chaos rounds: real workers against a throwaway PostgreSQL 15 cluster (initdb in a temp dir,
# never the shared server) through restarts, crashes, terminations, start storms, a black-holed
# network and a 30 s outage; prints a table per fault. `make chaos ROUNDS=3 ARGS='--only crash'`.
ROUNDS ?= 20
chaos: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m tests.chaos --rounds $(ROUNDS) $(ARGS)
