"""``pgjobs metrics``: a Prometheus exporter of the whole cluster, read from the database."""

from __future__ import annotations

import logging
import threading

import click
import psycopg

from pgjobs.backoff import wait_for_database
from pgjobs.db import resolve_dsn, resolve_schema
from pgjobs.errors import ConfigError
from pgjobs.metrics import METRICS_HOST, OVERDUE_AFTER, cluster_registry, serve_metrics
from pgjobs.migrations import check_schema

log = logging.getLogger("pgjobs.metrics")


@click.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=9187,
    show_default=True,
    help="Port of the /metrics endpoint.",
)
@click.option(
    "--host",
    envvar="PGJOBS_METRICS_HOST",
    default=METRICS_HOST,
    show_default=True,
    help="Address to bind; 0.0.0.0 (or an interface's address) lets other hosts scrape.",
)
@click.option("--dsn", envvar="PGJOBS_DSN", default="", help="libpq DSN (PG* variables otherwise).")
@click.option("--schema", envvar="PGJOBS_SCHEMA", default="pgjobs", show_default=True)
@click.option(
    "--overdue-after",
    type=click.FloatRange(min=0),
    default=OVERDUE_AFTER,
    show_default=True,
    help="Seconds past its next fire time after which a job counts as overdue.",
)
def metrics(host: str, port: int, dsn: str, schema: str, overdue_after: float) -> None:
    """Serve cluster-wide metrics (queues, jobs, workers) for Prometheus on /metrics.

    If the database cannot be reached at start, waits for it (one log line per attempt); while
    it is down later, scrapes report pgjobs_up 0.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    target, name = resolve_dsn(dsn), resolve_schema(schema)
    try:
        wait_for_database(
            target, what="pgjobs metrics", log=log, check=lambda conn: check_schema(conn, name)
        ).close()
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"invalid DSN: {exc}") from exc
    except KeyboardInterrupt:
        return
    registry = cluster_registry(target, name, overdue_after=overdue_after)
    try:
        server = serve_metrics(registry, port, host)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    click.echo(f"pgjobs metrics on http://{host}:{server.server_port}/metrics", err=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
