"""``pgjobs check``: validate the code, the profile, the schedules and the database in one go.

Each check is reported on its own line; the exit code is 1 if any of them found a problem, so a
deployment can run ``pgjobs check`` before starting its workers.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import click

from pgjobs.cli.options import (
    code_options,
    database_options,
    has_application_code,
    open_database,
)
from pgjobs.db import describe_target, resolve_dsn
from pgjobs.errors import PgJobsError
from pgjobs.migrations import check_schema, head
from pgjobs.registry import Registry, load_registry


@dataclass(frozen=True)
class _Line:
    ok: bool
    what: str
    detail: str


@click.command(name="check")
@code_options
@database_options
def check(app: str | None, profile: str | None, dsn: str, schema: str) -> None:
    """Validate code, profile, cron schedules, the database and its schema version."""
    lines = [*_check_code(app, profile), *_check_database(dsn, schema)]
    for line in lines:
        click.echo(f"{'ok ' if line.ok else 'ERR'}  {line.what}: {line.detail}")
    problems = sum(not line.ok for line in lines)
    click.echo(f"{problems} problem(s) found" if problems else "all checks passed")
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
            return lines
    except PgJobsError as exc:
        return [_Line(False, "database", str(exc))]
