"""``pgjobs jobs run``: run jobs now, in this process (the default) or by the workers.

In this process the job's code is needed (``--app``, ``PGJOBS_APP`` or the profile's ``app:``);
the run is recorded as a ``manual`` run like any other (see :mod:`pgjobs.manual`). With
``--queue-it`` the run goes to the queue for the workers, and ``--wait`` follows it to the end
(or for at most ``--timeout`` seconds), woken by the run's NOTIFYs as :func:`pgjobs.wait` is
(``--no-listen``, or ``PGJOBS_NO_LISTEN``: polling, behind a transaction pooler). The exit code is
0 when every run succeeded, 1 otherwise, and 124 when ``--timeout`` ran out first (the runs are
left as they are). The payload and the parameters are held to the enqueue API's limits
(``PGJOBS_MAX_PAYLOAD_BYTES``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import click

from pgjobs.cli import output
from pgjobs.cli.options import (
    Database,
    code_options,
    database_errors,
    database_options,
    has_application_code,
    json_option,
    open_database,
    optional_registry,
    params_option,
    parse_parameters,
    parse_payload,
)
from pgjobs.enqueue import check_run_input
from pgjobs.errors import ConfigError, UnknownJobError, WaitTimeout
from pgjobs.manual import (
    ManualResult,
    QueueTarget,
    RunSettings,
    queue_run,
    run_in_process,
)
from pgjobs.registry import JobDefinition, Registry, load_registry, suggest
from pgjobs.wait import follow_sync


@click.command("run")
@click.argument("names", nargs=-1)
@click.option("--all", "run_all", is_flag=True, help="Run every enabled job.")
@click.option("--tag", help="Run every enabled job carrying this tag.")
@params_option("A parameter for the job (repeatable); overrides the profile's parameters.")
@click.option("--payload", metavar="JSON", help="A JSON object the job gets as ctx.payload.")
@click.option("--queue-it", is_flag=True, help="Hand the run to the workers instead.")
@click.option("--wait", is_flag=True, help="With --queue-it: follow the run until it ends.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="With --wait: stop waiting after this long (exit code 124; the run goes on).",
)
@click.option(
    "--no-listen",
    envvar="PGJOBS_NO_LISTEN",
    is_flag=True,
    help="With --wait: poll the run instead of LISTENing (PgBouncer transaction pooling).",
)
@click.option("--force", is_flag=True, help="Run even if another run holds the job's lock.")
@json_option
@code_options
@database_options
def run(
    names: tuple[str, ...],
    run_all: bool,
    tag: str | None,
    params: tuple[str, ...],
    payload: str | None,
    queue_it: bool,
    wait: bool,
    timeout: float | None,
    no_listen: bool,
    force: bool,
    as_json: bool,
    app: str | None,
    profile: str | None,
    dsn: str,
    schema: str,
) -> None:
    """Run jobs now: NAME..., --all or --tag T. Exits 0 only if every run succeeded."""
    if sum((bool(names), run_all, tag is not None)) != 1:
        raise click.UsageError("name the jobs to run, or pass --all or --tag (one of them)")
    if wait and not queue_it:
        raise click.UsageError("--wait follows a queued run: use it with --queue-it")
    if timeout is not None and not wait:
        raise click.UsageError("--timeout limits --wait: use it with --queue-it --wait")
    if force and queue_it:
        raise click.UsageError("--force applies to runs in this process, not to queued runs")
    settings = RunSettings(
        payload=parse_payload(payload), parameters=parse_parameters(params), force=force
    )
    check_run_input(settings.payload, settings.parameters)
    selection = _Selection(names, run_all, tag)
    if queue_it:
        deadline = None if timeout is None else time.monotonic() + timeout
        code = optional_registry(app, profile)
        follow = _Follow(deadline, not no_listen, as_json) if wait else None
        _queue(selection, settings, code, dsn, schema, follow, as_json)
    else:
        _in_process(selection, settings, load_registry(app, profile), dsn, schema, as_json)


@dataclass(frozen=True)
class _Selection:
    names: tuple[str, ...]
    run_all: bool
    tag: str | None

    def pick(self, jobs: dict[str, dict[str, Any]], everything: set[str]) -> list[str]:
        """Names to run, from ``jobs`` (name -> ``enabled``, ``tags``); unknown names fail."""
        for name in self.names:
            if name not in jobs:
                if name in everything:
                    raise ConfigError(
                        f"job {name!r} is not defined by the loaded code: pass the --app that "
                        "defines it, or --queue-it to hand the run to the workers"
                    )
                raise UnknownJobError(
                    f"unknown job {name!r}; {suggest(name, sorted(everything), 'jobs')}"
                )
        if self.names:
            return list(dict.fromkeys(self.names))
        picked = [
            name
            for name, job in sorted(jobs.items())
            if job["enabled"] and (self.tag is None or self.tag in job["tags"])
        ]
        if not picked:
            what = f"carries tag {self.tag!r}" if self.tag else "is defined"
            raise ConfigError(f"no enabled job {what}")
        return picked


def _in_process(
    selection: _Selection,
    settings: RunSettings,
    code: Registry,
    dsn: str,
    schema: str,
    as_json: bool,
) -> None:
    if not has_application_code(code) and not (
        selection.names and all(name in code for name in selection.names)
    ):
        raise ConfigError(
            "jobs run executes jobs in this process and needs their code: pass --app module:attr "
            "or set PGJOBS_APP (or use --queue-it to hand the runs to the workers)"
        )
    with open_database(dsn, schema) as db:
        everything = set(db.job_names()) | set(code.names())
    jobs = {d.name: {"enabled": d.enabled, "tags": d.tags} for d in code}
    definitions = [code.get(name) for name in selection.pick(jobs, everything)]
    results: list[ManualResult] = []
    for definition in definitions:
        if not as_json:
            output.echo(f"{definition.name}: running in this process...")
        with database_errors():
            result = run_in_process(definition, settings, dsn=dsn, schema=schema)
        results.append(result)
        if not as_json:
            _print_result(result)
    if as_json:
        output.emit_json([_result_json(r) for r in results])
    sys.exit(0 if all(r.ok for r in results) else 1)


def _result_json(result: ManualResult) -> dict[str, Any]:
    o = result.outcome
    return {
        "job": result.job,
        "run_id": o.run_id,
        "status": o.status,
        "duration_seconds": o.duration,
        "message": o.message,
        "data": dict(o.data) if o.data is not None else None,
        "items_processed": o.processed,
        "items_failed": o.failed,
        "error_type": o.error_type,
        "error_message": o.error_message,
        "recorded": result.recorded,
    }


def _print_result(result: ManualResult) -> None:
    o = result.outcome
    output.echo(f"{result.job}: run {o.run_id} {o.status} in {output.duration(o.duration)}")
    _print_details(o.message, o.data, o.processed, o.failed, o.error_type, o.error_message)
    if o.error_type:
        output.echo(f"  traceback: pgjobs runs show {o.run_id}")
    if not result.recorded:
        output.echo(
            f"  warning: run {o.run_id} was reaped while it ran; this outcome is not stored"
        )


def _print_details(
    message: str | None,
    data: Any,
    processed: int | None,
    failed: int | None,
    error_type: str | None,
    error_message: str | None,
) -> None:
    if message:
        output.echo(f"  message: {message}")
    if data:
        output.echo(f"  data: {output.compact_json(dict(data))}")
    if processed is not None or failed is not None:
        output.echo(f"  items: {processed or 0} processed, {failed or 0} failed")
    if error_type or error_message:
        output.echo(f"  error: {error_type or 'error'}: {error_message or ''}")


# -- queued for the workers ---------------------------------------------------------------------


def _queue(
    selection: _Selection,
    settings: RunSettings,
    code: Registry | None,
    dsn: str,
    schema: str,
    follow: _Follow | None,
    as_json: bool,
) -> None:
    with open_database(dsn, schema) as db:
        targets = _queue_targets(db, code)
        jobs = {name: {"enabled": t[1], "tags": t[2]} for name, t in targets.items()}
        picked = selection.pick(jobs, set(jobs))
        queued = [
            (name, queue_run(db.conn, db.queries, targets[name][0], settings)) for name in picked
        ]
        if follow is None:
            if as_json:
                output.emit_json([{"job": n, "run_id": i, "status": "queued"} for n, i in queued])
            else:
                for name, run_id in queued:
                    output.echo(f"{name}: queued run {run_id} for the workers")
            return
        finals = [follow.run(db, name, run_id) for name, run_id in queued]
    if as_json:
        output.emit_json(finals)
    sys.exit(0 if all(f["status"] == "succeeded" for f in finals) else 1)


def _queue_targets(
    db: Database, code: Registry | None
) -> dict[str, tuple[QueueTarget, bool, tuple[str, ...]]]:
    """Every job a run can be queued for: the database's, then the code's not registered yet."""
    targets: dict[str, tuple[QueueTarget, bool, tuple[str, ...]]] = {}
    for row in db.all("list_jobs", tag=None):
        target = QueueTarget(row["name"], row["max_attempts"], row["priority"], row["queue"])
        targets[row["name"]] = (target, row["enabled"], tuple(row["tags"]))
    for d in code or ():
        if d.name not in targets:
            targets[d.name] = (_code_target(d), d.enabled, d.tags)
    return targets


def _code_target(d: JobDefinition) -> QueueTarget:
    return QueueTarget(d.name, d.max_attempts, d.priority, d.queue)


@dataclass(frozen=True)
class _Follow:
    """How ``--wait`` follows the queued runs: until ``deadline`` (:func:`time.monotonic`), for
    them all; by LISTEN unless ``--no-listen``."""

    deadline: float | None
    listen: bool
    as_json: bool

    def run(self, db: Database, name: str, run_id: int) -> dict[str, Any]:
        """Follow one queued run to its end, printing each change of state."""
        as_json = self.as_json
        shown: set[tuple[int, str]] = set()

        def say(line: str) -> None:
            click.echo(output.safe(line), err=as_json)

        def show(row: dict[str, Any]) -> None:
            # Each run's story is told whole, queued, running, its end, even where a state came
            # and went between two looks at the row: the row keeps who started it, and when.
            # (Called once per change of state: a run handed back to the queue is told again.)
            run, status = row["id"], row["status"]
            if status not in ("queued", "blocked") and (run, "queued") not in shown:
                shown.add((run, "queued"))
                say(f"{name}: run {run} queued")
            started = row["started_at"] is not None and row["worker_id"]
            if row["finished_at"] is not None and started and (run, "running") not in shown:
                shown.add((run, "running"))
                say(f"{name}: run {run} running on worker {row['worker_id']}")
            shown.add((run, status))
            line = f"{name}: run {run} {status}"
            if status == "running" and row["worker_id"]:
                line += f" on worker {row['worker_id']}"
            elif row["duration_seconds"] is not None:
                line += f" in {output.duration(row['duration_seconds'])}"
            if row["retry_id"] is not None:
                line += f"; retried as run {row['retry_id']}"
            say(line)
            if row["finished_at"] is not None and not as_json:
                _print_details(
                    row["message"],
                    row["data"],
                    row["items_processed"],
                    row["items_failed"],
                    row["error_type"],
                    row["error_message"],
                )

        timeout = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
        try:
            final = follow_sync(
                db.conn, db.queries, run_id, show, timeout=timeout, listen=self.listen
            )
        except WaitTimeout as exc:
            raise WaitTimeout(
                f"run {exc.run_id} is still {exc.status}: gave up waiting (--timeout); "
                f"the run goes on, see `pgjobs runs show {exc.run_id}`",
                run_id=exc.run_id,
                status=exc.status,
            ) from None
        return {
            "job": name,
            "run_id": run_id,
            "final_run_id": final.final_run_id,
            "status": final.status,
            "attempt": final.attempt,
            "worker_id": final.worker_id,
            "duration_seconds": final.duration_seconds,
            "message": final.message,
            "data": final.data,
            "items_processed": final.items_processed,
            "items_failed": final.items_failed,
            "error_type": final.error_type,
            "error_message": final.error_message,
        }
