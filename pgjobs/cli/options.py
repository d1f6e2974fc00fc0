"""Options shared by the command groups, the parsing of their values, and opening the database
they name.

Every command that touches the database takes ``--dsn`` and ``--schema``; commands that may use
the code take ``--app`` and ``--profile``; listings take ``--json``. Bad values (a duration such
as ``1x``, a payload that is not a JSON object) are :class:`~pgjobs.errors.ConfigError`: one line
and exit code 2.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import click
import psycopg
from psycopg.rows import dict_row

from pgjobs.db import connect, first_line, resolve_dsn, resolve_schema
from pgjobs.errors import ConfigError, DatabaseError, PgJobsError, UnknownJobError
from pgjobs.limits import name_error
from pgjobs.migrations import check_schema
from pgjobs.named_queries import Queries

if TYPE_CHECKING:
    # The registry (the code, its profile, cron parsing) loads only for commands that use it.
    from pgjobs.registry import Registry

F = TypeVar("F", bound=Callable[..., Any])


def database_options(command: F) -> F:
    """``--dsn`` (``PGJOBS_DSN``, else libpq's ``PG*`` variables) and ``--schema``."""
    command = click.option(
        "--schema",
        envvar="PGJOBS_SCHEMA",
        default="pgjobs",
        show_default=True,
        help="Schema that holds the pgjobs tables.",
    )(command)
    return click.option(
        "--dsn",
        envvar="PGJOBS_DSN",
        default="",
        help="libpq connection string or URL (default: $PGJOBS_DSN, else libpq's PG* variables).",
    )(command)


def code_options(command: F) -> F:
    """``--app`` (``PGJOBS_APP``) and ``--profile`` (``PGJOBS_PROFILE``): where the code is."""
    command = click.option(
        "--profile",
        envvar="PGJOBS_PROFILE",
        type=click.Path(dir_okay=False),
        help="profile.yaml overriding the jobs' definitions.",
    )(command)
    return click.option("--app", envvar="PGJOBS_APP", help="Extensions to load, as module:attr.")(
        command
    )


def json_option(command: F) -> F:
    """``--json``: exact values for scripts instead of a table for people."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print JSON (exact values) instead of a table."
    )(command)


def params_option(help: str) -> Callable[[F], F]:
    """``-p/--param KEY=VALUE`` (repeatable), read by :func:`parse_parameters`."""
    return click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help=help)


# -- values -------------------------------------------------------------------------------------


def duration_callback(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> timedelta | None:
    """A click callback turning ``30s``, ``15m``, ``1h``, ``7d``, ``2w`` into a timedelta.

    A bad value is a one-line :class:`ConfigError` naming the option (exit code 2).
    """
    if value is None:
        return None
    from pgjobs.retention import parse_duration

    try:
        return parse_duration(value)
    except ConfigError as exc:
        raise ConfigError(f"--{(param.name or '').replace('_', '-')}: {exc}") from None


def queue_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A click callback checking a queue's name: not empty, no NUL, at most 200 characters.

    A bad name is a one-line :class:`ConfigError` (exit code 2).
    """
    if value is None:
        return None
    reason = name_error("queue name", value)
    if reason is not None:
        raise ConfigError(reason)
    return value


def parse_payload(text: str | None) -> dict[str, Any] | None:
    """``--payload``: a JSON object, or None when not given."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--payload is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--payload must be a JSON object, got {type(value).__name__}: {text}")
    return value


def parse_parameters(items: tuple[str, ...]) -> dict[str, str]:
    """``-p KEY=VALUE`` (repeatable) as a dict; the last value of a key wins."""
    parameters: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"invalid parameter {item!r}: use -p KEY=VALUE")
        parameters[key.strip()] = value
    return parameters


def optional_registry(app: str | None, profile: str | None) -> Registry | None:
    """The code's registry when ``--app``, ``PGJOBS_APP`` or a profile is given, else None.

    Read commands work from the database alone; the code only adds jobs no worker registered yet.
    """
    if not (app or os.environ.get("PGJOBS_APP") or profile or os.environ.get("PGJOBS_PROFILE")):
        return None
    from pgjobs.registry import load_registry

    return load_registry(app, profile)


def has_application_code(registry: Registry) -> bool:
    """True if the registry holds jobs besides pgjobs' own (extension ``pgjobs``), which are
    always there: False means no application code was found."""
    return any(d.extension != "pgjobs" for d in registry)


# -- the database -------------------------------------------------------------------------------


@dataclass
class Database:
    """An open connection to a migrated pgjobs schema, with its named queries."""

    conn: psycopg.Connection[Any]
    queries: Queries
    dsn: str

    def all(self, query: str, **params: Any) -> list[dict[str, Any]]:
        """Every row of a named query, as dicts."""
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(self.queries[query], params)
            return cur.fetchall()

    def one(self, query: str, **params: Any) -> dict[str, Any] | None:
        """The first row of a named query, or None."""
        rows = self.all(query, **params)
        return rows[0] if rows else None

    def value(self, query: str, **params: Any) -> Any:
        """The first column of the first row of a named query (None without rows)."""
        row = self.conn.execute(self.queries[query], params).fetchone()
        return None if row is None else row[0]

    def now(self) -> datetime:
        """The database clock, which every time shown is relative to."""
        value = self.value("db_now")
        assert isinstance(value, datetime)
        return value

    def notify(self, message: str) -> None:
        """Wake the workers listening on the pgjobs channel (sent at commit)."""
        self.conn.execute(
            self.queries["notify"], {"channel": self.queries.channel, "message": message}
        )

    def job_names(self) -> list[str]:
        """Names of every job in the database."""
        return [row["name"] for row in self.all("job_names")]

    def require_job(self, name: str, *, code: Registry | None = None) -> None:
        """Raise :meth:`unknown_job` unless the job is in the jobs table, defined by the loaded
        code, or has runs."""
        if name in self.job_names() or (code is not None and name in code):
            return
        if name not in self._run_job_names():
            raise self.unknown_job(name, code=code)

    def unknown_job(self, name: str, *, code: Registry | None = None) -> UnknownJobError:
        """The error for a job name nothing knows, suggesting the nearest known names."""
        from pgjobs.registry import suggest

        names = {*self.job_names(), *self._run_job_names(), *(code.names() if code else ())}
        return UnknownJobError(f"unknown job {name!r}; {suggest(name, sorted(names), 'jobs')}")

    def _run_job_names(self) -> set[str]:
        return {row["job"] for row in self.all("run_job_names")}


@contextmanager
def open_database(dsn: str, schema: str, *, check: bool = True) -> Iterator[Database]:
    """Connect (autocommit), check the schema is at head, and yield a :class:`Database`.

    Connection failures and errors of statements become one-line :class:`DatabaseError`.
    """
    target = resolve_dsn(dsn)
    name = resolve_schema(schema)
    with connect(target) as conn, database_errors():
        if check:
            check_schema(conn, name)
        yield Database(conn, Queries(name), target)


@contextmanager
def database_errors() -> Iterator[None]:
    """Turn a psycopg error escaping a command into a one-line :class:`DatabaseError`."""
    try:
        yield
    except PgJobsError:
        raise
    except psycopg.Error as exc:
        raise DatabaseError(f"database error: {first_line(exc)}") from exc
