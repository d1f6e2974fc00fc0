"""The enqueue API: application code puts runs in the queue, inside its own transaction.

:func:`enqueue` (async) and :func:`enqueue_sync` insert one run; :func:`enqueue_many` and
:func:`enqueue_many_sync` insert any number in one statement. All four run on the caller's
connection and never commit, roll back or change its autocommit mode: the runs become visible
to workers, and the NOTIFY that wakes them is delivered, only when the caller commits; a rollback
leaves nothing behind.

``conn`` may be a psycopg connection, or a SQLAlchemy connection or session using the psycopg
driver (``postgresql+psycopg://``): the insert then joins the SQLAlchemy transaction, beginning it
if none is open. SQLAlchemy is imported only when such an object is passed.

A job is known to the queue once a worker that registers it has started (its row in ``jobs``);
its row gives the defaults for priority, queue and attempts, and says how a run's concurrency key
is found (see :func:`enqueue`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, TypeAlias, TypeVar

from pgjobs import tracing
from pgjobs.caller import Api, Plan, Row, async_connection, drive_async, drive_sync, sync_connection
from pgjobs.db import resolve_schema
from pgjobs.discovery import exception_line
from pgjobs.errors import ConfigError, PgJobsError, UnknownJobError, UnknownRunError, WorkflowError
from pgjobs.job import Job
from pgjobs.limits import (
    MAX_KEY_BYTES,
    concurrency_key_label,
    concurrency_key_of,
    declared_concurrency_key,
)
from pgjobs.named_queries import Queries

#: Largest payload accepted, in bytes of its JSON text, unless ``PGJOBS_MAX_PAYLOAD_BYTES`` says.
#: The same limit applies to ``parameters``.
DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024

#: Longest ``dedup_key`` accepted, in UTF-8 bytes. The key is in a B-tree index, whose entries
#: cannot exceed about 2.7 KB; a longer key is refused here rather than by Postgres, which would
#: abort the caller's transaction. Hash a long natural key (e.g. SHA-256 hex, 64 bytes).
MAX_DEDUP_KEY_BYTES = 512

_INT4 = 2**31
# A (job, dedup_key) whose queued run changes state between our statements is looked up again;
# more rounds than this means something keeps claiming and re-queuing it.
_DEDUP_ROUNDS = 3

JobRef: TypeAlias = str | type[Job] | Job
"""A job to enqueue: its name, or its :class:`~pgjobs.Job` class or instance."""

_Payload = TypeVar("_Payload")

_API = Api(
    sync_name="enqueue_sync",
    async_name="enqueue",
    sync_call="`pgjobs.enqueue_sync(...)` / `enqueue_many_sync(...)`",
    async_call="`await pgjobs.enqueue(...)` / `enqueue_many(...)`",
    activity="enqueueing",
)


@dataclass(frozen=True)
class EnqueueRequest:
    """One run to enqueue with :func:`enqueue_many`; the fields mean what :func:`enqueue`'s
    arguments mean. A plain dict with these keys is accepted wherever a request is."""

    job: JobRef
    #: A JSON object (a mapping), None, or an instance of the job's declared payload type.
    payload: Any = None
    run_at: datetime | None = None
    priority: int | None = None
    queue: str | None = None
    dedup_key: str | None = None
    parameters: Mapping[str, str] | None = None
    concurrency_key: str | None = None
    #: A name for this request within one :func:`enqueue_many` call, that the ``after`` and
    #: ``after_any`` of its other requests may give.
    key: str | None = None
    #: Runs that must succeed before this one starts: ids of existing runs (int) or keys of
    #: other requests of the same call (str).
    after: Sequence[int | str] = ()
    #: Runs that must end, whatever their outcome, before this one starts: ids or keys.
    after_any: Sequence[int | str] = ()


async def enqueue(
    conn: Any,
    job: str | type[Job[_Payload]] | Job[_Payload],
    payload: _Payload | Mapping[str, Any] | None = None,
    *,
    run_at: datetime | None = None,
    priority: int | None = None,
    queue: str | None = None,
    dedup_key: str | None = None,
    parameters: Mapping[str, str] | None = None,
    concurrency_key: str | None = None,
    after: Sequence[int] = (),
    after_any: Sequence[int] = (),
    schema: str | None = None,
) -> int:
    """Queue a run of ``job`` in the caller's transaction and return the run's id.

    ``conn`` is a psycopg ``AsyncConnection`` or a SQLAlchemy ``AsyncConnection`` or
    ``AsyncSession``. ``payload`` (a JSON object, at most ``PGJOBS_MAX_PAYLOAD_BYTES``, default
    256 KiB) is handed to the run as ``ctx.payload``; ``parameters`` (strings, their JSON at
    most the same size) are merged over the profile's as ``ctx.parameters``. ``run_at`` (an
    aware datetime) delays the run; ``priority`` (lower runs first) and ``queue`` default to the
    job's. With a ``dedup_key`` (at most :data:`MAX_DEDUP_KEY_BYTES`, 512 bytes) that a queued
    run of ``job`` already holds, nothing is inserted and that run's id is returned; once that
    run has started, the same key queues a new run. No text may hold a NUL character.
    ``schema`` defaults to ``PGJOBS_SCHEMA``, else ``pgjobs``.

    ``job`` is the job's name, or its :class:`~pgjobs.Job` class or instance. The run's
    concurrency key (what the job's ``max_concurrency`` counts runs by) is ``concurrency_key``
    when given (the same limits as a ``dedup_key``); else, when the job's key is a payload
    field, that field's value in ``payload``; when its key is a callable, the callable's result
    for ``payload``, which only the job's class can give: enqueueing such a job by name without
    ``concurrency_key`` raises :class:`ConfigError`.

    A job that declares a payload type (``class SendMail(Job[MailPayload])``) takes a
    ``MailPayload`` as ``payload`` as well as a mapping; either is stored as its JSON object.
    When ``job`` is the class or an instance, the payload is checked against the type here
    (:class:`~pgjobs.PayloadError`, a :class:`ConfigError`, names the field); a job named by
    its name is checked by each run, before the job is called.

    ``after`` (ids of runs that must succeed first) and ``after_any`` (ids of runs that must
    end first, whatever their outcome) make the run wait for other runs: it is inserted
    ``blocked`` and queued once every one of them is satisfied, or cancelled (``error_type``
    ``DependencyFailed``) when one it needs to succeed ends otherwise. An id whose run was
    retried stands for its latest attempt. A ``dedup_key`` cannot be combined with them.

    Raises :class:`UnknownJobError` (naming the nearest jobs) when no worker has registered
    ``job``, :class:`UnknownRunError` for an ``after`` id that no run has, and
    :class:`ConfigError` for an invalid argument; none leaves anything behind or aborts the
    caller's transaction.
    """
    request = EnqueueRequest(
        job, payload, run_at, priority, queue, dedup_key, parameters, concurrency_key
    )
    if not (_empty(after) and _empty(after_any)):
        request = replace(request, after=after, after_any=after_any)
    ids = await _enqueue_async(conn, [request], schema, batch=False)
    return ids[0]


def enqueue_sync(
    conn: Any,
    job: str | type[Job[_Payload]] | Job[_Payload],
    payload: _Payload | Mapping[str, Any] | None = None,
    *,
    run_at: datetime | None = None,
    priority: int | None = None,
    queue: str | None = None,
    dedup_key: str | None = None,
    parameters: Mapping[str, str] | None = None,
    concurrency_key: str | None = None,
    after: Sequence[int] = (),
    after_any: Sequence[int] = (),
    schema: str | None = None,
) -> int:
    """:func:`enqueue` for sync code: ``conn`` is a psycopg ``Connection`` or a SQLAlchemy
    ``Connection`` or ``Session``. Same arguments, same guarantees."""
    request = EnqueueRequest(
        job, payload, run_at, priority, queue, dedup_key, parameters, concurrency_key
    )
    if not (_empty(after) and _empty(after_any)):
        request = replace(request, after=after, after_any=after_any)
    return _enqueue_sync(conn, [request], schema, batch=False)[0]


async def enqueue_many(
    conn: Any,
    requests: Iterable[EnqueueRequest | Mapping[str, Any]],
    *,
    schema: str | None = None,
) -> list[int]:
    """Queue many runs in one statement and return their ids, in the order of ``requests``.

    Each request is an :class:`EnqueueRequest` or a dict of its fields. Either every run is
    queued or, when a request names an unknown job or is invalid, none is. Requests with the
    same ``job`` and ``dedup_key`` get the same run. ``conn`` as for :func:`enqueue`.

    Requests may depend on each other: a request's ``key`` names it within the call, and the
    ``after`` / ``after_any`` of another give that key (or the id of an existing run). The
    whole graph is inserted at once, in the caller's transaction. A cycle, a key that no
    request has, a key given twice, a request that depends on itself or a ``dedup_key`` in a
    call with dependencies raise :class:`~pgjobs.WorkflowError` before any statement.
    """
    return await _enqueue_async(conn, requests, schema, batch=True)


def enqueue_many_sync(
    conn: Any,
    requests: Iterable[EnqueueRequest | Mapping[str, Any]],
    *,
    schema: str | None = None,
) -> list[int]:
    """:func:`enqueue_many` for sync code; ``conn`` as for :func:`enqueue_sync`."""
    return _enqueue_sync(conn, requests, schema, batch=True)


async def _enqueue_async(
    conn: Any,
    requests: Iterable[EnqueueRequest | Mapping[str, Any]],
    schema: str | None,
    *,
    batch: bool,
) -> list[int]:
    prepared, graph = _prepare(requests, batch=batch)
    queries = _queries(resolve_schema(schema))
    connection = await async_connection(conn, _API)
    span = tracing.enqueue_span(prepared.jobs, batch=batch) if tracing.AVAILABLE else None
    if span is None:
        return await drive_async(connection, _plan(prepared, graph, queries))
    with span:
        prepared = replace(prepared, trace_context=span.trace_context)
        ids = await drive_async(connection, _plan(prepared, graph, queries))
        span.enqueued(ids)
        return ids


def _enqueue_sync(
    conn: Any,
    requests: Iterable[EnqueueRequest | Mapping[str, Any]],
    schema: str | None,
    *,
    batch: bool,
) -> list[int]:
    prepared, graph = _prepare(requests, batch=batch)
    queries = _queries(resolve_schema(schema))
    connection = sync_connection(conn, _API)
    span = tracing.enqueue_span(prepared.jobs, batch=batch) if tracing.AVAILABLE else None
    if span is None:
        return drive_sync(connection, _plan(prepared, graph, queries))
    with span:
        prepared = replace(prepared, trace_context=span.trace_context)
        ids = drive_sync(connection, _plan(prepared, graph, queries))
        span.enqueued(ids)
        return ids


# -- validation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Prepared:
    """Validated requests as columns, in request order: payloads and parameters as JSON text
    (``null`` for none), run_ats in microseconds since the Unix epoch. ``computed_keys`` are the
    keys the job classes' callables gave (``""`` for none), None where no class was given.
    ``trace_context``, for every request, is the JSON text of the enqueue's trace context."""

    jobs: list[str]
    payloads: list[str]
    parameters: list[str]
    run_ats: list[int | None]
    priorities: list[int | None]
    queues: list[str | None]
    dedup_keys: list[str | None]
    concurrency_keys: list[str | None]
    computed_keys: list[str | None]
    trace_context: str | None = None

    def subset(self, indexes: Sequence[int]) -> _Prepared:
        if len(indexes) == len(self.jobs):
            return self
        columns: dict[str, Any] = {
            name: [getattr(self, name)[i] for i in indexes] for name in _PREPARED_COLUMNS
        }
        return replace(self, **columns)

    def params(self) -> dict[str, str]:
        """``enqueue_runs``' one parameter: the columns as one JSON document, written by one
        C-speed encode with the JSON texts spliced in; a column no request fills is left out."""
        columns: dict[str, list[Any]] = {"job": self.jobs}
        for key, values in (
            ("run_at", self.run_ats),
            ("priority", self.priorities),
            ("queue", self.queues),
            ("dedup_key", self.dedup_keys),
            ("concurrency_key", self.concurrency_keys),
            ("computed_key", self.computed_keys),
        ):
            if values.count(None) != len(values):
                columns[key] = values
        document = _ENCODE_JSON(columns)[:-1]
        for key, texts in (("payload", self.payloads), ("parameters", self.parameters)):
            if texts.count("null") != len(texts):
                document += f',"{key}":[{",".join(texts)}]'
        if self.trace_context is not None:
            document += f',"trace_context":{self.trace_context}'
        return {"requests": document + "}"}

    def one_params(self) -> dict[str, Any]:
        """``enqueue_one``'s parameters: the one request's values, each a parameter of its own."""
        return {
            "job": self.jobs[0],
            "payload": self.payloads[0],
            "parameters": self.parameters[0],
            "run_at": self.run_ats[0],
            "priority": self.priorities[0],
            "queue": self.queues[0],
            "concurrency_key": self.concurrency_keys[0],
            "computed_key": self.computed_keys[0],
            "trace_context": self.trace_context,
        }


_PREPARED_COLUMNS = tuple(f.name for f in fields(_Prepared) if f.name != "trace_context")


_REQUEST_FIELDS = tuple(f.name for f in fields(EnqueueRequest))
# An escaped NUL in JSON text: \u0000 not itself preceded by an escaped backslash.
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_ENCODE_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def _prepare(
    requests: Iterable[EnqueueRequest | Mapping[str, Any]], *, batch: bool
) -> tuple[_Prepared, _Graph | None]:
    """The requests checked and as columns, and their dependencies (None when none has any)."""
    limit = max_payload_bytes()
    prepared = _Prepared([], [], [], [], [], [], [], [], [])
    items = requests if isinstance(requests, Sequence) else list(requests)
    linked: list[tuple[int, EnqueueRequest]] = []
    for index, item in enumerate(items):
        try:
            request = _as_request(item)
            _append_request(request, prepared, limit)
        except ConfigError as err:
            where = f"request {index}: " if len(items) > 1 else ""
            raise type(err)(f"{where}{err}") from None
        if request.key is not None or not (_empty(request.after) and _empty(request.after_any)):
            linked.append((index, request))
    if not linked:
        return prepared, None
    return prepared, _graph(linked, prepared, batch=batch)


def _empty(refs: object) -> bool:
    return isinstance(refs, (list, tuple)) and not refs


@dataclass(frozen=True)
class _Graph:
    """The edges of one enqueue, one element per edge in each list: the dependant's request
    (1-based, as the statement numbers them), the existing run or the request (1-based) it
    depends on, and whether any outcome satisfies it."""

    ords: list[int]
    run_ids: list[int | None]
    dep_ords: list[int | None]
    any_outcome: list[bool]

    def params(self) -> dict[str, list[Any]]:
        return {
            "edge_ords": self.ords,
            "edge_run_ids": self.run_ids,
            "edge_dep_ords": self.dep_ords,
            "edge_any": self.any_outcome,
        }


def _graph(linked: list[tuple[int, EnqueueRequest]], prepared: _Prepared, *, batch: bool) -> _Graph:
    """Check the dependencies of the ``linked`` requests (index, request) and return the edges.

    Everything is refused here, before any statement, with a :class:`WorkflowError`: keys that
    are not non-empty strings or are given twice, references that are neither run ids nor keys
    of the call, a request that depends on itself, a cycle, and a ``dedup_key`` in the call.
    """
    call = "enqueue_many" if batch else "enqueue"

    def where(index: int) -> str:
        return f"{call}: request {index}" if batch else call

    if any(key is not None for key in prepared.dedup_keys):
        index = next(i for i, key in enumerate(prepared.dedup_keys) if key is not None)
        raise WorkflowError(
            f"{where(index)}: a dedup_key cannot be used in a call with dependencies "
            "(key, after, after_any)"
        )
    keys: dict[str, int] = {}
    for index, request in linked:
        key = request.key
        if key is None:
            continue
        if not batch:
            raise WorkflowError(f"{call}: key only names a request of an enqueue_many call")
        if type(key) is not str or not key.strip() or "\x00" in key:
            raise WorkflowError(
                f"{where(index)}: key must be a non-empty string, got {_shown(key)}"
            )
        if key in keys:
            raise WorkflowError(f"{call}: key {key!r} is given by requests {keys[key]} and {index}")
        keys[key] = index
    graph = _Graph([], [], [], [])
    needs: dict[int, list[int]] = {}  # request index -> indexes of the requests it depends on
    for index, request in linked:
        for name, refs, any_outcome in (
            ("after", request.after, False),
            ("after_any", request.after_any, True),
        ):
            if isinstance(refs, (str, bytes, Mapping)) or not isinstance(refs, Iterable):
                raise WorkflowError(
                    f"{where(index)}: {name} must be a list of run ids or keys, got {_shown(refs)}"
                )
            for ref in refs:
                graph.ords.append(index + 1)
                graph.any_outcome.append(any_outcome)
                if isinstance(ref, int) and not isinstance(ref, bool):
                    if not 0 < ref < 2**63:
                        raise WorkflowError(f"{where(index)}: {name} holds {ref}, not a run id")
                    graph.run_ids.append(int(ref))
                    graph.dep_ords.append(None)
                    continue
                if not isinstance(ref, str):
                    raise WorkflowError(
                        f"{where(index)}: {name} holds {_shown(ref)}: a run id (int) or a key (str)"
                    )
                if not batch:
                    raise WorkflowError(
                        f"{call}: {name} holds {ref!r}, a key: keys name requests of one "
                        "enqueue_many call, here give run ids"
                    )
                if ref not in keys:
                    raise WorkflowError(
                        f"{where(index)} depends on key {ref!r}, which no request has"
                    )
                if keys[ref] == index:
                    raise WorkflowError(f"{where(index)} depends on itself (key {ref!r})")
                graph.run_ids.append(None)
                graph.dep_ords.append(keys[ref] + 1)
                needs.setdefault(index, []).append(keys[ref])
    cycle = _cycle(needs)
    if cycle:
        names = {index: key for key, index in keys.items()}
        shown = " -> ".join(repr(names[index]) for index in cycle)
        raise WorkflowError(f"{call}: a cycle: {shown}")
    return graph


def _cycle(needs: Mapping[int, Sequence[int]]) -> list[int]:
    """A cycle of the graph ``needs`` (request -> the requests it depends on) as a path that
    starts and ends at the same request, or [] when there is none. Iterative: a chain of
    100,000 requests must not hit the recursion limit."""
    state: dict[int, int] = {}  # 1: on the current path, 2: done
    for start in needs:
        if state.get(start):
            continue
        path = [start]
        state[start] = 1
        stack = [iter(needs.get(start, ()))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(needs.get(nxt, ())))
    return []


def _as_request(item: EnqueueRequest | Mapping[str, Any]) -> EnqueueRequest:
    if isinstance(item, EnqueueRequest):
        return item
    if not isinstance(item, Mapping):
        raise ConfigError(f"expected an EnqueueRequest or a dict, got {_kind(item)}")
    unknown = sorted(set(item).difference(_REQUEST_FIELDS))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r}; the keys are {', '.join(_REQUEST_FIELDS)}")
    if "job" not in item:
        raise ConfigError("missing 'job' (the name of the job to run)")
    return EnqueueRequest(**item)


