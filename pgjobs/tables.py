"""SQLAlchemy Core definitions of the pgjobs schema, for applications that query it from Python.

The DDL itself lives in ``sql/`` and is applied by the migrations; these definitions mirror it and
a test compares them with the migrated database (alembic's ``compare_metadata``), so they never
drift. Do not create tables from them (``metadata.create_all``): run ``pgjobs db upgrade``.

Example::

    from sqlalchemy import select
    from pgjobs.tables import runs

    failed = select(runs.c.id, runs.c.job).where(runs.c.status == "failed")
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    TextClause,
    false,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from pgjobs.db import DEFAULT_SCHEMA, resolve_schema
from pgjobs.job import RUN_STATUSES

__all__ = [
    "all_schedules",
    "job_status",
    "jobs",
    "metadata",
    "metadata_for",
    "queues",
    "rate_buckets",
    "run_dependencies",
    "run_history",
    "run_locks",
    "run_waits",
    "runs",
    "schedules",
    "views",
    "views_for",
    "worker_jobs",
    "workers",
]


def _timestamp() -> DateTime:
    return DateTime(timezone=True)


def _now() -> TextClause:
    return text("now()")


def _empty_text_array() -> TextClause:
    return text("ARRAY[]::text[]")


def _empty_json_object() -> TextClause:
    return text("jsonb_build_object()")


def _one_of(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    quoted = ", ".join(f"'{value}'" for value in values)
    return CheckConstraint(f"{column} IN ({quoted})", name=name)


RUN_TRIGGERS = ("schedule", "manual", "enqueue", "retry")
"""Values of ``runs.trigger``."""


WORKER_STATES = ("running", "stopping", "stopped", "dead")
"""Values of ``workers.state``."""

RATE_BUCKET_SCOPES = ("job", "queue")
MISFIRE_POLICIES = ("coalesce", "skip", "backfill")
OVERLAP_POLICIES = ("skip", "allow")
SCHEDULE_ORIGINS = ("profile", "runtime")
"""Values of ``rate_buckets.scope``: a job's rate limit, or a queue's."""


def metadata_for(schema: str = DEFAULT_SCHEMA) -> MetaData:
    """The tables of the pgjobs schema ``schema``: ``jobs``, ``runs``, ``run_dependencies``,
    ``run_locks``, ``workers``, ``worker_jobs``, ``queues`` and ``rate_buckets``.

    Each call returns a new :class:`MetaData`; look tables up with ``md.tables[f"{schema}.runs"]``.
    """
    md = MetaData(schema=resolve_schema(schema))

    Table(
        "jobs",
        md,
        Column("name", Text, primary_key=True),
        Column("extension", Text, nullable=False),
        Column("description", Text, nullable=False, server_default=text("''")),
        Column("schedule", Text),
        Column("schedule_source", Text, nullable=False, server_default=text("'code'")),
        Column("timezone", Text, nullable=False, server_default=text("'UTC'")),
        Column("enabled", Boolean, nullable=False, server_default=true()),
        Column("paused", Boolean, nullable=False, server_default=false()),
        Column("paused_at", _timestamp()),
        Column("tags", ARRAY(Text), nullable=False, server_default=_empty_text_array()),
        Column("timeout_seconds", Double),
        Column("max_attempts", Integer, nullable=False, server_default=text("1")),
        Column("retry_backoff", JSONB, nullable=False, server_default=_empty_json_object()),
        Column("overlap", Text, nullable=False, server_default=text("'skip'")),
        Column("misfire", Text, nullable=False, server_default=text("'coalesce'")),
        Column("backfill_cap", Integer, nullable=False, server_default=text("100")),
        Column("priority", Integer, nullable=False, server_default=text("0")),
        Column("queue", Text, nullable=False, server_default=text("'default'")),
        Column("parameters", JSONB, nullable=False, server_default=_empty_json_object()),
        Column("next_fire_at", _timestamp()),
        Column("last_tick_at", _timestamp()),
        Column("registered_by", Text),
        Column("registered_at", _timestamp(), nullable=False, server_default=_now()),
        Column("updated_at", _timestamp(), nullable=False, server_default=_now()),
        Column("max_concurrency", Integer),
        Column("concurrency_key", Text),
        Column("rate_limit", Text),
        _one_of("schedule_source", ("code", "profile"), "jobs_schedule_source_check"),
        CheckConstraint("max_attempts >= 1", name="jobs_max_attempts_check"),
        _one_of("overlap", OVERLAP_POLICIES, "jobs_overlap_check"),
        _one_of("misfire", MISFIRE_POLICIES, "jobs_misfire_check"),
        CheckConstraint("backfill_cap >= 1", name="jobs_backfill_cap_check"),
        CheckConstraint("max_concurrency >= 1", name="jobs_max_concurrency_check"),
        Index(
            "jobs_next_fire_at_idx",
            "next_fire_at",
            postgresql_where=text("schedule IS NOT NULL AND enabled AND NOT paused"),
        ),
        Index("jobs_paused_idx", "name", postgresql_where=text("paused")),
        Index(
            "jobs_limited_idx",
            "name",
            postgresql_where=text("max_concurrency IS NOT NULL OR concurrency_key IS NOT NULL"),
        ),
    )

    Table(
        "runs",
        md,
        Column("id", BigInteger, Identity(always=True), primary_key=True),
        Column("job", Text, nullable=False),
        Column("trigger", Text, nullable=False),
        Column("scheduled_for", _timestamp(), nullable=False, server_default=_now()),
        Column("status", Text, nullable=False, server_default=text("'queued'")),
        Column("attempt", Integer, nullable=False, server_default=text("1")),
        Column("max_attempts", Integer, nullable=False, server_default=text("1")),
        Column("retry_of", BigInteger),
        Column("payload", JSONB),
        Column("parameters", JSONB),
        Column("priority", Integer, nullable=False, server_default=text("0")),
        Column("queue", Text, nullable=False, server_default=text("'default'")),
        Column("dedup_key", Text),
        Column("worker_id", Text),
        Column("created_at", _timestamp(), nullable=False, server_default=_now()),
        Column("started_at", _timestamp()),
        Column("finished_at", _timestamp()),
        Column("heartbeat_at", _timestamp()),
        Column("lease_expires_at", _timestamp()),
        Column("cancel_requested_at", _timestamp()),
        Column("duration_seconds", Double),
        Column("message", Text),
        Column("data", JSONB),
        Column("items_processed", Integer),
        Column("items_failed", Integer),
        Column("error_type", Text),
        Column("error_message", Text),
        Column("error_traceback", Text),
        Column(
            "logs",
            Text,
            comment="Last lines the run logged through ctx.log (at most 200 lines / 64 KB), "
            "oldest first",
        ),
        Column("concurrency_key", Text),
        Column(
            "slot",
            Integer,
            comment="The concurrency slot of its job (or key) a limited run holds while running",
        ),
        _one_of("trigger", RUN_TRIGGERS, "runs_trigger_check"),
        _one_of("status", RUN_STATUSES, "runs_status_check"),
        Column(
            "schedule",
            Text,
            comment="The schedule whose tick made this run (NULL: the job's own schedule)",
        ),
        Column("progress_done", BigInteger),
        Column("progress_total", BigInteger),
        Column("progress_message", Text),
        Column("progress_at", _timestamp()),
        Column("trace_context", JSONB),
        Column(
            "awaited",
            Boolean,
            nullable=False,
            server_default=text("false"),
            comment="Someone waits for this run's end (pgjobs.wait): each change of its status "
            "notifies awaited_channel(schema) with its id.",
        ),
        Column(
            "blocked_by",
            Integer,
            comment="NULL: the run has no dependencies. Otherwise how many of its dependencies "
            "are not yet satisfied; a blocked run is queued when it reaches 0.",
        ),
        Index(
            "runs_schedule_tick_key",
            "job",
            text("coalesce(schedule, '')"),
            "scheduled_for",
            unique=True,
            postgresql_where=text("trigger = 'schedule'"),
        ),
        Index(
            "runs_dedup_key",
            "job",
            "dedup_key",
            unique=True,
            postgresql_where=text("dedup_key IS NOT NULL AND status = 'queued'"),
        ),
        Index(
            "runs_claim_idx",
            "priority",
            "scheduled_for",
            "id",
            postgresql_where=text("status = 'queued'"),
        ),
        Index("runs_lease_idx", "lease_expires_at", postgresql_where=text("status = 'running'")),
        Index("runs_worker_idx", "worker_id", postgresql_where=text("status = 'running'")),
        Index("runs_job_id_idx", "job", "id"),
        Index("runs_retry_of_idx", "retry_of", postgresql_where=text("retry_of IS NOT NULL")),
        Index("runs_created_at_brin", "created_at", postgresql_using="brin"),
        Index(
            "runs_delayed_idx",
            "scheduled_for",
            postgresql_where=text("status = 'queued' AND scheduled_for > created_at"),
        ),
        Index("runs_blocked_idx", "id", postgresql_where=text("status = 'blocked'")),
        Index(
            "runs_slot_idx",
            "job",
            text("coalesce(concurrency_key, '')"),
            "slot",
            unique=True,
            postgresql_where=text("status = 'running' AND slot IS NOT NULL"),
        ),
    )

    Table(
        "run_dependencies",
        md,
        Column(
            "run_id",
            BigInteger,
            ForeignKey(
                f"{md.schema}.runs.id", ondelete="CASCADE", name="run_dependencies_run_id_fkey"
            ),
            nullable=False,
        ),
        Column(
            "depends_on",
            BigInteger,
            ForeignKey(
                f"{md.schema}.runs.id", ondelete="CASCADE", name="run_dependencies_depends_on_fkey"
            ),
            nullable=False,
        ),
        Column("any_outcome", Boolean, nullable=False, server_default=false()),
        PrimaryKeyConstraint("run_id", "depends_on", name="run_dependencies_pkey"),
        Index("run_dependencies_depends_on_idx", "depends_on"),
        comment="Edges of workflows: run_id waits for depends_on (its latest attempt) to succeed, "
        "or with any_outcome to end whatever its outcome.",
    )

    Table(
        "run_locks",
        md,
        Column("job", Text, nullable=False),
        Column("run_id", BigInteger, nullable=False),
        Column("worker_id", Text, nullable=False),
        Column("acquired_at", _timestamp(), nullable=False, server_default=_now()),
        Column("lease_expires_at", _timestamp(), nullable=False),
        Column("lock_key", Text, nullable=False, server_default=text("''")),
        Column("slot", Integer, nullable=False, server_default=text("1")),
        PrimaryKeyConstraint("job", "lock_key", "slot", name="run_locks_pkey"),
        Index("run_locks_run_id_idx", "run_id"),
    )

    Table(
        "workers",
        md,
        Column("id", Text, primary_key=True),
        Column("host", Text, nullable=False),
        Column("pid", Integer, nullable=False),
        Column("version", Text, nullable=False),
        Column("queues", ARRAY(Text), nullable=False),
        Column("concurrency", Integer, nullable=False),
        Column("state", Text, nullable=False, server_default=text("'running'")),
        Column("started_at", _timestamp(), nullable=False, server_default=_now()),
        Column("heartbeat_at", _timestamp(), nullable=False, server_default=_now()),
        Column("expires_at", _timestamp(), nullable=False),
        Column("stopped_at", _timestamp()),
        Column(
            "waiting",
            Integer,
            nullable=False,
            server_default=text("0"),
            comment="Free slots of a listening worker whose last claim came short: a statement "
            "queueing due runs wakes it on wake_channel(schema, id) and sets this to 0.",
        ),
        Column("waiting_since", _timestamp()),
        _one_of("state", WORKER_STATES, "workers_state_check"),
    )

    Table(
        "worker_jobs",
        md,
        Column(
            "worker_id",
            Text,
            ForeignKey(f"{md.schema}.workers.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        Column("job", Text, primary_key=True),
        Column("schedule", Text),
        Column("timezone", Text, nullable=False, server_default=text("'UTC'")),
        Index("worker_jobs_job_idx", "job"),
    )

    Table(
        "queues",
        md,
        Column("name", Text, primary_key=True),
        Column("paused", Boolean, nullable=False, server_default=false()),
        Column("paused_at", _timestamp()),
        Column("rate_limit", Text),
        Column("updated_at", _timestamp(), nullable=False, server_default=_now()),
        Index("queues_paused_idx", "name", postgresql_where=text("paused")),
    )

    Table(
        "rate_buckets",
        md,
        Column("scope", Text, nullable=False),
        Column("name", Text, nullable=False),
        Column("rate", Double, nullable=False),
        Column("burst", Double, nullable=False),
        Column("tokens", Double, nullable=False),
        Column("granted", Integer, nullable=False, server_default=text("0")),
        Column("updated_at", _timestamp(), nullable=False, server_default=_now()),
        Column("shard", SmallInteger, nullable=False, server_default=text("0")),
        _one_of("scope", RATE_BUCKET_SCOPES, "rate_buckets_scope_check"),
        CheckConstraint("rate > 0", name="rate_buckets_rate_check"),
        CheckConstraint("burst >= 1", name="rate_buckets_burst_check"),
        PrimaryKeyConstraint("scope", "name", "shard", name="rate_buckets_pkey"),
    )

    Table(
        "timezone_names",
        md,
        Column("name", Text, primary_key=True),
        comment="The IANA zone names of the server when pgjobs was migrated: what timezone_error "
        "accepts without reading pg_timezone_names.",
    )

    Table(
        "schedules",
        md,
        Column("job", Text, ForeignKey("jobs.name", ondelete="CASCADE"), nullable=False),
        Column("name", Text, nullable=False),
        Column("cron", Text, nullable=False),
        Column("timezone", Text, nullable=False, server_default=text("'UTC'::text")),
        Column("payload", JSONB),
        Column("parameters", JSONB),
        Column("enabled", Boolean, nullable=False, server_default=true()),
        Column("paused", Boolean, nullable=False, server_default=false()),
        Column("misfire", Text),
        Column("overlap", Text),
        Column("origin", Text, nullable=False, server_default=text("'runtime'::text")),
        Column("next_fire_at", _timestamp()),
        Column("last_tick_at", _timestamp()),
        Column("error", Text),
        Column("created_at", _timestamp(), nullable=False, server_default=_now()),
        Column("updated_at", _timestamp(), nullable=False, server_default=_now()),
        CheckConstraint(
            "length(name) BETWEEN 1 AND 100 AND name = btrim(name) AND name !~ '[[:cntrl:]]'"
            " AND name <> 'default'",
            name="schedules_name_check",
        ),
        CheckConstraint(
            "payload IS NULL OR jsonb_typeof(payload) = 'object'", name="schedules_payload_check"
        ),
        CheckConstraint(
            "parameters IS NULL OR jsonb_typeof(parameters) = 'object'",
            name="schedules_parameters_check",
        ),
        _one_of("misfire", MISFIRE_POLICIES, "schedules_misfire_check"),
        _one_of("overlap", OVERLAP_POLICIES, "schedules_overlap_check"),
        _one_of("origin", SCHEDULE_ORIGINS, "schedules_origin_check"),
        PrimaryKeyConstraint("job", "name", name="schedules_pkey"),
        Index(
            "schedules_due_idx",
            text("next_fire_at NULLS FIRST"),
            postgresql_where=text("enabled AND NOT paused AND error IS NULL"),
        ),
        comment="Schedules of jobs added at runtime (a job's own schedule is on its jobs row)",
    )
    return md


def views_for(schema: str = DEFAULT_SCHEMA) -> MetaData:
    """The read-only views ``job_status``, ``run_history``, ``run_waits`` and ``all_schedules``
    of the schema ``schema``, as tables.

    Kept apart from :func:`metadata_for` so that nothing mistakes them for tables to create.
    """
    md = MetaData(schema=resolve_schema(schema))

    Table(
        "run_history",
        md,
        Column("id", BigInteger),
        Column("job", Text),
        Column("trigger", Text),
        Column("status", Text),
        Column("attempt", Integer),
        Column("retry_of", BigInteger),
        Column("scheduled_for", _timestamp()),
        Column("started_at", _timestamp()),
        Column("finished_at", _timestamp()),
        Column("duration_seconds", Double),
        Column("lag_seconds", Double),
        Column("worker_id", Text),
        Column("host", Text),
        Column("pid", Integer),
        Column("queue", Text),
        Column("priority", Integer),
        Column("message", Text),
        Column("data", JSONB),
        Column("items_processed", Integer),
        Column("items_failed", Integer),
        Column("error_type", Text),
        Column("error_message", Text),
        Column("payload", JSONB),
        Column("progress_done", BigInteger),
        Column("progress_total", BigInteger),
        Column("progress_message", Text),
        Column("progress_at", _timestamp()),
    )

    Table(
        "job_status",
        md,
        Column("name", Text),
        Column("extension", Text),
        Column("schedule", Text),
        Column("timezone", Text),
        Column("enabled", Boolean),
        Column("paused", Boolean),
        Column("registered", Boolean),
        Column("next_fire_at", _timestamp()),
        Column("last_run_id", BigInteger),
        Column("last_status", Text),
        Column("last_started_at", _timestamp()),
        Column("last_finished_at", _timestamp()),
        Column("last_duration_seconds", Double),
        Column("last_message", Text),
        Column("running_now", BigInteger),
        Column("queued_now", BigInteger),
        Column("succeeded_24h", BigInteger),
        Column("failed_24h", BigInteger),
        Column("skipped_24h", BigInteger),
        Column("p50_seconds_24h", Double),
        Column("p95_seconds_24h", Double),
        Column("queue", Text),
        Column("max_concurrency", Integer),
        Column("concurrency_key", Text),
        Column("rate_limit", Text),
        Column("queue_paused", Boolean),
    )

    Table(
        "run_waits",
        md,
        Column("id", BigInteger),
        Column("job", Text),
        Column("queue", Text),
        Column("trigger", Text),
        Column("priority", Integer),
        Column("scheduled_for", _timestamp()),
        Column("concurrency_key", Text),
        Column("waiting_for", Text),
        Column("detail", Text),
        Column("waiting_seconds", Double),
    )

    Table(
        "all_schedules",
        md,
        Column("job", Text),
        Column("name", Text),
        Column("cron", Text),
        Column("timezone", Text),
        Column("payload", JSONB),
        Column("parameters", JSONB),
        Column("enabled", Boolean),
        Column("paused", Boolean),
        Column("job_paused", Boolean),
        Column("misfire", Text),
        Column("overlap", Text),
        Column("origin", Text),
        Column("next_fire_at", _timestamp()),
        Column("last_tick_at", _timestamp()),
        Column("error", Text),
        Column("created_at", _timestamp()),
        Column("updated_at", _timestamp()),
    )
    return md


metadata = metadata_for(DEFAULT_SCHEMA)
"""The tables of the default ``pgjobs`` schema."""

views = views_for(DEFAULT_SCHEMA)
"""The views of the default ``pgjobs`` schema."""

jobs = metadata.tables[f"{DEFAULT_SCHEMA}.jobs"]
"""One row per registered job: its effective definition and the tick watermark."""

runs = metadata.tables[f"{DEFAULT_SCHEMA}.runs"]
"""The queue and the history in one table: one row per attempt."""

run_dependencies = metadata.tables[f"{DEFAULT_SCHEMA}.run_dependencies"]
"""Edges of workflows: which run waits for which (``after`` / ``after_any``)."""

run_locks = metadata.tables[f"{DEFAULT_SCHEMA}.run_locks"]
"""The slots of limited jobs: which run holds slot ``slot`` of (job, concurrency key), on which
worker, until when."""

workers = metadata.tables[f"{DEFAULT_SCHEMA}.workers"]
"""One row per live (or recently stopped) worker process."""

worker_jobs = metadata.tables[f"{DEFAULT_SCHEMA}.worker_jobs"]
"""The jobs each worker's code registers, with the schedule and timezone it has for each."""

queues = metadata.tables[f"{DEFAULT_SCHEMA}.queues"]
"""Controlled queues: paused or not, and their rate limit (a queue without a row is neither)."""

rate_buckets = metadata.tables[f"{DEFAULT_SCHEMA}.rate_buckets"]
"""The token buckets of the jobs' and queues' rate limits."""

schedules = metadata.tables[f"{DEFAULT_SCHEMA}.schedules"]
"""Schedules added to jobs at runtime (``pgjobs.schedule()``): cron, timezone, payload, ticks."""

job_status = views.tables[f"{DEFAULT_SCHEMA}.job_status"]
"""Per job: schedule, next fire, last outcome, running now, 24 h counts and durations."""

run_history = views.tables[f"{DEFAULT_SCHEMA}.run_history"]
"""Runs for people, with worker host and pid, the lag behind schedule and the last progress
reported."""

all_schedules = views.tables[f"{DEFAULT_SCHEMA}.all_schedules"]
"""Every schedule: each job's own (``default``, from code or profile) and the runtime ones."""

run_waits = views.tables[f"{DEFAULT_SCHEMA}.run_waits"]
"""Per queued or blocked run: what it waits for (its time, a pause, a concurrency limit, a rate
limit, a worker, its dependencies) and the detail."""
