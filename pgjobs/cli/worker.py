"""``pgjobs worker``: run one worker process until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from typing import Literal

import click
import psycopg

from pgjobs.db import (
    PREPARE_THRESHOLD_ENV,
    invalid_dsn_error,
    parse_prepare_threshold,
    resolve_dsn,
    resolve_schema,
)
from pgjobs.errors import ConfigError
from pgjobs.metrics import METRICS_HOST, WorkerMetrics
from pgjobs.registry import load_registry
from pgjobs.runlog import LOG_FORMATS, configure_logging
from pgjobs.worker import Worker, WorkerSettings
from pgjobs.worker.embed import checked_dsn


@click.command()
@click.option("--app", envvar="PGJOBS_APP", help="Extensions to load, as module:attr.")
@click.option(
    "--profile",
    envvar="PGJOBS_PROFILE",
    type=click.Path(dir_okay=False),
    help="profile.yaml overriding the jobs' definitions.",
)
@click.option("--dsn", envvar="PGJOBS_DSN", default="", help="libpq DSN (PG* variables otherwise).")
@click.option("--schema", envvar="PGJOBS_SCHEMA", default="pgjobs", show_default=True)
@click.option(
    "--concurrency",
    "-c",
    envvar="PGJOBS_CONCURRENCY",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Runs executed at once by this worker.",
)
@click.option(
    "--prefetch",
    envvar="PGJOBS_PREFETCH",
    type=click.IntRange(min=0),
    help="Runs claimed ahead of a free slot while runs are short (default: the concurrency; "
    "0: claim only for free slots).",
)
@click.option(
    "--queue",
    "-q",
    "queues",
    envvar="PGJOBS_QUEUES",
    multiple=True,
    help="Queue to take runs from (repeatable; default: default).",
)
@click.option(
    "--grace",
    envvar="PGJOBS_GRACE",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds running jobs get to finish after SIGTERM.",
)
@click.option(
    "--lease",
    envvar="PGJOBS_LEASE",
    type=click.FloatRange(min=0.5),
    default=30.0,
    show_default=True,
    help="Seconds a run stays ours without a heartbeat.",
)
@click.option(
    "--poll-interval",
    envvar="PGJOBS_POLL_INTERVAL",
    type=click.FloatRange(min=0.05),
    default=5.0,
    show_default=True,
    help="Longest sleep between looks at the queue.",
)
@click.option(
    "--no-listen",
    envvar="PGJOBS_NO_LISTEN",
    is_flag=True,
    help="Do not LISTEN for wake-ups (PgBouncer transaction pooling): poll only.",
)
@click.option(
    "--listen-dsn",
    envvar="PGJOBS_LISTEN_DSN",
    help="LISTEN for wake-ups on this DSN, a direct connection, while --dsn goes through "
    "PgBouncer in transaction pooling.",
)
@click.option(
    "--prepare-threshold",
    envvar=PREPARE_THRESHOLD_ENV,
    help="Runs of a statement on a connection before it is prepared on the server, or off "
    "(PgBouncer before 1.21 in transaction pooling) [default: off with --no-listen or "
    "--listen-dsn, else 5].",
)
@click.option(
    "--misfire-grace",
    envvar="PGJOBS_MISFIRE_GRACE",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="Age in seconds after which a tick is missed (the latest tick of an hourly or coarser "
    "schedule: at least 1% of its interval, up to 15 min).",
)
@click.option(
    "--db-timeout",
    envvar="PGJOBS_DB_TIMEOUT",
    type=click.FloatRange(min=0.5),
    help="Seconds a statement of the worker may go unanswered before its connection is taken "
    "for dead (a half-open connection) [default: max(10, lease/3)].",
)
@click.option(
    "--id", "worker_id", envvar="PGJOBS_WORKER_ID", help="Worker id (default host-pid-random)."
)
@click.option(
    "--log-level",
    envvar="PGJOBS_LOG_LEVEL",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.option(
    "--log-format",
    envvar="PGJOBS_LOG_FORMAT",
    default="text",
    show_default=True,
    type=click.Choice(LOG_FORMATS, case_sensitive=False),
    help="text, or json: one object per line with run_id, job, attempt and worker_id.",
)
@click.option(
    "--metrics-port",
    envvar="PGJOBS_METRICS_PORT",
    type=click.IntRange(0, 65535),
    help="Serve Prometheus metrics on this port (/metrics).",
)
@click.option(
    "--metrics-host",
    envvar="PGJOBS_METRICS_HOST",
    default=METRICS_HOST,
    show_default=True,
    help="Address the metrics endpoint binds to (0.0.0.0 or an interface's address exposes it "
    "beyond this host).",
)
def worker(
    app: str | None,
    profile: str | None,
    dsn: str,
    schema: str,
    concurrency: int,
    prefetch: int | None,
    queues: tuple[str, ...],
    grace: float,
    lease: float,
    poll_interval: float,
    no_listen: bool,
    listen_dsn: str | None,
    prepare_threshold: str | None,
    misfire_grace: float,
    db_timeout: float | None,
    worker_id: str | None,
    log_level: str,
    log_format: str,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Run a worker: tick schedules, claim runs, execute them. Run as many as you like."""
    configure_logging(log_level, log_format.lower(), sys.stderr)
    threshold = _prepare_threshold(prepare_threshold)
    if listen_dsn and no_listen:
        raise ConfigError("--listen-dsn and --no-listen contradict each other: choose one")
    registry = load_registry(app, profile)
    settings = WorkerSettings(
        dsn=resolve_dsn(dsn),
        schema=resolve_schema(schema),
        concurrency=concurrency,
        prefetch=prefetch,
        queues=queues or ("default",),
        grace=grace,
        lease=lease,
        poll_interval=poll_interval,
        listen=not no_listen,
        listen_dsn=checked_dsn(listen_dsn) if listen_dsn else None,
        prepare_threshold=threshold,
        worker_id=worker_id,
        misfire_grace=misfire_grace,
        db_timeout=db_timeout,
        scheduler=registry.scheduler_enabled,
    )
    if settings.pooled:
        logging.getLogger("pgjobs.worker").info(
            "--dsn taken for a transaction pooler (%s): prepared statements %s, no session state",
            "--listen-dsn" if settings.listen else "--no-listen",
            "off" if settings.prepare_after is None else f"after {settings.prepare_after} runs",
        )
    _check_database(settings)
    metrics = WorkerMetrics()
    if metrics_port is not None:
        metrics.serve_for_worker(metrics_port, metrics_host)
    try:
        exit_code = asyncio.run(_serve(registry, settings, metrics))
    finally:
        metrics.stop_http()
    if threading.active_count() > 1:
        # A sync job's thread that outlived its timeout would keep the interpreter alive.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)
    sys.exit(exit_code)


