"""Type-checked by mypy in tests/test_typed_payloads.py, never run: a line that ends with
``# error: <text>`` or ``# note: <text>`` must get that message from mypy, and no other line
may get any. It shows what a payload type buys in an editor: ``ctx.payload`` of a typed job is
its type, a wrong field is an error, and a typed job is still a ``Job`` wherever one is taken."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict, reveal_type

import pgjobs
from pgjobs import Extension, Job, JobContext, JobResult


@dataclass
class MailPayload:
    to: str
    subject: str = ""


class ReportPayload(TypedDict):
    day: str


@dataclass
class Invoice:
    number: int


class SendMail(Job[MailPayload]):
    name = "x-mail"

    async def execute(self, ctx: JobContext[MailPayload]) -> JobResult:
        reveal_type(ctx.payload)  # note: typed_jobs.MailPayload"
        print(ctx.payload.to.upper())
        print(ctx.payload.too)  # error: "MailPayload" has no attribute "too"
        return JobResult.success()


class Report(Job[ReportPayload]):
    name = "x-report"

    def execute(self, ctx: JobContext[ReportPayload]) -> JobResult:
        print(ctx.payload["day"])
        print(ctx.payload["month"])  # error: TypedDict "ReportPayload" has no key "month"
        return JobResult.success()


class Untyped(Job):
    name = "x-untyped"

    async def execute(self, ctx: JobContext) -> JobResult:
        reveal_type(ctx.payload)  # note: Revealed type is "dict[str, Any] | None"
        return JobResult.success()


class X(Extension):
    name = "x"

    def jobs(self) -> list[Job]:
        return [SendMail(), Report(), Untyped()]


def enqueue(conn: Any) -> None:
    pgjobs.enqueue_sync(conn, SendMail, MailPayload(to="someone@example.com"))
    pgjobs.enqueue_sync(conn, SendMail, {"to": "someone@example.com"})
    pgjobs.enqueue_sync(conn, SendMail(), MailPayload(to="someone@example.com"))
    pgjobs.enqueue_sync(conn, "x-mail", MailPayload(to="someone@example.com"))
    pgjobs.enqueue_sync(conn, Untyped, {"any": "thing"})
    pgjobs.enqueue_sync(conn, Report, ReportPayload(day="2030-05-01"))
    pgjobs.enqueue_sync(conn, SendMail, Invoice(7))  # error: Cannot infer value of type parameter
