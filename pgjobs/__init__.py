"""pgjobs: a Postgres-native cron scheduler and job queue for Python."""

from __future__ import annotations

from pgjobs.enqueue import (
    EnqueueRequest,
    enqueue,
    enqueue_many,
    enqueue_many_sync,
    enqueue_sync,
)
from pgjobs.errors import (
    ConfigError,
    CronError,
    DatabaseError,
    LockHeldError,
    PgJobsError,
    ProfileError,
    RegistrationError,
    SchemaError,
    UnknownJobError,
)
from pgjobs.job import CancelSignal, Extension, Job, JobContext, JobResult, RetryBackoff
from pgjobs.schedules import (
    alter_schedule,
    alter_schedule_sync,
    schedule,
    schedule_sync,
    unschedule,
    unschedule_sync,
)

__version__ = "0.1.0"

__all__ = [
    "CancelSignal",
    "ConfigError",
    "CronError",
    "DatabaseError",
    "EnqueueRequest",
    "Extension",
    "Job",
    "JobContext",
    "JobResult",
    "LockHeldError",
    "PgJobsError",
    "ProfileError",
    "RegistrationError",
    "RetryBackoff",
    "SchemaError",
    "UnknownJobError",
    "__version__",
    "alter_schedule",
    "alter_schedule_sync",
    "enqueue",
    "enqueue_many",
    "enqueue_many_sync",
    "enqueue_sync",
    "schedule",
    "schedule_sync",
    "unschedule",
    "unschedule_sync",
]