def _prepare_threshold(text: str | None) -> int | Literal["auto"] | None:
    """``--prepare-threshold`` (or its variable) as the worker's settings take it; unset: auto."""
    if text is None or not text.strip():
        return "auto"
    return parse_prepare_threshold(text, f"--prepare-threshold/{PREPARE_THRESHOLD_ENV}")


def _check_database(settings: WorkerSettings) -> None:
    """Wait for the database (a line per attempt, while it is down or refusing connections),
    then check that its schema is the one this pgjobs needs."""
    from pgjobs.backoff import Backoff, wait_for_database
    from pgjobs.migrations import check_schema

    try:
        conn = wait_for_database(
            settings.dsn,
            what="worker",
            log=logging.getLogger("pgjobs.worker"),
            check=lambda c: check_schema(c, settings.schema),
            backoff=Backoff(0.2, settings.backoff_max),
            options={"prepare_threshold": settings.prepare_after},
        )
    except psycopg.ProgrammingError as exc:
        raise invalid_dsn_error(settings.dsn, exc) from exc
    except KeyboardInterrupt:
        raise SystemExit(130) from None  # Ctrl-C while waiting: nothing started, nothing to say
    conn.close()


async def _serve(registry: object, settings: WorkerSettings, metrics: WorkerMetrics) -> int:
    from pgjobs.registry import Registry

    assert isinstance(registry, Registry)
    w = Worker(registry, settings, metrics)
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            logging.getLogger("pgjobs.worker").warning("second signal: exiting at once")
            os._exit(128 + signum)
        w.request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    await w.run()
    # What is left (a job or a pool task stuck in a query on a dead connection, which psycopg
    # gives up on after seconds) must not hold the exit: asyncio.run would wait for each.
    left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in left:
        task.cancel()
    if left and (await asyncio.wait(left, timeout=2))[1]:
        logging.shutdown()
        os._exit(0)
    return 0
