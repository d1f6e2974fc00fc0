"""The one exception hierarchy of pgjobs.

Every error a user can cause (bad cron, bad profile, unknown job, unreachable database, schema not
migrated) is a :class:`PgJobsError` whose ``str()`` is one clear line; the CLI prints that line and
exits with :attr:`PgJobsError.exit_code`.
"""

from __future__ import annotations


class PgJobsError(Exception):
    """Base of every error pgjobs raises on purpose. ``str(err)`` is one line for a person."""

    exit_code: int = 1


class ConfigError(PgJobsError):
    """Bad input from code or configuration: a job definition, the profile, a CLI argument."""

    exit_code = 2


class CronError(ConfigError):
    """An invalid cron expression; the message says which field is wrong and why."""


class RegistrationError(ConfigError):
    """A job or extension that cannot be registered; the message names extension and job."""


class ProfileError(ConfigError):
    """An invalid profile; the message starts with ``file:line:``."""


class UnknownJobError(PgJobsError):
    """A job name that nothing registers; the message suggests the nearest names."""

    exit_code = 2


class DatabaseError(PgJobsError):
    """The database cannot be reached or refused a statement pgjobs needed."""

    exit_code = 3


class SchemaError(DatabaseError):
    """The pgjobs schema is missing or older than the code; says which command fixes it."""


class LockHeldError(PgJobsError):
    """A run of a non-overlapping job was refused because another run holds the job's lock."""


class PayloadError(ConfigError):
    """A payload that does not match its job's declared payload type; the message names the
    job and the field. Raised by enqueue; a run whose stored payload does not match fails with
    this error type, without calling the job."""


class WorkflowError(ConfigError):
    """Dependencies between runs that cannot be enqueued (``after``, ``after_any``, ``key``): a
    cycle, a key that no request of the call has, a key given twice, a request that depends on
    itself, a ``dedup_key`` in a call with dependencies. Raised before any statement, so the
    caller's transaction is left as it was; the message names the request and the key."""


class UnknownRunError(PgJobsError):
    """A run id that no run has (never had, or its row was pruned)."""


class WaitTimeout(PgJobsError):
    """A run waited for (``pgjobs.wait``, ``jobs run --wait``) had not ended when the wait's time
    ran out. The run itself is left as it is: ``run_id`` is the attempt still going, ``status``
    where it stood. Exit code 124, as ``timeout(1)``'s, tells a script this apart from a failed
    run (1)."""

    exit_code = 124

    def __init__(self, message: str, *, run_id: int, status: str) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.status = status
