"""A throwaway PostgreSQL 15 cluster that a test owns, so it can restart, crash and stop it.

The cluster itself is :class:`benchmarks.cluster.PgCluster` (initdb in a temporary directory, a
free TCP port on 127.0.0.1, the unix socket inside the directory, run as the ``postgres`` OS user
when the tests run as root); the tests' clusters add fsync and autovacuum on as in production
and small shared buffers, and log only warnings.

The shared server of the test suite (``PGJOBS_TEST_DSN``) is never touched: every command names
the cluster's own data directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks import cluster
from benchmarks.cluster import PG_BIN, available, free_port

__all__ = ["PG_BIN", "PgCluster", "available", "free_port", "pg_cluster"]

SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "autovacuum": "on",
    "shared_buffers": "'32MB'",
    # 8 workers, each with its own connection, LISTEN connection and pool of up to -c 10.
    "max_connections": "300",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %a '",
    "logging_collector": "off",
}


class PgCluster(cluster.PgCluster):
    """One PostgreSQL cluster with the tests' settings; :meth:`cleanup` stops and removes it."""

    def __init__(self, base_dir: Path | None = None) -> None:
        super().__init__(base_dir, SETTINGS)


@contextmanager
def pg_cluster(base_dir: Path | None = None, *, migrate: bool = True) -> Iterator[PgCluster]:
    """A started (and by default migrated) cluster, always stopped and removed afterwards."""
    made = PgCluster(base_dir)
    try:
        made.start()
        if migrate:
            made.migrate()
        yield made
    finally:
        made.cleanup()
