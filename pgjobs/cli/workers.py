"""``pgjobs workers``: the worker processes, where they run and what they are doing."""

from __future__ import annotations

import click

from pgjobs.cli import output
from pgjobs.cli.options import database_options, json_option, open_database

WORKER_JSON_KEYS = (
    "id",
    "state",
    "live",
    "host",
    "pid",
    "version",
    "queues",
    "concurrency",
    "jobs",
    "running_now",
    "started_at",
    "heartbeat_at",
    "heartbeat_age_seconds",
    "expires_at",
    "stopped_at",
)


@click.group(name="workers")
def workers() -> None:
    """The worker processes registered in the database."""


@workers.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also stopped and dead workers.")
@json_option
@database_options
def list_workers(show_all: bool, as_json: bool, dsn: str, schema: str) -> None:
    """Live workers (all with --all): state, host, pid, queues, heartbeat age, running now."""
    with open_database(dsn, schema) as db:
        rows = db.all("list_workers", all=show_all)
        now = db.now()
    for row in rows:
        row["heartbeat_age_seconds"] = (now - row["heartbeat_at"]).total_seconds()
    if as_json:
        output.emit_json([output.pick(row, WORKER_JSON_KEYS) for row in rows])
        return
    t = output.table(
        "WORKER", "STATE", "HOST", "PID", "VERSION", "QUEUES", "CONCURRENCY", "RUNNING",
        "HEARTBEAT", "STARTED",
    )  # fmt: skip
    for row in rows:
        state = row["state"]
        if state in ("running", "stopping") and not row["live"]:
            state = f"{state} (heartbeat expired)"
        t.add_row(
            output.text(row["id"]),
            state,
            output.text(row["host"]),
            str(row["pid"]),
            output.text(row["version"]),
            output.text(",".join(row["queues"])),
            str(row["concurrency"]),
            str(row["running_now"]),
            output.relative(row["heartbeat_at"], now),
            output.relative(row["started_at"], now),
        )
    output.print_table(t, "no workers" if show_all else "no live workers (--all shows the others)")
