"""Tracing with OpenTelemetry: an enqueue's span, its context stored on the run, and the run's
span in a real worker process as the enqueue's child; errors on failed and timed-out runs; no
trace context without a current span; and everything working with OpenTelemetry not installed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import pgjobs
from pgjobs import EnqueueRequest, UnknownJobError
from tests.workers import ROOT, WorkerProcess, Workers, rows, scalar, wait_until, worker_pool

APP = "tests.worker_apps.tracing:extension"


@pytest.fixture(scope="module")
def exported() -> InMemorySpanExporter:
    """The spans this process ends, through the global SDK tracer provider (set once)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def spans(exported: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    exported.clear()
    yield exported
    exported.clear()


@pytest.fixture
def workers(dsn: str, tmp_path: Path) -> Iterator[Workers]:
    with worker_pool(dsn, tmp_path) as pool:
        yield pool


@pytest.fixture
def jobs(conn: psycopg.Connection[Any]) -> None:
    """Rows in ``jobs`` as a worker would register them, without starting one."""
    conn.execute(
        "INSERT INTO pgjobs.jobs (name, extension, priority, queue, max_attempts) VALUES "
        "('t-echo', 't', 0, 'default', 1)"
    )


tracer = trace.get_tracer("tests")


def start_worker(workers: Workers, spans_file: Path) -> WorkerProcess:
    env = {"PGJOBS_TEST_SPANS": str(spans_file)}
    proc = workers.start([], "--queue", "default", "--queue", "traced", app=APP, env=env)
    workers.wait_registered(proc)
    return proc


def worker_spans(path: Path, count: int) -> list[dict[str, Any]]:
    """Every span the worker wrote, once ``count`` of them are runs' spans."""

    def read() -> list[dict[str, Any]] | None:
        if not path.exists():
            return None
        # Whole lines only: the worker may be writing the last one.
        found = [json.loads(line) for line in path.read_text().split("\n")[:-1]]
        runs = [s for s in found if s["name"].startswith("run ")]
        return found if len(runs) >= count else None

    return wait_until(read, 20, f"{count} run spans in {path}")


def span_of_run(found: list[dict[str, Any]], run_id: int) -> dict[str, Any]:
    (span,) = [
        s
        for s in found
        if s["name"].startswith("run ") and s["attributes"]["pgjobs.run_id"] == run_id
    ]
    return span


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


def traceparent(span: ReadableSpan) -> str:
    assert span.context is not None
    return "00-{}-{}-{:02x}".format(*hex_ids(span), span.context.trace_flags)


def trace_contexts(dsn: str) -> dict[int, Any]:
    return dict(rows(dsn, "SELECT id, trace_context FROM pgjobs.runs"))


def wait_statuses(dsn: str, expected: dict[str, int]) -> None:
    def reached() -> bool:
        found = dict(rows(dsn, "SELECT status, count(*) FROM pgjobs.runs GROUP BY status"))
        return found == expected

    wait_until(reached, 30, f"runs {expected}")


def test_a_run_span_is_the_child_of_its_enqueue_span_across_the_worker_process(
    dsn: str, workers: Workers, spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    spans_file = tmp_path / "spans.jsonl"
    worker = start_worker(workers, spans_file)
    with psycopg.connect(dsn) as conn:
        with tracer.start_as_current_span("request") as request:
            traced = pgjobs.enqueue_sync(conn, "t-traced", {"n": 1})
        untraced = pgjobs.enqueue_sync(conn, "t-traced-sync")
        # Rows written by hand with a context that is no W3C one must still run.
        bad = [
            conn.execute(
                "INSERT INTO pgjobs.runs (job, trigger, trace_context) "
                "VALUES ('t-traced-sync', 'enqueue', %s) RETURNING id",
                (value,),
            ).fetchone()[0]  # type: ignore[index]
            for value in ('{"traceparent": "00-zz-zz-01"}', "[1, 2]", '{"traceparent": 5}')
        ]
        conn.commit()

    (enqueued,) = [s for s in spans.get_finished_spans() if s.name != "request"]
    trace_id, enqueue_span_id = hex_ids(enqueued)
    assert enqueued.name == "enqueue t-traced"
    assert enqueued.kind is SpanKind.PRODUCER
    assert enqueued.parent is not None
    assert enqueued.parent.span_id == request.get_span_context().span_id
    assert dict(enqueued.attributes or {}) == {
        "messaging.system": "pgjobs",
        "messaging.operation": "publish",
        "messaging.operation.type": "send",
        "messaging.message.id": str(traced),
        "pgjobs.job": "t-traced",
        "pgjobs.run_id": traced,
    }
    stored = trace_contexts(dsn)
    assert stored[traced] == {"traceparent": traceparent(enqueued)}
    assert stored[untraced] is None

    wait_statuses(dsn, {"succeeded": 5})
    found = worker_spans(spans_file, 5)
    assert worker.stop() == 0

    run = span_of_run(found, traced)
    assert run["trace_id"] == trace_id
    assert run["parent_span_id"] == enqueue_span_id
    assert run["parent_is_remote"] is True
    assert run["name"] == "run t-traced"
    assert run["kind"] == "CONSUMER"
    assert run["status"] == "UNSET"
    assert run["attributes"] == {
        "messaging.system": "pgjobs",
        "messaging.operation": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": "traced",
        "messaging.message.id": str(traced),
        "pgjobs.job": "t-traced",
        "pgjobs.run_id": traced,
        "pgjobs.attempt": 1,
        "pgjobs.trigger": "enqueue",
        "pgjobs.queue": "traced",
        "pgjobs.worker_id": worker.id,
        "pgjobs.status": "succeeded",
    }
    (inside,) = [s for s in found if s["name"] == "inside the job"]
    assert (inside["trace_id"], inside["parent_span_id"]) == (trace_id, run["span_id"])

    for run_id in (untraced, *bad):
        root = span_of_run(found, run_id)
        assert root["parent_span_id"] is None
        assert root["trace_id"] != trace_id
        assert root["attributes"]["pgjobs.status"] == "succeeded"


def test_failed_and_timed_out_runs_end_their_spans_in_error_and_a_retry_stays_in_the_trace(
    dsn: str, workers: Workers, spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    spans_file = tmp_path / "spans.jsonl"
    worker = start_worker(workers, spans_file)

    async def enqueue() -> list[int]:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            with tracer.start_as_current_span("request"):
                ids = await pgjobs.enqueue_many(
                    conn,
                    [EnqueueRequest("t-traced-fail"), {"job": "t-traced-timeout"}],
                )
            await conn.commit()
            return ids

    fail, timeout = asyncio.run(enqueue())
    enqueued = next(s for s in spans.get_finished_spans() if s.name.startswith("enqueue"))
    trace_id, enqueue_span_id = hex_ids(enqueued)
    assert enqueued.name == "enqueue_many"  # two jobs: none in the name
    assert (enqueued.attributes or {})["messaging.batch.message_count"] == 2
    assert "pgjobs.job" not in (enqueued.attributes or {})

    wait_statuses(dsn, {"failed": 2, "timed_out": 1})
    found = worker_spans(spans_file, 3)
    assert worker.stop() == 0
    retry = scalar(dsn, "SELECT id FROM pgjobs.runs WHERE retry_of = %s", fail)
    assert trace_contexts(dsn)[retry] == trace_contexts(dsn)[fail]

    for run_id, attempt, trigger in ((fail, 1, "enqueue"), (retry, 2, "retry")):
        span = span_of_run(found, run_id)
        assert (span["trace_id"], span["parent_span_id"]) == (trace_id, enqueue_span_id)
        assert span["status"] == "ERROR"
        assert span["description"] == f"no luck on attempt {attempt}"
        attributes = span["attributes"]
        assert attributes["error.type"] == "ValueError"
        assert attributes["pgjobs.status"] == "failed"
        assert (attributes["pgjobs.attempt"], attributes["pgjobs.trigger"]) == (attempt, trigger)

    timed_out = span_of_run(found, timeout)
    assert (timed_out["trace_id"], timed_out["parent_span_id"]) == (trace_id, enqueue_span_id)
    assert timed_out["status"] == "ERROR"
    assert timed_out["attributes"]["error.type"] == "TimeoutError"
    assert timed_out["attributes"]["pgjobs.status"] == "timed_out"


@pytest.mark.usefixtures("jobs")
def test_enqueue_many_is_one_span_with_the_count_and_each_run_carries_its_context(
    dsn: str, conn: psycopg.Connection[Any], spans: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("request"):
        ids = pgjobs.enqueue_many_sync(
            conn, [{"job": "t-echo", "payload": {"n": n}} for n in range(3)]
        )
    conn.commit()
    (enqueued,) = [s for s in spans.get_finished_spans() if s.name != "request"]
    assert enqueued.name == "enqueue_many t-echo"
    assert dict(enqueued.attributes or {}) == {
        "messaging.system": "pgjobs",
        "messaging.operation": "publish",
        "messaging.operation.type": "send",
        "messaging.batch.message_count": 3,
        "pgjobs.job": "t-echo",
    }
    context = {"traceparent": traceparent(enqueued)}
    assert trace_contexts(dsn) == dict.fromkeys(ids, context)


@pytest.mark.usefixtures("jobs")
def test_an_enqueue_without_a_current_span_makes_none_and_stores_no_trace_context(
    dsn: str, conn: psycopg.Connection[Any], spans: InMemorySpanExporter
) -> None:
    async def enqueue() -> int:
        async with await psycopg.AsyncConnection.connect(dsn) as aconn:
            run_id = await pgjobs.enqueue(aconn, "t-echo")
            await aconn.commit()
            return run_id

    ids = [
        pgjobs.enqueue_sync(conn, "t-echo"),
        *pgjobs.enqueue_many_sync(conn, [{"job": "t-echo"}]),
    ]
    conn.commit()
    ids.append(asyncio.run(enqueue()))
    assert trace_contexts(dsn) == dict.fromkeys(ids)
    assert spans.get_finished_spans() == ()


@pytest.mark.usefixtures("jobs")
def test_a_refused_enqueue_ends_its_span_in_error(
    dsn: str, conn: psycopg.Connection[Any], spans: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("request"), pytest.raises(UnknownJobError):
        pgjobs.enqueue_sync(conn, "t-nope")
    (enqueued,) = [s for s in spans.get_finished_spans() if s.name != "request"]
    assert enqueued.status.status_code is StatusCode.ERROR
    assert (enqueued.attributes or {})["error.type"] == "UnknownJobError"
    assert [event.name for event in enqueued.events] == ["exception"]
    conn.rollback()
    assert scalar(dsn, "SELECT count(*) FROM pgjobs.runs") == 0


class HostilePropagator(TextMapPropagator):
    """Writes what it is given into the carrier, or raises it."""

    def __init__(self, written: dict[str, Any] | Exception) -> None:
        self.written = written

    def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
        if isinstance(self.written, Exception):
            raise self.written
        carrier.update(self.written)

    def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
        return context

    @property
    def fields(self) -> set[str]:
        return set()


@pytest.mark.parametrize(
    "written",
    [
        RuntimeError("propagator bug"),
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "x": "a\x00b"},
        {"baggage": "k=" + "v" * 10_000},
        {"traceparent": b"bytes"},
    ],
    ids=["raises", "nul", "huge", "not-text"],
)
@pytest.mark.usefixtures("jobs")
def test_a_trace_context_that_cannot_be_stored_is_left_out_and_the_enqueue_goes_on(
    dsn: str,
    conn: psycopg.Connection[Any],
    spans: InMemorySpanExporter,
    written: dict[str, Any] | Exception,
    caplog: pytest.LogCaptureFixture,
) -> None:
    configured = propagate.get_global_textmap()
    propagate.set_global_textmap(HostilePropagator(written))
    try:
        with tracer.start_as_current_span("request"):
            run_id = pgjobs.enqueue_sync(conn, "t-echo")
    finally:
        propagate.set_global_textmap(configured)
    conn.commit()  # the caller's transaction was not aborted
    assert trace_contexts(dsn) == {run_id: None}
    assert [s.name for s in spans.get_finished_spans()] == ["enqueue t-echo", "request"]
    if isinstance(written, Exception):
        assert "tracing failed writing the trace context of an enqueue" in caplog.text


# Python that runs with every opentelemetry module unimportable, as if it were not installed.
BLOCKED = "import sys\nsys.modules['opentelemetry'] = None\n"


ARGS = ("--app", "tests.worker_apps.app:extension", "--poll-interval", "1")


def test_without_opentelemetry_enqueue_and_runs_work(dsn: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PGJOBS_TEST_JOBS": "t-echo"}
    worker_script = BLOCKED + textwrap.dedent(
        """
        import runpy
        sys.argv = ["pgjobs", *sys.argv[1:]]
        runpy.run_module("pgjobs", run_name="__main__")
        """
    )
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-c", worker_script, "worker", "--dsn", dsn, "--id", "bare", *ARGS],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: scalar(dsn, "SELECT count(*) FROM pgjobs.workers WHERE id = 'bare'"),
            20,
            "the worker to register",
        )
        enqueue_script = BLOCKED + textwrap.dedent(
            f"""
            import psycopg, pgjobs, pgjobs.tracing
            assert not pgjobs.tracing.AVAILABLE
            with psycopg.connect({dsn!r}) as conn:
                pgjobs.enqueue_sync(conn, "t-echo", {{"n": 1}})
                pgjobs.enqueue_many_sync(conn, [{{"job": "t-echo"}}])
            loaded = [m for m, v in sys.modules.items() if m.startswith("opentelemetry") and v]
            assert not loaded, loaded
            """
        )
        done = subprocess.run(
            [sys.executable, "-c", enqueue_script], cwd=ROOT, env=env, capture_output=True
        )
        assert done.returncode == 0, done.stderr.decode()
        wait_until(
            lambda: (
                rows(dsn, "SELECT status, trace_context FROM pgjobs.runs")
                == [("succeeded", None)] * 2
            ),
            20,
            "both runs to succeed",
        )
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    assert "Traceback" not in log.read_text()