def _append_request(request: EnqueueRequest, into: _Prepared, limit: int) -> None:
    """Check one request and append it to ``into``: a bad value fails here, before any
    statement, so it can never abort the caller's transaction."""
    code = request.job if _is_job(request.job) else None
    given_job: object = request.job if code is None else getattr(code, "name", None)
    for name, given in (
        ("job", given_job),
        ("queue", request.queue),
        ("dedup_key", request.dedup_key),
        ("concurrency_key", request.concurrency_key),
    ):
        if isinstance(given, str):
            _refuse_nul(name, given)
    job = _text(given_job)
    if job is None or not job.strip():
        raise ConfigError(f"job must be a job name or a Job class, got {request.job!r}")
    run_at = request.run_at
    if run_at is not None and (not isinstance(run_at, datetime) or run_at.utcoffset() is None):
        raise ConfigError(f"run_at must be an aware datetime (with a time zone), got {run_at!r}")
    priority = request.priority
    if priority is not None and (
        not isinstance(priority, int)
        or isinstance(priority, bool)
        or not -_INT4 <= priority < _INT4
    ):
        raise ConfigError(f"priority must be a 32-bit integer, got {priority!r}")
    queue, dedup_key = _text(request.queue), _text(request.dedup_key)
    concurrency_key = _text(request.concurrency_key)
    for name, value, given in (
        ("queue", queue, request.queue),
        ("dedup_key", dedup_key, request.dedup_key),
        ("concurrency_key", concurrency_key, request.concurrency_key),
    ):
        if given is not None and not value:
            raise ConfigError(f"{name} must be a non-empty string, got {given!r}")
    _check_key("dedup_key", dedup_key, MAX_DEDUP_KEY_BYTES)
    _check_key("concurrency_key", concurrency_key, MAX_KEY_BYTES)
    given_payload = request.payload
    payload_type = None if code is None else getattr(code, "payload_type", None)
    if payload_type is not None:
        # The job's class is here, so its payload is checked now, not by the run.
        from pgjobs.payloads import dump_payload  # not imported with pgjobs: few jobs are typed

        given_payload = dump_payload(job, payload_type, given_payload)
    payload = "null" if given_payload is None else _payload_json(given_payload, limit)
    computed = None
    if code is not None and concurrency_key is None:
        computed = _computed_key(code, job, given_payload)
    into.jobs.append(job)
    into.payloads.append(payload)
    into.parameters.append(
        "null" if request.parameters is None else _parameters_json(request.parameters, limit)
    )
    # Exact, and far cheaper than ISO text: timedelta arithmetic in C.
    into.run_ats.append(None if run_at is None else (run_at - _EPOCH) // _MICROSECOND)
    into.priorities.append(priority)
    into.queues.append(queue)
    into.dedup_keys.append(dedup_key)
    into.concurrency_keys.append(concurrency_key)
    into.computed_keys.append(computed)


def _is_job(job: object) -> bool:
    return isinstance(job, Job) or (isinstance(job, type) and issubclass(job, Job))


def _computed_key(code: Any, job: str, payload: Mapping[str, Any] | None) -> str | None:
    """The concurrency key the callable ``concurrency_key`` of ``code`` (a Job class or
    instance) gives ``payload``, ``""`` when it gives none; None when its key is no callable."""
    key = declared_concurrency_key(code)
    if key is None or isinstance(key, str) or not callable(key):
        return None
    label = concurrency_key_label(key)
    try:
        computed = concurrency_key_of(key, payload)
    except Exception as err:
        raise ConfigError(f"job {job!r}: {label} raised {exception_line(err)}") from None
    _check_key(f"the concurrency key {label} computed", computed, MAX_KEY_BYTES)
    return computed or ""


def _check_key(name: str, key: str | None, limit: int) -> None:
    """Refuse a key that Postgres cannot store or that is too long for a B-tree index entry."""
    if key is None:
        return
    _refuse_nul(name, key)
    if _utf8_over(key, limit):
        raise ConfigError(
            f"{name} is {len(key.encode('utf-8'))} bytes, over the limit of {limit}: "
            "use a hash of a long key (e.g. its SHA-256 in hex)"
        )


def _refuse_nul(name: str, text: str) -> None:
    if "\x00" in text:
        raise ConfigError(f"{name} contains a NUL character, which Postgres cannot store")


def check_run_input(
    payload: Mapping[str, Any] | None, parameters: Mapping[str, str] | None
) -> None:
    """Refuse, as :func:`enqueue` does, a payload or parameters that are not JSON objects of the
    right kind, hold a NUL or are over ``PGJOBS_MAX_PAYLOAD_BYTES``: for runs that are inserted
    by other statements (``pgjobs jobs run``), before any of them."""
    limit = max_payload_bytes()
    if payload is not None:
        _payload_json(payload, limit)
    if parameters is not None:
        _parameters_json(parameters, limit)


def max_payload_bytes() -> int:
    """The payload size limit in bytes: ``PGJOBS_MAX_PAYLOAD_BYTES``, else 256 KiB."""
    text = os.environ.get("PGJOBS_MAX_PAYLOAD_BYTES", "").strip()
    if not text:
        return DEFAULT_MAX_PAYLOAD_BYTES
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"PGJOBS_MAX_PAYLOAD_BYTES must be a positive integer, got {text!r}")
    return value


