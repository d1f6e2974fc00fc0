"""The job contract: what an extension writes, and what a run hands back.

An :class:`Extension` groups the :class:`Job` objects one package registers. A job's ``execute``
receives a :class:`JobContext` and returns a :class:`JobResult`; raising is a failed run. This
module knows nothing of the worker or the database tables: it is the part users import.

A job may declare the type of its payload, ``class SendMail(Job[MailPayload])``: its runs then
get ``ctx.payload`` as a ``MailPayload`` (see :mod:`pgjobs.payloads`), and
``JobContext[MailPayload]`` tells the type checker so.
"""

from __future__ import annotations

import logging
import operator
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ClassVar, Generic, Literal, TypeAlias, get_args, get_origin

# PEP 696 defaults (typing has them from Python 3.13): a bare ``Job`` or ``JobContext`` means
# what it meant before either took a payload type. typing_extensions comes with SQLAlchemy
# and alembic, both dependencies.
from typing_extensions import TypeVar

Overlap = Literal["skip", "allow"]
Misfire = Literal["coalesce", "skip", "backfill"]
Trigger = Literal["schedule", "manual", "enqueue", "retry"]

RUN_STATUSES: tuple[str, ...] = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "timed_out",
    "cancelled",
    "skipped",
    "abandoned",
    "blocked",
)
"""Values of ``runs.status`` (``blocked``: a run waiting for its dependencies)."""

OVERLAP_POLICIES: tuple[str, ...] = ("skip", "allow")
MISFIRE_POLICIES: tuple[str, ...] = ("coalesce", "skip", "backfill")

PayloadT = TypeVar("PayloadT", default=dict[str, Any] | None)
"""The type of ``JobContext.payload``: the JSON object (or None) unless a job declares one."""

JobPayloadT = TypeVar("JobPayloadT", default=Any)
"""The payload type a :class:`Job` declares; a bare ``Job`` is any job, typed or not."""

MAX_COUNT = 2**31 - 1
"""The largest item count a run can record (``runs.items_processed`` is a 32-bit integer)."""


@dataclass(frozen=True)
class RetryBackoff:
    """Exponential backoff with full jitter: attempt ``n`` waits up to ``base * factor**(n-1)``.

    The wait is capped at ``max_seconds``; ``jitter`` is the fraction of the wait that is random
    (0 = exactly the exponential wait, 1 = uniformly between 0 and it).
    """

    base_seconds: float = 1.0
    factor: float = 2.0
    max_seconds: float = 300.0
    jitter: float = 0.5

    def delay(self, attempt: int, rand: float) -> float:
        """Seconds to wait before retrying after failed attempt ``attempt`` (``rand`` in [0, 1))."""
        wait = min(self.max_seconds, self.base_seconds * self.factor ** max(0, attempt - 1))
        return wait * (1.0 - self.jitter * rand)


@dataclass(frozen=True)
class JobResult:
    """What a run hands back. Everything here is stored on the run's row.

    Build one with :meth:`success` or :meth:`failure`, then refine it with the ``with_*`` methods,
    each of which returns a new result.
    """

    ok: bool
    message: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    processed: int | None = None
    failed: int | None = None

    @classmethod
    def success(cls, message: str | None = None) -> JobResult:
        """A succeeded run, with an optional message."""
        return cls(ok=True, message=message)

    @classmethod
    def failure(cls, message: str | None = None) -> JobResult:
        """A failed run (retried when attempts remain), with an optional message."""
        return cls(ok=False, message=message)

    def with_message(self, message: str) -> JobResult:
        """The same result with ``message``."""
        return replace(self, message=message)

    def with_data(self, **data: Any) -> JobResult:
        """The same result with ``data`` merged into its JSON data (values must be JSON-able)."""
        return replace(self, data={**self.data, **data})

    def with_stats(self, processed: int, failed: int = 0) -> JobResult:
        """The same result with item counts: how many the run processed and how many failed.

        Each must be an ``int`` from 0 to :data:`MAX_COUNT`: anything else raises ``TypeError``
        or ``ValueError`` here, in the job, where the mistake is (so the run fails saying so).
        """
        return replace(
            self, processed=_count("processed", processed), failed=_count("failed", failed)
        )


