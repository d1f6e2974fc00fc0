"""``pgjobs check``: validate the code, the profile, the schedules and the database in one go.

Each check is reported on its own line: ``ok``, ``ERR`` (a problem) or ``WRN`` (a warning). The
exit code is 1 if any check found a problem, so a deployment can run ``pgjobs check`` before
starting its workers. Warnings leave it 0: they are about what the cluster does now, not about
what is deployed, and a worker started anyway is what fixes some of them. They are the further
schedules of jobs (added at runtime or listed in the profile) that do not tick: one a worker
refused (its cron or timezone, with the reason), one whose cron a worker would refuse and none
has tried yet, and one of a job that no live worker registers.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any

import click

from pgjobs.cli import output
from pgjobs.cli.options import (
    code_options,
    database_options,
    has_application_code,
    open_database,
)
from pgjobs.db import describe_target, resolve_dsn
from pgjobs.errors import ConfigError, PgJobsError
from pgjobs.migrations import check_schema, head
from pgjobs.registry import Registry, load_registry
from pgjobs.schedule import CronSchedule


@dataclass(frozen=True)
class _Line:
    ok: bool
    what: str
    detail: str
    warning: bool = False

    @property
    def mark(self) -> str:
        return "WRN" if self.warning else ("ok " if self.ok else "ERR")


@click.command(name="check")
@code_options
@database_options
def check(app: str | None, profile: str | None, dsn: str, schema: str) -> None:
    """Validate code, profile, cron schedules, the database and its schema version; warn of
    further schedules that do not tick. Exit 1 on a problem; warnings leave the exit code 0."""
    lines = [*_check_code(app, profile), *_check_database(dsn, schema)]
    for line in lines:
        output.echo(f"{line.mark}  {line.what}: {line.detail}")
    problems = sum(not line.ok for line in lines)
    warnings = sum(line.warning for line in lines)
    verdict = f"{problems} problem(s) found" if problems else "all checks passed"
    click.echo(verdict + (f", {warnings} warning(s)" if warnings else ""))
    sys.exit(1 if problems else 0)


def _check_code(app: str | None, profile: str | None) -> list[_Line]:
    try:
        registry = load_registry(app, profile)
    except PgJobsError as exc:
        return [_Line(False, "code", str(exc))]
    if not has_application_code(registry):
        return [
            _Line(
                False,
                "code",
                "no jobs found: pass --app module:attr, set PGJOBS_APP, or install a package "
                "with a pgjobs.extensions entry point",
            )
        ]
    return [
        _Line(
            True,
            "code",
            f"{len(registry.extensions)} extension(s), {len(registry)} job(s): "
            + ", ".join(registry.names()),
        ),
        _profile_line(registry),
        _schedules_line(registry),
    ]


def _profile_line(registry: Registry) -> _Line:
    profile = registry.profile
    if profile is None:
        return _Line(True, "profile", "none (the code's definitions apply)")
    overridden = [d.name for d in registry if d.overrides]
    detail = (
        f"{profile.path}: {len(profile.entries)} entr{'y' if len(profile.entries) == 1 else 'ies'}"
    )
    if overridden:
        detail += f", overriding {', '.join(overridden)}"
    if not registry.scheduler_enabled:
        detail += "; scheduler disabled (workers run the queue only)"
    return _Line(True, "profile", detail)


def _schedules_line(registry: Registry) -> _Line:
    scheduled = [d for d in registry if d.schedule is not None]
    # Building the registry parsed every schedule; describe them for the reader.
    shown = "; ".join(f"{d.name} {d.cron.describe()}" for d in scheduled if d.cron is not None)
    detail = f"{len(scheduled)} valid" + (f": {shown}" if shown else "")
    return _Line(True, "schedules", detail)


def _check_database(dsn: str, schema: str) -> list[_Line]:
    target = describe_target(resolve_dsn(dsn))
    try:
        with open_database(dsn, schema, check=False) as db:
            version = db.value("database_version")
            lines = [_Line(True, "database", f"reachable at {target} (PostgreSQL {version})")]
            try:
                check_schema(db.conn, db.queries.schema)
            except PgJobsError as exc:
                return [*lines, _Line(False, "schema", str(exc))]
            lines.append(_Line(True, "schema", f'"{db.queries.schema}" at revision {head()}'))
            live = len(db.all("list_workers", all=False))
            lines.append(_Line(True, "workers", f"{live} live"))
            schedules = db.all("schedule_states", job=None)
            return [*lines, *_further_schedule_lines(schedules)]
    except PgJobsError as exc:
        return [_Line(False, "database", str(exc))]


def _further_schedule_lines(rows: list[dict[str, Any]]) -> list[_Line]:
    """A warning for each further schedule of a job (added at runtime or listed in the profile;
    the job's own, ``default``, is the code check's) that does not tick though it should: in
    error, with a cron or timezone a worker would refuse, or of a job no live worker registers;
    else one line counting them."""
    further = [row for row in rows if row["name"] != "default"]
    warnings = []
    for row in further:
        what = f"schedule {row['job']}/{row['name']}"
        if row["state"] == "error":
            detail = f"workers refused it: {row['error']}; it does not tick until its cron or "
            detail += "timezone is changed"
            warnings.append(_Line(True, what, detail, warning=True))
            continue
        try:
            CronSchedule.parse(row["cron"], row["timezone"])
        except ConfigError as exc:
            detail = f"{exc}: workers will refuse it"
            warnings.append(_Line(True, what, detail, warning=True))
            continue
        if row["state"] == "ticking" and not row["registered"]:
            detail = f"no live worker registers job {row['job']}: it does not tick"
            warnings.append(_Line(True, what, detail, warning=True))
    if warnings:
        return warnings
    states = Counter(row["state"] for row in further)
    detail = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    return [_Line(True, "further schedules", f"{len(further)} ({detail})" if further else "none")]
