"""pgjobs: a Postgres-native cron scheduler and job queue for Python."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
    PayloadError,
    PgJobsError,
    ProfileError,
    RegistrationError,
    SchemaError,
    UnknownJobError,
    UnknownRunError,
    WaitTimeout,
    WorkflowError,
)
from pgjobs.job import (
    CancelSignal,
    Dependency,
    Extension,
    Job,
    JobContext,
    JobResult,
    RetryBackoff,
)
from pgjobs.schedules import (
    alter_schedule,
    alter_schedule_sync,
    schedule,
    schedule_sync,
    unschedule,
    unschedule_sync,
)
from pgjobs.wait import FinishedRun, wait, wait_sync

if TYPE_CHECKING:
    from pgjobs.worker.embed import RunningWorker, run_worker

__version__ = "0.1.0"

__all__ = [
    "CancelSignal",
    "ConfigError",
    "CronError",
    "DatabaseError",
    "Dependency",
    "EnqueueRequest",
    "Extension",
    "FinishedRun",
    "Job",
    "JobContext",
    "JobResult",
    "LockHeldError",
    "PayloadError",
    "PgJobsError",
    "ProfileError",
    "RegistrationError",
    "RetryBackoff",
    "RunningWorker",
    "SchemaError",
    "UnknownJobError",
    "UnknownRunError",
    "WaitTimeout",
    "WorkflowError",
    "__version__",
    "alter_schedule",
    "alter_schedule_sync",
    "enqueue",
    "enqueue_many",
    "enqueue_many_sync",
    "enqueue_sync",
    "run_worker",
    "schedule",
    "schedule_sync",
    "unschedule",
    "unschedule_sync",
    "wait",
    "wait_sync",
]


def __getattr__(name: str) -> Any:
    # The worker (and what it imports) loads on first use: `import pgjobs` stays light.
    if name in ("RunningWorker", "run_worker"):
        from pgjobs.worker import embed

        return getattr(embed, name)
    raise AttributeError(f"module 'pgjobs' has no attribute {name!r}")
