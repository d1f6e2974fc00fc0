"""Tracing with OpenTelemetry: a span for each enqueue and for each run, the run's a child of the
enqueue's, across processes and however long the run waited in the queue.

It needs the ``otel`` extra (``opentelemetry-api``); without it nothing here imports
OpenTelemetry, and the enqueue API and the worker skip every hook on :data:`AVAILABLE`, read once.
OpenTelemetry itself is imported at the first enqueue or run, not with ``import pgjobs``.

- An enqueue made while a span is current (a web request's, say) gets a ``PRODUCER`` span, and
  the W3C trace context of that span (``traceparent``, ``tracestate``; whatever the configured
  propagators write) is stored on its runs, in ``runs.trace_context``. An enqueue with no current
  span makes no span and stores nothing: pgjobs does not start traces of its own at enqueue.
- A run gets a ``CONSUMER`` span, current while its job runs (spans an async job makes are its
  children), as a child of the context stored at enqueue; a run without one (a tick, a manual
  run) starts a trace. Runs are traced once a tracer provider is set (the SDK configured): with
  the API alone, a run costs one look-up of the provider.

Attributes follow OpenTelemetry's messaging conventions (``messaging.system`` is ``pgjobs``,
``messaging.operation`` ``publish`` or ``process``), with ``pgjobs.*`` for the rest.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Mapping, Sequence
from functools import cache
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span

    from pgjobs.store import ClaimedRun, Outcome

log = logging.getLogger(__name__)

SYSTEM = "pgjobs"
"""``messaging.system`` of every span pgjobs makes; also the tracer's name."""

#: Run statuses whose span has status ERROR.
ERROR_STATUSES = frozenset({"failed", "timed_out"})

# The longest trace context (JSON text) stored on a run: traceparent and tracestate take at most
# ~600 bytes; more is baggage too large to copy onto every run, and is not stored.
_MAX_CONTEXT_CHARS = 8192
# The longest span status description: the run's error message is stored in full, not here.
_MAX_DESCRIPTION_CHARS = 1024


def _installed() -> bool:
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):  # a parent that cannot be imported, or a blocked module
        return False


AVAILABLE: bool = _installed()
"""Whether ``opentelemetry-api`` is installed: decided once, at import, without importing it."""


class _Otel:
    """The parts of the OpenTelemetry API used here, imported on first use."""

    def __init__(self) -> None:
        from opentelemetry import context, propagate, trace

        from pgjobs import __version__

        self.context = context
        self.propagate = propagate
        self.trace = trace
        self.tracer = trace.get_tracer(SYSTEM, __version__)
        self.untraced = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)


@cache
def _otel() -> _Otel:
    return _Otel()


_warned = False


def _broken(what: str) -> None:
    """Log that tracing failed (a warning the first time, then at debug level): tracing never
    stops an enqueue or a run, which go on untraced."""
    global _warned
    if _warned:
        log.debug("tracing failed %s; going on untraced", what, exc_info=True)
    else:
        log.warning("tracing failed %s; going on untraced", what, exc_info=True)
    _warned = True


# -- enqueue ------------------------------------------------------------------------------------


class EnqueueSpan:
    """The span of one enqueue call, current between ``__enter__`` and ``__exit__``; an
    exception that leaves it is recorded on it and sets its status to ERROR."""

    __slots__ = ("_single", "_span", "_token", "trace_context")

    def __init__(self, span: Span, single: bool) -> None:
        self._span = span
        self._single = single
        self._token: object = None
        #: The span's context as the JSON text stored on the runs, None if it cannot be stored.
        self.trace_context: str | None = None

    def __enter__(self) -> EnqueueSpan:
        otel = _otel()
        self._token = otel.context.attach(otel.trace.set_span_in_context(self._span))
        try:
            self.trace_context = _injected(otel)
        except Exception:  # a propagator's bug: the runs go without a context
            _broken("writing the trace context of an enqueue")
        return self

    def enqueued(self, ids: Sequence[int]) -> None:
        """Note the ids of the runs enqueued (a single enqueue's, as the message id)."""
        if self._single and ids:
            self._span.set_attribute("messaging.message.id", str(ids[0]))
            self._span.set_attribute("pgjobs.run_id", ids[0])

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        otel = _otel()
        try:
            try:
                if exc is not None:
                    _failed(otel, self._span, type(exc).__qualname__, _described(exc))
                    self._span.record_exception(exc)
            finally:
                otel.context.detach(self._token)
                self._span.end()
        except Exception:  # the enqueue's own outcome, or exception, goes on unchanged
            _broken("ending the span of an enqueue")


def enqueue_span(jobs: Sequence[str], *, batch: bool) -> EnqueueSpan | None:
    """The span of an enqueue of runs of ``jobs`` (``batch``: by ``enqueue_many``), or None when
    no span is current: such an enqueue is not traced and its runs carry no trace context."""
    try:
        otel = _otel()
        if not otel.trace.get_current_span().get_span_context().is_valid:
            return None
        return _start_enqueue(otel, jobs, batch)
    except Exception:
        _broken("starting the span of an enqueue")
        return None