def _count(name: str, value: object) -> int:
    """``value`` as a plain int (anything with ``__index__`` but bool), within the column."""
    return _int_within("with_stats", name, value, MAX_COUNT)


def _int_within(call: str, name: str, value: object, maximum: int) -> int:
    """``value`` as a plain int from 0 to ``maximum`` (anything with ``__index__`` but bool),
    else TypeError or ValueError naming ``call``'s argument ``name`` and why."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{call}: {name} must be an int, got {type(value).__name__}") from None
    if not 0 <= number <= maximum:
        shown = str(number) if number.bit_length() <= 64 else f"a {number.bit_length()}-bit int"
        raise ValueError(f"{call}: {name} must be from 0 to {maximum}, got {shown}")
    return int(number)


ProgressSink: TypeAlias = Callable[[int, int, int | None, str | None], None]
"""Takes a run's progress reports: ``(run_id, done, total, message)``."""


# -- progress reports (ctx.progress) ------------------------------------------------------------

MESSAGE_MAX = 200
"""Characters of a progress message that are kept; a longer one is cut and ends with ``…``."""

MAX_BIGINT = 2**63 - 1
"""The most ``done`` and ``total`` may be: the ``bigint`` columns they are stored in."""


@dataclass(frozen=True, slots=True)
class ProgressReport:
    """One run's latest report, checked and ready to store."""

    run_id: int
    done: int
    total: int | None
    message: str | None


def clean_message(message: object) -> str | None:
    """``message`` as text PostgreSQL stores as it is: at most :data:`MESSAGE_MAX` characters
    (cut with ``…``), without NUL characters, lone surrogates as U+FFFD. Only the first few
    hundred characters are ever looked at, whatever the message's size."""
    if message is None:
        return None
    if not isinstance(message, str):
        raise TypeError(f"progress: message must be a str or None, got {type(message).__name__}")
    # An exact str (a subclass's own methods never run), cut before it is cleaned: a 10 MB
    # message costs what a short one does. Room for NULs that go.
    whole = str.__str__(message)
    text = whole[: MESSAGE_MAX * 4]
    if "\x00" in text:
        text = text.replace("\x00", "")
    if len(text) > MESSAGE_MAX or len(whole) > MESSAGE_MAX * 4:
        text = text[: MESSAGE_MAX - 1] + "…"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # A cut pair or a lone surrogate, which UTF-8 cannot encode: U+FFFD.
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def progress_report(run_id: int, done: object, total: object, message: object) -> ProgressReport:
    """A checked report; TypeError or ValueError (raised in the job) for bad arguments."""
    checked_total = None if total is None else _int_within("progress", "total", total, MAX_BIGINT)
    return ProgressReport(
        run_id,
        _int_within("progress", "done", done, MAX_BIGINT),
        checked_total,
        clean_message(message),
    )


@dataclass(frozen=True, slots=True)
class Dependency:
    """A run this run waited for (``enqueue(..., after=[...])``), as it ended; see
    ``JobContext.dependencies``.

    It is the dependency's final attempt (a retried dependency is its last retry), so ``status``
    is how it ended: ``succeeded``, or, for an ``after_any`` dependency, any end. ``message`` and
    ``data`` are what its job handed back (:class:`JobResult`): ``data`` is its JSON object, empty
    when it gave none, so a step reads what the step before it returned without a table of its own.
    """

    run_id: int
    job: str
    status: str
    message: str | None
    data: Mapping[str, Any]


