"""Jobs for the tracing tests, in a worker whose OpenTelemetry SDK writes every ended span to the
file ``PGJOBS_TEST_SPANS`` names, one JSON object a line, for the test to read."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from pgjobs import Extension, Job, JobContext, JobResult, RetryBackoff


class FileExporter(SpanExporter):
    """Appends each span, as soon as it ends, to a JSON-lines file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            parent = span.parent
            lines.append(
                json.dumps(
                    {
                        "name": span.name,
                        "kind": span.kind.name,
                        "trace_id": f"{span.context.trace_id:032x}",
                        "span_id": f"{span.context.span_id:016x}",
                        "parent_span_id": f"{parent.span_id:016x}" if parent else None,
                        "parent_is_remote": parent.is_remote if parent else None,
                        "status": span.status.status_code.name,
                        "description": span.status.description,
                        "attributes": dict(span.attributes or {}),
                    }
                )
            )
        with self.lock, open(self.path, "a", encoding="utf-8") as out:
            out.write("".join(line + "\n" for line in lines))
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(FileExporter(os.environ["PGJOBS_TEST_SPANS"])))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("tests")


class Traced(Job):
    """Makes a span of its own: a child of the run's, since the run's span is current."""

    name = "t-traced"
    overlap = "allow"
    queue = "traced"

    async def execute(self, ctx: JobContext) -> JobResult:
        with tracer.start_as_current_span("inside the job"):
            await asyncio.sleep(0)
        return JobResult.success("traced")


class TracedFail(Job):
    name = "t-traced-fail"
    overlap = "allow"
    max_attempts = 2
    retry_backoff = RetryBackoff(base_seconds=0.1, factor=1.0, max_seconds=0.1, jitter=0.0)

    async def execute(self, ctx: JobContext) -> JobResult:
        raise ValueError(f"no luck on attempt {ctx.attempt}")


class TracedTimeout(Job):
    name = "t-traced-timeout"
    overlap = "allow"
    timeout = 0.2

    async def execute(self, ctx: JobContext) -> JobResult:
        await asyncio.sleep(10)
        return JobResult.success("unreachable")


class TracedSync(Job):
    name = "t-traced-sync"
    overlap = "allow"

    def execute(self, ctx: JobContext) -> JobResult:
        return JobResult.success("sync")


class TracingExtension(Extension):
    name = "t"

    def jobs(self) -> list[Job]:
        return [Traced(), TracedFail(), TracedTimeout(), TracedSync()]


extension = TracingExtension()