def _start_enqueue(otel: _Otel, jobs: Sequence[str], batch: bool) -> EnqueueSpan:
    names = set(jobs)
    job = next(iter(names)) if len(names) == 1 else None
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation": "publish",
        "messaging.operation.type": "send",
    }
    if job is not None:
        attributes["pgjobs.job"] = job
    if batch:
        attributes["messaging.batch.message_count"] = len(jobs)
    name = ("enqueue_many" if batch else "enqueue") + (f" {job}" if job is not None else "")
    span = otel.tracer.start_span(name, kind=otel.trace.SpanKind.PRODUCER, attributes=attributes)
    return EnqueueSpan(span, single=not batch)


def _injected(otel: _Otel) -> str | None:
    """The current context as the configured propagators write it, as JSON text: None when
    they write nothing, or something Postgres cannot store or is too long to keep."""
    carrier: dict[str, str] = {}
    otel.propagate.inject(carrier)
    if not carrier:
        return None
    try:
        text = json.dumps(carrier, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):  # a propagator that writes something other than strings
        return None
    # jsonb cannot hold NUL: sent anyway, it would abort the caller's transaction.
    if "\\u0000" in text or len(text) > _MAX_CONTEXT_CHARS:
        log.debug("trace context not stored: a NUL character or over %d chars", _MAX_CONTEXT_CHARS)
        return None
    return text


# -- runs ---------------------------------------------------------------------------------------


class RunSpan:
    """The span of one run, current from :func:`run_span` until :meth:`finished` or
    :meth:`interrupted` (called in the same task)."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span, token: object) -> None:
        self._span = span
        self._token = token

    def finished(self, outcome: Outcome) -> None:
        """End the span with the run's outcome: its status, and for a failed or timed-out run
        the error's type and status ERROR."""
        span = self._span
        try:
            try:
                span.set_attribute("pgjobs.status", outcome.status)
                if outcome.status in ERROR_STATUSES:
                    error_type = outcome.error_type or outcome.status
                    _failed(_otel(), span, error_type, outcome.error_message or outcome.message)
            finally:
                self._end()
        except Exception:  # the run's outcome is recorded all the same
            _broken("ending the span of a run")

    def interrupted(self) -> None:
        """End the span of a run the worker stopped and hands back to the queue."""
        try:
            try:
                self._span.set_attribute("pgjobs.handed_back", True)
            finally:
                self._end()
        except Exception:
            _broken("ending the span of a run")

    def _end(self) -> None:
        try:
            _otel().context.detach(self._token)
        finally:
            self._span.end()


def run_span(run: ClaimedRun, *, queue: str, worker_id: str) -> RunSpan | None:
    """Start the span of ``run`` (on ``queue`` when the run does not say) and make it current;
    None when no tracer provider is set."""
    try:
        otel = _otel()
        if isinstance(otel.trace.get_tracer_provider(), otel.untraced):
            return None
        return _start_run(otel, run, queue, worker_id)
    except Exception:
        _broken("starting the span of a run")
        return None


def _start_run(otel: _Otel, run: ClaimedRun, queue: str, worker_id: str) -> RunSpan:
    queue = run.queue or queue
    span = otel.tracer.start_span(
        f"run {run.job}",
        context=_extracted(otel, run.trace_context),
        kind=otel.trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": SYSTEM,
            "messaging.operation": "process",
            "messaging.operation.type": "process",
            "messaging.destination.name": queue,
            "messaging.message.id": str(run.id),
            "pgjobs.job": run.job,
            "pgjobs.run_id": run.id,
            "pgjobs.attempt": run.attempt,
            "pgjobs.trigger": run.trigger,
            "pgjobs.queue": queue,
            "pgjobs.worker_id": worker_id,
        },
    )
    token = otel.context.attach(otel.trace.set_span_in_context(span))
    return RunSpan(span, token)


def _extracted(otel: _Otel, stored: object) -> Context | None:
    """The context stored at enqueue, or None (the current one) when there is none or it is not
    a map of strings: a row written by hand must not stop the run."""
    if not isinstance(stored, Mapping) or not stored:
        return None
    carrier = {k: v for k, v in stored.items() if isinstance(k, str) and isinstance(v, str)}
    context = otel.propagate.extract(carrier)
    return context if otel.trace.get_current_span(context).get_span_context().is_valid else None


def _described(exc: BaseException) -> str:
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:  # an exception whose __str__ fails
        return type(exc).__name__


def _failed(otel: _Otel, span: Span, error_type: str, description: str | None) -> None:
    span.set_attribute("error.type", error_type)
    if description is not None and len(description) > _MAX_DESCRIPTION_CHARS:
        description = description[: _MAX_DESCRIPTION_CHARS - 3] + "..."
    span.set_status(otel.trace.Status(otel.trace.StatusCode.ERROR, description))
