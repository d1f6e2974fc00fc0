"""pgjobs: a Postgres-native cron scheduler and job queue for Python.

``import pgjobs`` loads nothing but this module and the exceptions: each public name below is
imported from its module on first use (``pgjobs.enqueue(...)`` loads the enqueue API and psycopg
then), so a command line that only reads the database does not pay for the rest.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from pgjobs.enqueue import (
        EnqueueRequest,
        enqueue,
        enqueue_many,
        enqueue_many_sync,
        enqueue_sync,
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
    from pgjobs.worker.embed import RunningWorker, run_worker

__version__ = "0.1.0"

#: The module each lazily imported public name comes from.
_LAZY = {
    **dict.fromkeys(
        ("EnqueueRequest", "enqueue", "enqueue_many", "enqueue_many_sync", "enqueue_sync"),
        "pgjobs.enqueue",
    ),
    **dict.fromkeys(
        ("CancelSignal", "Dependency", "Extension", "Job", "JobContext", "JobResult"),
        "pgjobs.job",
    ),
    "RetryBackoff": "pgjobs.job",
    **dict.fromkeys(
        (
            "alter_schedule",
            "alter_schedule_sync",
            "schedule",
            "schedule_sync",
            "unschedule",
            "unschedule_sync",
        ),
        "pgjobs.schedules",
    ),
    **dict.fromkeys(("FinishedRun", "wait", "wait_sync"), "pgjobs.wait"),
    **dict.fromkeys(("RunningWorker", "run_worker"), "pgjobs.worker.embed"),
}

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
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pgjobs' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """The ``pgjobs`` module, keeping its public functions ahead of same-named submodules.

    ``pgjobs.enqueue``, ``pgjobs.wait`` and ``pgjobs.schedule`` are functions, and also the names
    of submodules (``pgjobs/enqueue.py``, ``pgjobs/wait.py``, ``pgjobs/schedule.py``). Importing a
    submodule sets the package's attribute of its name to the module; with the functions loaded
    on first use that could happen before or after, so the import system's assignment is
    declined here and the name keeps resolving to the function. ``from pgjobs.enqueue import X``
    still finds the module (in ``sys.modules``).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in _LAZY:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
