"""``pgjobs metrics``: a Prometheus exporter of the whole cluster, read from the database."""

from __future__ import annotations

import logging
import threading

import click

from pgjobs.db import connect, resolve_dsn, resolve_schema
from pgjobs.errors import ConfigError
from pgjobs.metrics import OVERDUE_AFTER, cluster_registry
from pgjobs.migrations import check_schema


@click.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=9187,
    show_default=True,
    help="Port of the /metrics endpoint.",
)
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to bind.")
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
    """Serve cluster-wide metrics (queues, jobs, workers) for Prometheus on /metrics."""
    from prometheus_client import start_http_server

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    target, name = resolve_dsn(dsn), resolve_schema(schema)
    with connect(target) as conn:
        check_schema(conn, name)
    registry = cluster_registry(target, name, overdue_after=overdue_after)
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    click.echo(f"pgjobs metrics on http://{host}:{server.server_port}/metrics", err=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