class CancelSignal:
    """Set when the run should stop: cancelled by an operator, timed out, or worker shutdown.

    Async jobs may ``await signal.wait()`` or check :attr:`is_set`; sync jobs check
    :attr:`is_set` between units of work. Both are safe from any thread.
    """

    # Guards the lazily made event: most runs are never cancelled and never wait, and a
    # threading.Event per run costs more than a no-op job.
    _guard = threading.Lock()

    def __init__(self) -> None:
        self._event: threading.Event | None = None
        self.reason: str | None = None

    @property
    def is_set(self) -> bool:
        """True once cancellation was requested."""
        return self.reason is not None

    def set(self, reason: str) -> None:
        """Request cancellation, remembering the first reason given."""
        with self._guard:
            if self.reason is None:
                self.reason = reason
                if self._event is not None:
                    self._event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block the calling thread until cancellation is requested or ``timeout`` passes."""
        with self._guard:
            if self._event is None:
                self._event = threading.Event()
                if self.reason is not None:
                    self._event.set()
            event = self._event
        return event.wait(timeout)


@dataclass
class JobContext(Generic[PayloadT]):
    """Everything a run of a job may use.

    ``payload`` is the run's JSON object (a dict, or None) for a job that declares no payload
    type; for ``class SendMail(Job[MailPayload])`` it is a ``MailPayload``, checked against the
    type before the job runs, and ``JobContext[MailPayload]`` says so to the type checker.

    ``db_pool`` is the worker's ``psycopg_pool.AsyncConnectionPool`` for ``async def execute``
    and a sync ``psycopg_pool.ConnectionPool`` on the same database for plain ``def execute``.
    ``parameters`` are the profile entry's string parameters, overridden by ``jobs run -p``.
    ``schema`` is the pgjobs schema the run's worker serves.
    ``dependencies`` are the runs this run waited for, in the order of their ids (see
    :class:`Dependency`); empty for a run enqueued without ``after`` or ``after_any``.
    """

    db_pool: Any
    run_id: int
    job_name: str
    scheduled_for: datetime
    attempt: int
    trigger: Trigger
    payload: PayloadT
    worker_id: str
    log: logging.LoggerAdapter[logging.Logger]
    cancel: CancelSignal
    parameters: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    schema: str = "pgjobs"
    #: Where :meth:`progress` reports go: the worker's progress writer, or None (not stored).
    progress_sink: ProgressSink | None = field(default=None, repr=False)
    dependencies: list[Dependency] = field(default_factory=list)

    @property
    def cancelled(self) -> bool:
        """True once the run was asked to stop; long jobs should check it and return early."""
        return self.cancel.is_set

    def progress(self, done: int, total: int | None = None, message: str | None = None) -> None:
        """Report how far the run got: ``done`` units of ``total`` (None when unknown), with an
        optional short ``message``. Cheap to call often, from async and sync jobs alike: the
        worker stores the latest report on the run a few times a second at most.

        Raises TypeError or ValueError for an amount that is not an int from 0 to
        :data:`MAX_BIGINT`, or a message that is not text, wherever the run runs; a message is
        kept to :data:`MESSAGE_MAX` characters."""
        report = progress_report(self.run_id, done, total, message)
        if self.progress_sink is not None:
            self.progress_sink(report.run_id, report.done, report.total, report.message)


class Job(Generic[JobPayloadT]):
    """A unit of work an extension registers; subclass it and implement ``execute``.

    Class attributes are the job's definition (the profile may override them):

    - ``name``: unique, starting with the extension's name (``my-extension-cleanup``).
    - ``schedule``: cron (6 fields, ``second minute hour day month weekday``; 5 fields and
      ``@daily`` etc. also accepted) or ``None`` for on-demand only.
    - ``enabled``, ``tags``, ``timezone`` (IANA name), ``timeout`` (seconds or ``None``),
      ``max_attempts``, ``retry_backoff``, ``overlap`` (``skip``: one run at a time across all
      workers; ``allow``), ``misfire`` (``coalesce``, ``skip``, ``backfill``), ``backfill_cap``,
      ``priority`` (lower runs first), ``queue``.
    - ``max_concurrency``: at most this many runs of the job run at once, across all workers
      (per key value when a ``concurrency_key`` is set); ``None`` for no limit of its own.
    - ``concurrency_key``: groups the runs for ``max_concurrency``: the name of a payload field
      (``"tenant"``), or a callable of the payload that returns the key. A key without
      ``max_concurrency`` means one run at a time per key. The key is computed when a run is
      enqueued and stored on it; a callable key needs the job's class to compute it, so enqueue
      ``SendMailJob`` (or pass ``concurrency_key=``) rather than its name.
    - ``rate_limit``: at most this many runs start per period, across all workers: ``"100/m"``,
      ``"20/s"``, ``"5/h"`` (a token bucket: a quiet spell lets that many start at once).

    Overlap ``skip`` is the limit of one: a tick that finds the job (or, with a key, the key)
    at its limit is skipped, while explicit work (enqueued, manual, retries) waits in the queue
    until a slot frees. A job with ``max_concurrency`` or a ``concurrency_key`` has that limit
    instead of one; with overlap ``allow`` and neither, the job is unlimited. Limits never drop
    explicit work: a held-back run waits. The profile may override all three.

    ``payload_type``: what ``ctx.payload`` is, a dataclass, a ``TypedDict`` or a pydantic model;
    ``None`` (the default) for the plain JSON object. ``class SendMail(Job[MailPayload])`` sets
    it to ``MailPayload``. Enqueueing the job's class or instance checks the payload against it
    (and takes a ``MailPayload`` as well as a dict); every run checks its stored payload against
    it before ``execute`` and fails with ``PayloadError``, without calling the job, when it does
    not match. A run without a payload is checked as an empty object: only a type whose fields
    all have defaults accepts it.

    ``execute(self, ctx)`` may be ``async def`` (runs on the worker's event loop) or plain
    ``def`` (runs in a thread). It returns a :class:`JobResult`; an exception is a failed run.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    schedule: ClassVar[str | None] = None
    enabled: ClassVar[bool] = True
    tags: ClassVar[tuple[str, ...] | list[str]] = ()
    timezone: ClassVar[str] = "UTC"
    timeout: ClassVar[float | None] = None
    max_attempts: ClassVar[int] = 1
    retry_backoff: ClassVar[RetryBackoff] = RetryBackoff()
    overlap: ClassVar[Overlap] = "skip"
    misfire: ClassVar[Misfire] = "coalesce"
    backfill_cap: ClassVar[int] = 100
    priority: ClassVar[int] = 0
    queue: ClassVar[str] = "default"
    max_concurrency: ClassVar[int | None] = None
    concurrency_key: ClassVar[str | Callable[[Any], Any] | None] = None
    rate_limit: ClassVar[str | None] = None
    payload_type: ClassVar[type[Any] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "payload_type" not in cls.__dict__:
            declared = _declared_payload_type(cls.__dict__.get("__orig_bases__", ()))
            if declared is not None:
                cls.payload_type = declared

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def _declared_payload_type(bases: tuple[Any, ...]) -> type[Any] | None:
    """The class ``X`` of a ``Job[X]`` (or ``SomeJob[X]``) among a class statement's bases; None
    for none, or for ``Any``, a type variable, ``dict`` or ``dict[str, Any]``: an untyped job."""
    for base in bases:
        origin = get_origin(base)
        if isinstance(origin, type) and issubclass(origin, Job):
            args = get_args(base)
            if (
                len(args) == 1
                and isinstance(args[0], type)
                and args[0] not in (Any, dict, object)
                and get_origin(args[0]) is None
            ):
                return args[0]
    return None


class Extension:
    """A named group of jobs, found from ``--app module:attr`` or the ``pgjobs.extensions``
    entry-point group. Every job name must start with ``f"{extension.name}-"``.

    ``config`` is handed to each run as ``ctx.config``.
    """

    name: ClassVar[str] = ""
    config: ClassVar[dict[str, Any]] = {}

    def jobs(self) -> list[Job]:
        """The jobs this extension registers."""
        return []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
