"""``pgjobs dashboard``: the web dashboard, served from the database until Ctrl-C."""

from __future__ import annotations

import logging
import sys

import click
import psycopg

from pgjobs.backoff import wait_for_database
from pgjobs.dashboard import DashboardSettings, check_bind, make_server
from pgjobs.db import resolve_dsn, resolve_schema
from pgjobs.errors import ConfigError
from pgjobs.migrations import check_schema

log = logging.getLogger("pgjobs.dashboard")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port to bind."
)
@click.option("--dsn", envvar="PGJOBS_DSN", default="", help="libpq DSN (PG* variables otherwise).")
@click.option("--schema", envvar="PGJOBS_SCHEMA", default="pgjobs", show_default=True)
@click.option(
    "--allow-actions",
    is_flag=True,
    help="Offer run now, pause/resume, retry and cancel (each needs the token).",
)
@click.option(
    "--token",
    envvar="PGJOBS_DASHBOARD_TOKEN",
    help="Token (16+ characters) for actions and for a non-loopback bind "
    "(generated with --allow-actions).",
)
@click.option(
    "--refresh",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="Seconds between page refreshes (0: never).",
)
def dashboard(
    host: str,
    port: int,
    dsn: str,
    schema: str,
    allow_actions: bool,
    token: str | None,
    refresh: float,
) -> None:
    """Serve the web dashboard: jobs, timeline, runs, workers and queues.

    If the database cannot be reached at start, waits for it (one log line per attempt);
    while it is down later, pages answer 503 until it is back.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    check_bind(host, token)
    settings = DashboardSettings(
        dsn=resolve_dsn(dsn),
        schema=resolve_schema(schema),
        host=host,
        port=port,
        allow_actions=allow_actions,
        token=token,
        refresh=refresh,
    )
    try:
        wait_for_database(
            settings.dsn,
            what="pgjobs dashboard",
            log=log,
            check=lambda conn: check_schema(conn, settings.schema),
        ).close()
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"invalid DSN: {exc}") from exc
    except KeyboardInterrupt:
        return
    try:
        server = make_server(settings)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    dashboard_token = server.dashboard.token
    click.echo(f"pgjobs dashboard on {server.url}", err=True)
    if allow_actions and dashboard_token:
        click.echo(f"actions need the token: {dashboard_token}", err=True)
        click.echo(f"open {server.url}?token={dashboard_token} to unlock them", err=True)
    elif dashboard_token:
        click.echo(f"open {server.url}?token={dashboard_token}", err=True)
    else:
        click.echo(
            "read-only (start with --allow-actions for run now, pause, retry, cancel)", err=True
        )
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