def _payload_json(payload: Mapping[str, Any], limit: int) -> str:
    if type(payload) is not dict:
        # A typed payload enqueued by job name: sent as its JSON, checked by the run.
        from pgjobs.payloads import plain_payload

        payload = plain_payload(payload)  # type: ignore[assignment]
        if not isinstance(payload, Mapping):
            raise ConfigError(
                f"payload must be a JSON object (a dict) or None, got {_kind(payload)}"
            )
        payload = dict(payload)
    try:
        text = _ENCODE_JSON(payload)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"payload is not JSON-serialisable: {err}") from None
    _check_no_nul("payload", text)
    _check_size("payload is", text, limit)
    return text


def _parameters_json(parameters: Mapping[str, str], limit: int) -> str:
    if not isinstance(parameters, Mapping) or not all(
        type(k) is str and type(v) is str for k, v in parameters.items()
    ):
        raise ConfigError(
            f"parameters must be a dict of strings to strings, got {_shown(parameters)}"
        )
    text = json.dumps(dict(parameters), ensure_ascii=False)
    _check_no_nul("parameters", text)
    _check_size("parameters are", text, limit)
    return text


def _check_size(what: str, text: str, limit: int) -> None:
    if _utf8_over(text, limit):
        raise ConfigError(
            f"{what} {len(text.encode('utf-8'))} bytes of JSON, over the limit of {limit} "
            "(PGJOBS_MAX_PAYLOAD_BYTES): store large data elsewhere and pass its key"
        )


