"""Jobs with typed payloads, run by real workers in tests/test_typed_payloads.py: a dataclass, a
TypedDict and a pydantic model, each job reporting what ``ctx.payload`` was as the run's data."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import NotRequired, TypedDict

from pydantic import BaseModel

from pgjobs import Extension, Job, JobContext, JobResult


class Urgency(enum.Enum):
    LOW = "low"
    HIGH = "high"


@dataclass
class Recipient:
    address: str
    name: str | None = None


@dataclass
class MailPayload:
    to: Recipient
    subject: str
    send_at: datetime
    urgency: Urgency = Urgency.LOW
    cc: list[Recipient] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.subject.strip():
            raise ValueError("the subject is blank")


class ReportPayload(TypedDict):
    day: str
    tenants: list[int]
    dry_run: NotRequired[bool]


class InvoicePayload(BaseModel):
    invoice_id: int
    amount: float
    currency: str = "EUR"


class SendMail(Job[MailPayload]):
    name = "tp-mail"
    overlap = "allow"

    async def execute(self, ctx: JobContext[MailPayload]) -> JobResult:
        ctx.log.info("sending mail")
        mail = ctx.payload
        return JobResult.success().with_data(
            type=type(mail).__name__,
            to=type(mail.to).__name__,
            address=mail.to.address,
            send_at=f"{type(mail.send_at).__name__} {mail.send_at.isoformat()}",
            urgency=repr(mail.urgency),
            cc=[recipient.address for recipient in mail.cc],
        )


class Report(Job[ReportPayload]):
    """Sync, with a TypedDict: ``ctx.payload`` is a dict whose keys were checked."""

    name = "tp-report"
    overlap = "allow"

    def execute(self, ctx: JobContext[ReportPayload]) -> JobResult:
        report = ctx.payload
        return JobResult.success().with_data(
            type=type(report).__name__,
            day=report["day"],
            tenants=sum(report["tenants"]),
            dry_run=report.get("dry_run", False),
        )


class Invoice(Job[InvoicePayload]):
    name = "tp-invoice"
    overlap = "allow"

    async def execute(self, ctx: JobContext[InvoicePayload]) -> JobResult:
        invoice = ctx.payload
        return JobResult.success().with_data(
            type=type(invoice).__name__, total=f"{invoice.amount:.2f} {invoice.currency}"
        )


class Plain(Job):
    """No payload type: ``ctx.payload`` is the stored JSON object, as ever."""

    name = "tp-plain"
    overlap = "allow"

    async def execute(self, ctx: JobContext) -> JobResult:
        return JobResult.success().with_data(type=type(ctx.payload).__name__, payload=ctx.payload)


class TypedExtension(Extension):
    name = "tp"

    def jobs(self) -> list[Job]:
        return [SendMail(), Report(), Invoice(), Plain()]


extension = TypedExtension()
