"""``pgjobs queues``: the queues runs wait in, what holds their runs back, and the queue pause.

A queue needs no declaration: it exists once a job, a run or a worker names it, and it runs
unlimited until it has a row in ``queues`` (made by ``queues pause``, or by a worker storing the
profile's ``queues:`` settings). A pause holds every queued run of the queue, of any job and any
trigger (schedule, manual, enqueue, retry); running runs finish. It is kept in Postgres, and a
trigger on ``queues`` wakes every worker, so a resumed queue's runs start within a second.
"""

from __future__ import annotations

from typing import Any

import click

from pgjobs.cli import output
from pgjobs.cli.options import (
    Database,
    database_options,
    json_option,
    open_database,
    queue_callback,
)
from pgjobs.metrics import WAIT_REASONS, count_waits

QUEUE_JSON_KEYS = (
    "name",
    "paused",
    "paused_at",
    "rate_limit",
    "queued",
    "due",
    "delayed",
    "running",
    "oldest_age_seconds",
    "waiting",
    "workers",
)

WORKERS_SHOWN = 3
"""Workers named per queue in the table; the others are counted."""


@click.group(name="queues")
def queues() -> None:
    """The queues: list them with what their runs wait for, pause and resume one."""


@queues.command("list")
@json_option
@database_options
def list_queues(as_json: bool, dsn: str, schema: str) -> None:
    """Every queue a job, a run, a live worker or a pause names: its state, rate limit, queued
    and running runs, what the queued ones wait for, and the live workers serving it."""
    with open_database(dsn, schema) as db:
        rows = db.all("metrics_queues")
        waiting = count_waits(db.all("waiting_runs", job=None), "queue")
        now = db.now()
    for row in rows:
        row["name"] = row["queue"]
        row["paused"] = bool(row["paused"])
        row["queued"] = row["due"] + row["delayed"]
        row["waiting"] = waiting.get(row["name"], dict.fromkeys(WAIT_REASONS, 0))
    if as_json:
        output.emit_json([output.pick(row, QUEUE_JSON_KEYS) for row in rows])
        return
    t = output.table("QUEUE", "STATE", "RATE LIMIT", "QUEUED", "RUNNING", "WAITING FOR", "WORKERS")
    for row in rows:
        state = "active"
        if row["paused"]:
            state = f"paused {output.relative(row['paused_at'], now)}"
        t.add_row(
            output.text(row["name"]),
            state,
            output.text(row["rate_limit"] or "-"),
            str(row["queued"]),
            str(row["running"]),
            waiting_text(row["waiting"]),
            output.text(_workers(row["workers"])),
        )
    output.print_table(t, "no queues: no job, run or worker names one yet")


def waiting_text(counts: dict[str, int]) -> str:
    """``3 queue paused, 2 concurrency`` for the reasons some runs wait for; ``-`` for none."""
    return ", ".join(f"{n} {reason}" for reason, n in counts.items() if n) or "-"


def _workers(ids: list[str]) -> str:
    if not ids:
        return "none"
    shown = ", ".join(ids[:WORKERS_SHOWN])
    return shown if len(ids) <= WORKERS_SHOWN else f"{shown} +{len(ids) - WORKERS_SHOWN}"


@queues.command("pause")
@click.argument("name", callback=queue_callback)
@database_options
def pause(name: str, dsn: str, schema: str) -> None:
    """Hold every queued run of a queue, of any job and trigger, until resumed; running runs
    finish. A queue nothing uses yet may be paused ahead of its first run."""
    with open_database(dsn, schema) as db:
        before = _get_queue(db, name)
        known = [] if before["in_use"] else [r["queue"] for r in db.all("metrics_queues")]
        row = db.one("pause_queue", queue=name)
        now = db.now()
    if row is None:
        since = output.timestamp(before["paused_at"], now)
        output.echo(f"queue {name} was already paused" + (f", since {since}" if since else ""))
        return
    line = (
        f"queue {name} paused: its queued runs wait until `pgjobs queues resume {name}`; "
        "running runs finish"
    )
    if before["in_use"]:
        line += f" ({row['queued']} queued, {row['running']} running)"
    else:
        from pgjobs.registry import suggest

        line += f"; no job, run or worker uses it yet ({suggest(name, known, 'queues')})"
    output.echo(line)


@queues.command("resume")
@click.argument("name", callback=queue_callback)
@database_options
def resume(name: str, dsn: str, schema: str) -> None:
    """Release a paused queue's runs: workers start them within a second."""
    with open_database(dsn, schema) as db:
        row = db.one("resume_queue", queue=name)
    if row is None:
        output.echo(f"queue {name} was not paused")
        return
    line = f"queue {name} resumed: its {row['queued']} queued run(s) can start again"
    if row["paused_jobs"]:
        line += (
            f"; these of its jobs are paused on their own: {', '.join(row['paused_jobs'])} "
            "(`pgjobs jobs resume NAME`)"
        )
    output.echo(line)


def _get_queue(db: Database, name: str) -> dict[str, Any]:
    row = db.one("get_queue", queue=name)
    assert row is not None  # one row, whether the queue has one in `queues` or not
    return row
