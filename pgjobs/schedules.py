"""Schedules at runtime: further schedules of a job, added, changed and removed in the caller's
transaction, the way pg_cron's ``cron.schedule`` works.

A job's own schedule (``Job.schedule``, or the profile's entry for the job) is the schedule
named ``default``; it comes from code or the profile and is not changed here. Further schedules
are rows of ``pgjobs.schedules``, each with its own cron, timezone, payload and parameters, and a
name unique per job: listed in the profile (of which only the pause may change here), or added at
runtime. :func:`schedule` adds one or replaces the one of that name;
:func:`alter_schedule` changes some of its settings; :func:`unschedule` removes it (it ticks no
more; runs it already queued stay). A new or changed cron takes effect from its next tick after
the change.

Each function calls the SQL function of the same name (docs/sql.md) on the caller's connection,
as :func:`pgjobs.enqueue` does (``conn`` of the same kinds, see :mod:`pgjobs.caller`): it never
commits, and the workers hear of the change (NOTIFY) when the caller commits; a rollback leaves
nothing. The cron expression and the timezone are checked here first, so a bad one raises the
exact :class:`CronError` or :class:`ConfigError`; the database checks the job, the cron's shape
and the timezone again. A refusal never aborts the caller's transaction: a call made inside one
runs under a savepoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pgjobs.caller import (
    Api,
    Plan,
    async_connection,
    drive_async,
    drive_sync,
    in_transaction,
    sync_connection,
)
from pgjobs.db import first_line, resolve_schema
from pgjobs.enqueue import JobRef, check_run_input, unknown_job_error
from pgjobs.errors import ConfigError, SchemaError
from pgjobs.job import Job
from pgjobs.named_queries import Queries
from pgjobs.schedule import CronSchedule, validate_timezone


def _api(name: str) -> Api:
    return Api(
        sync_name=f"{name}_sync",
        async_name=name,
        sync_call=f"`pgjobs.{name}_sync(...)`",
        async_call=f"`await pgjobs.{name}(...)`",
        activity="changing a schedule",
    )


_SCHEDULE, _UNSCHEDULE, _ALTER = _api("schedule"), _api("unschedule"), _api("alter_schedule")


async def schedule(
    conn: Any,
    job: JobRef,
    cron: str,
    *,
    name: str | None = None,
    timezone: str = "UTC",
    payload: Mapping[str, Any] | None = None,
    parameters: Mapping[str, str] | None = None,
    misfire: str | None = None,
    enabled: bool = True,
    overlap: str | None = None,
    schema: str | None = None,
) -> str:
    """Add a schedule to ``job``, or replace its runtime schedule named ``name``, in the caller's
    transaction; return the schedule's name (by default ``cron`` itself).

    ``conn`` is a psycopg ``AsyncConnection`` or a SQLAlchemy ``AsyncConnection`` or
    ``AsyncSession``; ``job`` is the job's name, or its :class:`~pgjobs.Job` class or instance.
    ``cron`` is read in ``timezone`` (an IANA name) as the job's own schedule is. Each tick
    queues a run with ``payload`` (a JSON object) as ``ctx.payload`` and ``parameters`` merged
    over the profile's; ``misfire`` (``coalesce``, ``skip``, ``backfill``) and ``overlap``
    (``skip``: a tick that finds a run of the job holding its lock is skipped; ``allow``)
    default to the job's policies; with ``enabled=False`` the schedule is kept but does not
    tick. Workers tick it from its first fire time after the change is committed.

    Raises :class:`CronError` (which field and why) or :class:`ConfigError` (an unknown timezone,
    the name ``default`` or of a schedule from the profile, another bad argument) and
    :class:`UnknownJobError` (naming the nearest jobs) when no worker has registered ``job``;
    none leaves anything behind or aborts the caller's transaction.
    """
    params = _schedule_params(
        job, cron, name, timezone, payload, parameters, misfire, enabled, overlap
    )
    pg = await async_connection(conn, _SCHEDULE)
    plan = _call(schema, "call_schedule", params, in_transaction(pg), unknown_job=True)
    result: str = await drive_async(pg, plan)
    return result


def schedule_sync(
    conn: Any,
    job: JobRef,
    cron: str,
    *,
    name: str | None = None,
    timezone: str = "UTC",
    payload: Mapping[str, Any] | None = None,
    parameters: Mapping[str, str] | None = None,
    misfire: str | None = None,
    enabled: bool = True,
    overlap: str | None = None,
    schema: str | None = None,
) -> str:
    """:func:`schedule` for sync code: ``conn`` is a psycopg ``Connection`` or a SQLAlchemy
    ``Connection`` or ``Session``. Same arguments, same guarantees."""
    params = _schedule_params(
        job, cron, name, timezone, payload, parameters, misfire, enabled, overlap
    )
    pg = sync_connection(conn, _SCHEDULE)
    plan = _call(schema, "call_schedule", params, in_transaction(pg), unknown_job=True)
    result: str = drive_sync(pg, plan)
    return result


async def unschedule(conn: Any, job: JobRef, name: str, *, schema: str | None = None) -> bool:
    """Remove ``job``'s runtime schedule ``name`` in the caller's transaction: once committed it
    ticks no more (runs it already queued stay). Returns whether it existed.

    ``conn`` as for :func:`schedule`. Raises :class:`ConfigError` for the name ``default`` (the
    job's own schedule: pause the job instead) and for a schedule from the profile.
    """
    params = _names(job, name)
    pg = await async_connection(conn, _UNSCHEDULE)
    plan = _call(schema, "call_unschedule", params, in_transaction(pg))
    return bool(await drive_async(pg, plan))


def unschedule_sync(conn: Any, job: JobRef, name: str, *, schema: str | None = None) -> bool:
    """:func:`unschedule` for sync code; ``conn`` as for :func:`schedule_sync`."""
    params = _names(job, name)
    pg = sync_connection(conn, _UNSCHEDULE)
    plan = _call(schema, "call_unschedule", params, in_transaction(pg))
    return bool(drive_sync(pg, plan))


async def alter_schedule(
    conn: Any,
    job: JobRef,
    name: str,
    *,
    cron: str | None = None,
    timezone: str | None = None,
    payload: Mapping[str, Any] | None = None,
    parameters: Mapping[str, str] | None = None,
    misfire: str | None = None,
    enabled: bool | None = None,
    paused: bool | None = None,
    overlap: str | None = None,
    schema: str | None = None,
) -> None:
    """Change some settings of ``job``'s schedule ``name`` in the caller's transaction;
    an argument left None keeps its setting. A new cron or timezone takes effect from its next
    tick after the change; ``paused=True`` holds the schedule's ticks until ``paused=False``.

    ``conn`` as for :func:`schedule`. Raises :class:`CronError` or :class:`ConfigError` for a bad
    argument, the name ``default``, a schedule the job does not have, or a change other than
    the pause of a schedule from the profile; none leaves anything behind or aborts the
    caller's transaction.
    """
    params = _alter_params(
        job, name, cron, timezone, payload, parameters, misfire, enabled, paused, overlap
    )
    pg = await async_connection(conn, _ALTER)
    await drive_async(pg, _call(schema, "call_alter_schedule", params, in_transaction(pg)))


def alter_schedule_sync(
    conn: Any,
    job: JobRef,
    name: str,
    *,
    cron: str | None = None,
    timezone: str | None = None,
    payload: Mapping[str, Any] | None = None,
    parameters: Mapping[str, str] | None = None,
    misfire: str | None = None,
    enabled: bool | None = None,
    paused: bool | None = None,
    overlap: str | None = None,
    schema: str | None = None,
) -> None:
    """:func:`alter_schedule` for sync code; ``conn`` as for :func:`schedule_sync`."""
    params = _alter_params(
        job, name, cron, timezone, payload, parameters, misfire, enabled, paused, overlap
    )
    pg = sync_connection(conn, _ALTER)
    drive_sync(pg, _call(schema, "call_alter_schedule", params, in_transaction(pg)))


# -- checking arguments, before any statement ---------------------------------------------------


def _schedule_params(
    job: JobRef,
    cron: str,
    name: str | None,
    timezone: str,
    payload: Mapping[str, Any] | None,
    parameters: Mapping[str, str] | None,
    misfire: str | None,
    enabled: bool,
    overlap: str | None,
) -> dict[str, Any]:
    params = _names(job, name, required=False)
    CronSchedule.parse(_text("cron", cron), _text("timezone", timezone))
    params.update(
        cron=cron,
        timezone=timezone,
        misfire=_optional_text("misfire", misfire),
        overlap=_optional_text("overlap", overlap),
        enabled=_flag("enabled", enabled),
        **_run_input(payload, parameters),
    )
    return params


def _alter_params(
    job: JobRef,
    name: str,
    cron: str | None,
    timezone: str | None,
    payload: Mapping[str, Any] | None,
    parameters: Mapping[str, str] | None,
    misfire: str | None,
    enabled: bool | None,
    paused: bool | None,
    overlap: str | None,
) -> dict[str, Any]:
    params = _names(job, name)
    if cron is not None:
        # The fields do not depend on the zone: the schedule's own is the database's to know.
        CronSchedule.parse(_text("cron", cron), _text("timezone", timezone or "UTC"))
    elif timezone is not None:
        validate_timezone(_text("timezone", timezone))
    params.update(
        cron=cron,
        timezone=timezone,
        misfire=_optional_text("misfire", misfire),
        overlap=_optional_text("overlap", overlap),
        enabled=None if enabled is None else _flag("enabled", enabled),
        paused=None if paused is None else _flag("paused", paused),
        **_run_input(payload, parameters),
    )
    return params


def _names(job: JobRef, name: str | None, *, required: bool = True) -> dict[str, Any]:
    """The job's name and the schedule's (the database checks the latter's rules)."""
    is_job = isinstance(job, Job) or (isinstance(job, type) and issubclass(job, Job))
    given = getattr(job, "name", None) if is_job else job
    if not isinstance(given, str) or not given.strip():
        raise ConfigError(f"job must be a job name or a Job class, got {job!r}")
    if name is None and not required:
        return {"job": _text("job", given), "name": None}
    return {"job": _text("job", given), "name": _text("name", name)}


def _run_input(
    payload: Mapping[str, Any] | None, parameters: Mapping[str, str] | None
) -> dict[str, Jsonb | None]:
    check_run_input(payload, parameters)
    return {
        "payload": None if payload is None else Jsonb(dict(payload)),
        "parameters": None if parameters is None else Jsonb(dict(parameters)),
    }


def _text(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, got {value!r}")
    if "\x00" in value:
        raise ConfigError(f"{what} contains a NUL character, which Postgres cannot store")
    return value


def _optional_text(what: str, value: object) -> str | None:
    return None if value is None else _text(what, value)


def _flag(what: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{what} must be True or False, got {value!r}")
    return value


# -- the call -----------------------------------------------------------------------------------


@cache
def _queries(schema: str) -> Queries:
    return Queries(schema)


def _call(
    schema: str | None,
    query: str,
    params: Mapping[str, Any],
    savepoint: bool,
    *,
    unknown_job: bool = False,
) -> Plan[Any]:
    """One call of a schedule function, returning its value. Inside the caller's transaction it
    runs under a savepoint, undone alone when the function refuses, so that the transaction
    carries on. With ``unknown_job``, what the function does not find is the job, named with
    the nearest jobs as :func:`pgjobs.enqueue` names them; else it is the schedule."""
    queries = _queries(resolve_schema(schema))
    if savepoint:
        yield queries["open_schedule_savepoint"], None
    try:
        rows = yield queries[query], params
    except psycopg.Error as err:
        if savepoint:
            yield queries["rollback_to_schedule_savepoint"], None
        if unknown_job and isinstance(err, psycopg.errors.UndefinedObject):
            names = yield queries["job_names"], None
            raise unknown_job_error(params["job"], [name for (name,) in names]) from None
        raise _refusal(err, queries.schema) from None
    if savepoint:
        yield queries["release_schedule_savepoint"], None
    return rows[0][0]


def _refusal(err: psycopg.Error, schema: str) -> Exception:
    """The pgjobs error for what a schedule function raised: its message and hint as one line.
    Anything else (a lost connection, a missing privilege) is raised as it came."""
    line = err.diag.message_primary or first_line(err)
    if err.diag.message_hint:
        line += f"; {err.diag.message_hint}"
    if isinstance(
        err,
        psycopg.errors.UndefinedObject
        | psycopg.errors.InvalidParameterValue
        # A schedule from the profile, of which only the pause may change here.
        | psycopg.errors.ObjectNotInPrerequisiteState,
    ):
        return ConfigError(line)
    if isinstance(err, psycopg.errors.UndefinedFunction):
        from pgjobs.migrations import upgrade_command  # only on this error path

        return SchemaError(
            f'pgjobs schema "{schema}" has no schedule functions: it is older than this pgjobs; '
            f"run `{upgrade_command(schema)}`"
        )
    return err
