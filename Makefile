PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test lint demo bench chaos failover soak

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Installs the package (editable) with its test and dev extras, then runs the whole suite against
# PGJOBS_TEST_DSN, else a Docker Postgres, else an embedded one (see tests/conftest.py): the tests
# that share the machine well on TEST_PROCESSES processes side by side, then those that time a
# latency or a delay (marked serial) alone. Both parts run; either failing fails the target.
TEST_PROCESSES ?= 2
test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	status=0; \
	$(BIN)/pytest -m 'not serial' -n $(TEST_PROCESSES) $(ARGS) || status=$$?; \
	$(BIN)/pytest -m serial $(ARGS) || status=$$?; \
	exit $$status

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

# The benchmark suite on a throwaway PostgreSQL 15 cluster of its own with default settings
# (autovacuum on, as in production); --dsn or $$PGJOBS_BENCH_DSN picks an existing server instead.
# ARGS are passed through: make bench ARGS="--peers", ARGS="--quick --only drain".
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

# Failover on a real HA engine: Patroni and etcd (Debian's packages, installed if missing) run two
# PostgreSQL 15 nodes in synchronous replication on free ports in a temp dir, never the shared
# server. Each round kills the primary's postmaster (then its whole host) mid-drain, with a
# producer enqueueing; prints the figures. `make failover FAILOVER_ROUNDS=1 ARGS='--fault host'`.
FAILOVER_ROUNDS ?= 3
failover: $(BIN)/python
	command -v patroni >/dev/null && command -v etcd >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq patroni etcd-server >/dev/null; }
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m tests.failover --rounds $(FAILOVER_ROUNDS) $(ARGS)

# The soak: W=2 workers x 10 on a throwaway PostgreSQL 15 cluster (initdb in a temp dir, default
# settings, autovacuum on; never the shared server) for MINUTES: half the drain rate it measures
# first in steady enqueues, 20 jobs every second, 2,000 schedules every minute, pruning on a short
# retention; prints per window the claim latency, table size, dead tuples, schedule lag and worker
# RSS beside their targets. `make soak MINUTES=3`, `make soak ARGS='--cold-start --explain'`.
MINUTES ?= 30
soak: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/python -m benchmarks.soak --minutes $(MINUTES) $(ARGS)