def _utf8_over(text: str, limit: int) -> bool:
    """Whether ``text`` is over ``limit`` bytes in UTF-8, encoding it only when it can be (a
    character is one to four bytes)."""
    return len(text) > limit or (len(text) * 4 > limit and len(text.encode("utf-8")) > limit)


def _shown(value: object, width: int = 200) -> str:
    """``repr(value)``, cut to ``width`` characters for an error line."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _text(value: object) -> str | None:
    """``value`` as a plain str if it is a string without NUL, else None."""
    if isinstance(value, str) and "\x00" not in value:
        return value if type(value) is str else str.__str__(value)
    return None


def _check_no_nul(name: str, text: str) -> None:
    # Postgres jsonb cannot hold NUL; sent anyway, it would abort the caller's transaction.
    if "\\u0000" in text and _JSON_NUL.search(text):
        raise ConfigError(f"{name} contains a NUL character, which Postgres cannot store")


def _kind(value: object) -> str:
    return type(value).__name__


# -- the statements -----------------------------------------------------------------------------


@cache
def _queries(schema: str) -> Queries:
    return Queries(schema)


def _plan(prepared: _Prepared, graph: _Graph | None, queries: Queries) -> Plan[list[int]]:
    """The statements of one enqueue, as a generator that the sync and async drivers run: it
    yields (query, params), receives the rows and returns the ids in request order."""
    if graph is None:
        return (yield from _plan_runs(prepared, queries))
    return (yield from _plan_graph(prepared, graph, queries))


def _plan_graph(prepared: _Prepared, graph: _Graph, queries: Queries) -> Plan[list[int]]:
    """``enqueue_graph``: the runs and their edges in one statement; then, only when a run was
    inserted cancelled (a dependency of its had failed already), the cancel of its dependants
    among the new runs."""
    rows = yield queries["enqueue_graph"], {**prepared.params(), **graph.params()}
    refused = sorted((kind, job, detail) for kind, _, job, detail in rows if kind != "inserted")
    if refused:
        kind, job, detail = next((r for r in refused if r[0] == "unknown"), refused[0])
        if kind == "unknown":
            names = yield queries["job_names"], {}
            raise unknown_job_error(job, [name for (name,) in names])
        if kind == "unknown run":
            raise UnknownRunError(f"cannot enqueue after run {detail}: no run has that id")
        raise _REFUSALS[kind](job, detail)
    inserted = sorted((run_id, status) for _, run_id, _, status in rows)
    if len(inserted) != len(prepared.jobs):
        raise PgJobsError(f"enqueue inserted {len(inserted)} runs, expected {len(prepared.jobs)}")
    cancelled = [run_id for run_id, status in inserted if status == "cancelled"]
    if cancelled and any(ord_ is not None for ord_ in graph.dep_ords):
        yield queries["release_dependants"], {"ids": cancelled}
    # Ids are drawn in insertion order, which is request order.
    return [run_id for run_id, _ in inserted]


def _plan_runs(prepared: _Prepared, queries: Queries) -> Plan[list[int]]:
    """``enqueue_runs``, again for the requests whose dedup_key it could not resolve; for one
    request without a dedup_key, ``enqueue_one``."""
    count = len(prepared.jobs)
    if count == 1 and prepared.dedup_keys[0] is None:
        rows = yield queries["enqueue_one"], prepared.one_params()
        if rows:
            return [rows[0][1]]
        # Nothing inserted: the job is unknown or its key refused. enqueue_runs says which.
    ids: list[int | None] = [None] * count
    pending = list(range(count))
    for _ in range(_DEDUP_ROUNDS):
        if not pending:
            break
        batch = prepared.subset(pending)
        rows = yield queries["enqueue_runs"], batch.params()
        unknown = [job for kind, _, job, _ in rows if kind == "unknown"]
        if unknown:
            names = yield queries["job_names"], {}
            raise unknown_job_error(unknown[0], [name for (name,) in names])
        refused = sorted((kind, job, key) for kind, _, job, key in rows if kind in _REFUSALS)
        if refused:
            raise _REFUSALS[refused[0][0]](*refused[0][1:])
        plain = sorted(
            run_id for kind, run_id, _, key in rows if kind == "inserted" and key is None
        )
        if len(plain) != batch.dedup_keys.count(None):
            raise PgJobsError(
                f"enqueue inserted {len(plain)} runs without a dedup_key, "
                f"expected {batch.dedup_keys.count(None)}"
            )
        by_key = _ids_by_dedup_key(rows)
        missing = sorted(
            {(job, key) for job, key in zip(batch.jobs, batch.dedup_keys, strict=True) if key}
            - set(by_key)
        )
        if missing:
            # A run with this key was committed by another transaction while we waited on it:
            # a new statement sees it.
            found = yield (
                queries["queued_runs_by_dedup_key"],
                {
                    "jobs": [job for job, _ in missing],
                    "dedup_keys": [key for _, key in missing],
                },
            )
            by_key.update(_ids_by_dedup_key([("existing", *row) for row in found]))
        plain_ids = iter(plain)
        still_pending = []
        for index in pending:
            key = prepared.dedup_keys[index]
            if key is None:
                # Ids are drawn in insertion order, which is request order.
                ids[index] = next(plain_ids)
            elif (prepared.jobs[index], key) in by_key:
                ids[index] = by_key[(prepared.jobs[index], key)]
            else:
                still_pending.append(index)
        pending = still_pending
    if pending:
        index = pending[0]
        raise PgJobsError(
            f"could not enqueue {prepared.jobs[index]!r} with dedup_key "
            f"{prepared.dedup_keys[index]!r}: its queued run kept changing state"
        )
    return [run_id for run_id in ids if run_id is not None]


_REFUSALS: dict[str, Callable[[str, str], ConfigError]] = {
    "keyless": lambda job, key: ConfigError(
        f"job {job!r} computes its concurrency key in code: "
        "pass concurrency_key=... or enqueue the Job class"
    ),
    "long key": lambda job, field: ConfigError(
        f"job {job!r}: the payload field {field!r}, its concurrency key, holds more than "
        f"{MAX_KEY_BYTES} bytes: pass concurrency_key= with a hash of it"
    ),
}
"""What ``enqueue_runs`` refuses, other than an unknown job: the error for (job, its key)."""


def _ids_by_dedup_key(rows: Iterable[Row]) -> dict[tuple[str, str], int]:
    """(job, dedup_key) -> run id; a run this statement inserted wins over one it found."""
    found: dict[tuple[str, str], int] = {}
    for _, run_id, job, key in sorted(rows, key=lambda row: row[0] != "inserted"):
        if key is not None:
            found.setdefault((job, key), run_id)
    return found


def unknown_job_error(name: str, known: list[str]) -> UnknownJobError:
    """The error for a job name that no worker registered, naming the nearest of ``known``."""
    from pgjobs.registry import suggest  # only on this error path: it imports the profile code

    hint = suggest(name, known, "jobs")
    if not known:
        hint += " (a job is known once a worker that loads it has started)"
    return UnknownJobError(f"unknown job {name!r}; {hint}")
