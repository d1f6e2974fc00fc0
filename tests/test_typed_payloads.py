"""Typed payloads: a job declares its payload as a dataclass, a TypedDict or a pydantic model.
Enqueueing the job's class checks the payload (and takes the typed object) before any statement;
real workers hand the run the typed object as ``ctx.payload``, and fail a run whose stored
payload does not match with ``PayloadError`` without calling the job; mypy sees the type."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, TypedDict
from uuid import UUID

import psycopg
import pytest
from psycopg.types.json import Jsonb

import pgjobs
from pgjobs import ConfigError, Extension, Job, JobContext, JobResult, PayloadError
from pgjobs.errors import RegistrationError
from pgjobs.execution import RunExecution
from pgjobs.payloads import dump_payload, load_payload
from pgjobs.profile import load_profile
from pgjobs.registry import Registry
from pgjobs.store import ClaimedRun
from tests.worker_apps.typed import (
    Invoice,
    InvoicePayload,
    MailPayload,
    Plain,
    Recipient,
    Report,
    SendMail,
    TypedExtension,
    Urgency,
)
from tests.workers import ROOT, Workers, rows, scalar, wait_until, worker_pool

APP = "tests.worker_apps.typed:extension"
SEND_AT = datetime(2030, 5, 1, 9, 30, tzinfo=UTC)
MAIL = MailPayload(Recipient("ada@example.com", "Ada"), "Hello", SEND_AT, Urgency.HIGH)
MAIL_JSON = {
    "to": {"address": "ada@example.com", "name": "Ada"},
    "subject": "Hello",
    "send_at": "2030-05-01T09:30:00+00:00",
    "urgency": "high",
    "cc": [],
}


@pytest.fixture
def jobs(conn: psycopg.Connection[Any]) -> None:
    """Rows in ``jobs`` as a worker of the typed app would register them, without one."""
    conn.execute(
        "INSERT INTO pgjobs.jobs (name, extension, priority, queue, max_attempts) VALUES "
        "('tp-mail', 'tp', 0, 'default', 1), ('tp-report', 'tp', 0, 'default', 1), "
        "('tp-invoice', 'tp', 0, 'default', 1), ('tp-plain', 'tp', 0, 'default', 1)"
    )


@pytest.fixture
def workers(dsn: str, tmp_path: Path) -> Iterator[Workers]:
    with worker_pool(dsn, tmp_path) as pool:
        yield pool


def stored_payloads(dsn: str) -> list[Any]:
    return [payload for (payload,) in rows(dsn, "SELECT payload FROM pgjobs.runs ORDER BY id")]


# -- declaring --------------------------------------------------------------------------------


def test_the_generic_argument_declares_the_payload_type() -> None:
    assert SendMail.payload_type is MailPayload
    assert Invoice.payload_type is InvoicePayload
    assert Plain.payload_type is None

    class Sub(SendMail):  # inherited
        pass

    class Explicit(Job[Any]):
        payload_type = MailPayload

    class Untyped(Job[dict[str, Any]]):
        pass

    assert Sub.payload_type is MailPayload
    assert Explicit.payload_type is MailPayload
    assert Untyped.payload_type is None


def test_a_job_whose_payload_type_is_no_dataclass_typeddict_or_model_is_not_registered() -> None:
    class NotAPayload:
        to: str

    class Broken(Job[NotAPayload]):
        name = "x-broken"

        async def execute(self, ctx: JobContext[NotAPayload]) -> JobResult:
            return JobResult.success()

    class X(Extension):
        name = "x"

        def jobs(self) -> list[Job]:
            return [Broken()]

    with pytest.raises(RegistrationError) as info:
        Registry.build([X()])
    assert str(info.value) == (
        "extension 'x', job 'x-broken': payload_type must be a dataclass, a TypedDict or a "
        "pydantic model, got test_a_job_whose_payload_type_is_no_dataclass_typeddict_or_model_"
        "is_not_registered.<locals>.NotAPayload"
    )


def test_the_profile_still_overrides_a_typed_job(tmp_path: Path) -> None:
    path = tmp_path / "profile.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            scheduler:
              jobs:
                - extension: tp
                  job: tp-mail
                  queue: mail
                  priority: 3
                  schedule: "0 0 9 * * *"
            """
        )
    )
    registry = Registry.build([TypedExtension()], load_profile(path))
    mail = registry.get("tp-mail")
    assert (mail.queue, mail.priority, mail.schedule) == ("mail", 3, "0 0 9 * * *")
    assert mail.job.payload_type is MailPayload
    assert registry.names() == ["tp-mail", "tp-report", "tp-invoice", "tp-plain"]


# -- enqueue ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("jobs")
def test_enqueue_takes_the_typed_object_or_a_matching_dict_and_stores_its_json(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        pgjobs.enqueue_sync(conn, SendMail, MAIL)
        pgjobs.enqueue_sync(conn, SendMail(), dict(MAIL_JSON, urgency="high"))
        pgjobs.enqueue_sync(conn, Report, {"day": "2030-05-01", "tenants": [1, 2]})
        pgjobs.enqueue_sync(conn, Invoice, InvoicePayload(invoice_id=7, amount=12.5))
        pgjobs.enqueue_sync(conn, Invoice, {"invoice_id": "8", "amount": 3})  # pydantic coerces
        conn.commit()
    assert stored_payloads(dsn) == [
        MAIL_JSON,
        MAIL_JSON,
        {"day": "2030-05-01", "tenants": [1, 2]},
        {"invoice_id": 7, "amount": 12.5, "currency": "EUR"},
        {"invoice_id": 8, "amount": 3.0, "currency": "EUR"},
    ]


@pytest.mark.parametrize(
    ("job", "payload", "message"),
    [
        (SendMail, {**MAIL_JSON, "subject": 5}, "field 'subject' must be str, got int 5"),
        (SendMail, {**MAIL_JSON, "to": {"adress": "x"}}, "field 'to.adress' is not a field of"),
        (SendMail, {"subject": "Hi"}, "field 'to' is required and missing"),
        (SendMail, None, "field 'to' is required and missing"),
        (SendMail, {**MAIL_JSON, "send_at": "soon"}, "field 'send_at' must be datetime (ISO"),
        (SendMail, {**MAIL_JSON, "urgency": "now"}, "field 'urgency' must be one of 'low', "),
        (SendMail, {**MAIL_JSON, "cc": [{"address": 1}]}, "field 'cc[0].address' must be str"),
        (SendMail, {**MAIL_JSON, "subject": " "}, "MailPayload(...) raised ValueError: the "),
        (SendMail, InvoicePayload(invoice_id=1, amount=1), "must be a MailPayload or a dict, got"),
        (Report, {"day": "d", "tenants": ["1"]}, "field 'tenants[0]' must be int, got str '1'"),
        (Report, {"day": "d"}, "field 'tenants' is required and missing"),
        (Report, {"day": "d", "tenants": [], "dry_run": 1}, "field 'dry_run' must be bool"),
        (Invoice, {"invoice_id": "seven", "amount": 1}, "field 'invoice_id' is invalid: Input"),
        (Invoice, {"amount": 1}, "field 'invoice_id' is invalid: Field required"),
    ],
)
@pytest.mark.usefixtures("jobs")
def test_enqueue_refuses_a_payload_that_does_not_match_and_the_transaction_carries_on(
    dsn: str, job: type[Job], payload: Any, message: str
) -> None:
    with psycopg.connect(dsn) as conn:
        with pytest.raises(PayloadError) as info:
            pgjobs.enqueue_sync(conn, job, payload)
        text = str(info.value)
        assert text.startswith(f"job {job.name!r}: the payload does not match ")
        assert message in text
        assert "\n" not in text
        assert isinstance(info.value, ConfigError)
        # Nothing was sent: the caller's transaction is as it was, and can go on.
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        pgjobs.enqueue_sync(conn, "tp-plain")
        conn.commit()
    assert scalar(dsn, "SELECT array_agg(job) FROM pgjobs.runs") == ["tp-plain"]


@pytest.mark.usefixtures("jobs")
def test_enqueue_many_queues_none_when_one_typed_payload_does_not_match(dsn: str) -> None:
    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            with pytest.raises(PayloadError, match=r"^request 1: job 'tp-mail': the payload "):
                await pgjobs.enqueue_many(
                    conn,
                    [
                        pgjobs.EnqueueRequest(SendMail, MAIL),
                        {"job": SendMail, "payload": {"subject": "no recipient"}},
                    ],
                )
            await conn.commit()

    asyncio.run(scenario())
    assert scalar(dsn, "SELECT count(*) FROM pgjobs.runs") == 0


@pytest.mark.usefixtures("jobs")
def test_by_name_a_typed_object_is_sent_as_its_json_and_nothing_is_checked(dsn: str) -> None:
    # Application code that names the job has no registry to find its type in: the worker
    # checks the payload before the run (see the test with real workers below).
    with psycopg.connect(dsn) as conn:
        pgjobs.enqueue_sync(conn, "tp-mail", MAIL)
        pgjobs.enqueue_sync(conn, "tp-mail", {"subject": 5})
        conn.commit()
    assert stored_payloads(dsn) == [MAIL_JSON, {"subject": 5}]


# -- real workers -------------------------------------------------------------------------------


def finished_runs(dsn: str, count: int) -> list[tuple[Any, ...]]:
    wait_until(
        lambda: (
            scalar(dsn, "SELECT count(*) FROM pgjobs.runs WHERE finished_at IS NOT NULL") >= count
        ),
        30,
        f"{count} runs to finish",
    )
    return rows(
        dsn,
        "SELECT job, status, data, error_type, error_message, error_traceback, logs "
        "FROM pgjobs.runs ORDER BY id",
    )


def test_workers_hand_each_run_its_typed_payload(dsn: str, workers: Workers) -> None:
    worker = workers.start([], app=APP)
    workers.wait_registered(worker)
    with psycopg.connect(dsn) as conn:
        pgjobs.enqueue_sync(conn, SendMail, MAIL)
        pgjobs.enqueue_sync(conn, "tp-mail", {**MAIL_JSON, "cc": [{"address": "bob@example.com"}]})
        pgjobs.enqueue_sync(conn, Report, {"day": "2030-05-01", "tenants": [1, 2], "dry_run": True})
        pgjobs.enqueue_sync(conn, Invoice, InvoicePayload(invoice_id=7, amount=12.5))
        pgjobs.enqueue_sync(conn, Plain, {"any": ["thing"]})
        conn.commit()
    mail = {
        "type": "MailPayload",
        "to": "Recipient",
        "address": "ada@example.com",
        "send_at": "datetime 2030-05-01T09:30:00+00:00",
        "urgency": "<Urgency.HIGH: 'high'>",
        "cc": [],
    }
    assert [run[:4] for run in finished_runs(dsn, 5)] == [
        ("tp-mail", "succeeded", mail, None),
        ("tp-mail", "succeeded", {**mail, "cc": ["bob@example.com"]}, None),
        (
            "tp-report",
            "succeeded",
            {"type": "dict", "day": "2030-05-01", "tenants": 3, "dry_run": True},
            None,
        ),
        ("tp-invoice", "succeeded", {"type": "InvoicePayload", "total": "12.50 EUR"}, None),
        ("tp-plain", "succeeded", {"type": "dict", "payload": {"any": ["thing"]}}, None),
    ]
    assert worker.stop() == 0, worker.log()


def test_a_stored_payload_that_does_not_match_fails_the_run_without_calling_the_job(
    dsn: str, workers: Workers
) -> None:
    worker = workers.start([], app=APP)
    workers.wait_registered(worker)
    bad = [
        ("tp-mail", {**MAIL_JSON, "to": "ada@example.com"}),
        ("tp-mail", None),
        ("tp-report", {"day": "d", "tenants": [1], "extra": "x"}),
        ("tp-invoice", {"invoice_id": [], "amount": 1}),
    ]
    with psycopg.connect(dsn) as conn:
        for job, payload in bad:  # the SQL function, as a trigger or another language would
            conn.execute(
                "SELECT pgjobs.enqueue(%s::text, payload => %s::jsonb)",
                [job, None if payload is None else Jsonb(payload)],
            )
        pgjobs.enqueue_sync(conn, "tp-mail", {**MAIL_JSON, "subject": ""})  # by name: unchecked
        conn.commit()
    runs = finished_runs(dsn, 5)
    assert [(job, status, error_type) for job, status, _, error_type, *_ in runs] == [
        ("tp-mail", "failed", "PayloadError"),
        ("tp-mail", "failed", "PayloadError"),
        ("tp-report", "failed", "PayloadError"),
        ("tp-invoice", "failed", "PayloadError"),
        ("tp-mail", "failed", "PayloadError"),
    ]
    assert [error for *_, error, _, _ in runs] == [
        "job 'tp-mail': the payload does not match MailPayload: field 'to' must be an object of "
        "Recipient's fields, got str 'ada@example.com'",
        "job 'tp-mail': the payload does not match MailPayload: field 'to' is required and missing",
        "job 'tp-report': the payload does not match ReportPayload: field 'extra' is not a field "
        "of it (its fields: day, tenants, dry_run)",
        "job 'tp-invoice': the payload does not match InvoicePayload: field 'invoice_id' is "
        "invalid: Input should be a valid integer",
        "job 'tp-mail': the payload does not match MailPayload: MailPayload(...) raised "
        "ValueError: the subject is blank",
    ]
    # No traceback from deep in a job: the job was never called (it logs as it starts).
    assert all(traceback is None for *_, traceback, _ in runs)
    assert not any("sending mail" in (logs or "") for *_, logs in runs)
    assert worker.stop() == 0, worker.log()


# -- the run's context ----------------------------------------------------------------------------


def _claimed(job: str, payload: dict[str, Any] | None) -> ClaimedRun:
    now = datetime.now(UTC)
    return ClaimedRun(1, job, "enqueue", now, 1, 1, payload, None, now)


def test_an_untyped_job_gets_the_stored_object_itself_and_a_typed_one_its_type() -> None:
    registry = Registry.build([TypedExtension()])
    payload = {"any": "thing"}
    execution = RunExecution(
        registry.get("tp-plain"),
        _claimed("tp-plain", payload),
        worker_id="w",
        pool=None,
        executor=None,
    )
    assert execution.context.payload is payload
    assert execution.payload_error is None
    typed = RunExecution(
        registry.get("tp-mail"),
        _claimed("tp-mail", MAIL_JSON),
        worker_id="w",
        pool=None,
        executor=None,
    )
    assert typed.context.payload == MAIL


# -- conversions ----------------------------------------------------------------------------------


class Shape(TypedDict):
    kind: Literal["circle", "square"]
    size: float


@dataclass
class Everything:
    when: date
    id: UUID
    pair: tuple[int, str]
    shapes: dict[str, Shape]
    tags: set[str]
    parent: Everything | None = None
    note: str | int | None = None


def test_values_round_trip_between_json_and_their_types() -> None:
    value = Everything(
        date(2030, 1, 2),
        UUID("12345678-1234-5678-1234-567812345678"),
        (1, "a"),
        {"s": {"kind": "square", "size": 2.0}},
        {"x"},
        Everything(date(2030, 1, 1), UUID(int=0), (2, "b"), {}, set(), note=3),
    )
    stored = dump_payload("x-all", Everything, value)
    assert stored["when"] == "2030-01-02"
    assert stored["pair"] == [1, "a"]
    assert stored["parent"]["id"] == "00000000-0000-0000-0000-000000000000"
    assert load_payload("x-all", Everything, stored) == value
    # A float field takes an int, as JSON does not tell them apart.
    circle = {**stored, "shapes": {"s": {"kind": "circle", "size": 1}}}
    assert load_payload("x-all", Everything, circle).shapes["s"]["size"] == 1.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pair": [1]}, "field 'pair' must have 2 items, has 1"),
        ({"shapes": {"s": {"kind": "hexagon", "size": 1}}}, "field 'shapes.s.kind' must be one of"),
        ({"parent": {"when": "x"}}, "field 'parent.when' must be date (ISO 8601 text in JSON)"),
        ({"note": 1.5}, "field 'note' must be str | int | None, got float 1.5"),
        ({"tags": "abc"}, "field 'tags' must be an array, got str 'abc'"),
        ({"id": "not-a-uuid"}, "field 'id' must be UUID"),
        ({"x" * 500: 1}, "field 'xxxxxxxxx"),
    ],
)
def test_a_mismatch_names_the_field_and_what_it_must_be(
    change: dict[str, Any], message: str
) -> None:
    stored = {
        "when": "2030-01-02",
        "id": str(UUID(int=1)),
        "pair": [1, "a"],
        "shapes": {},
        "tags": [],
    }
    with pytest.raises(PayloadError) as info:
        load_payload("x-all", Everything, {**stored, **change})
    assert message in str(info.value)
    assert len(str(info.value)) < 400


def test_pydantic_is_imported_only_by_a_model_of_the_applications_own() -> None:
    code = textwrap.dedent(
        """\
        import sys
        from dataclasses import dataclass

        import pgjobs.execution
        import pgjobs.worker
        from pgjobs.payloads import dump_payload, load_payload

        @dataclass
        class Mail:
            to: str

        assert load_payload("x-mail", Mail, dump_payload("x-mail", Mail, Mail("a"))) == Mail("a")
        assert "pydantic" not in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


# -- mypy -----------------------------------------------------------------------------------------

SAMPLE = ROOT / "tests" / "typecheck" / "typed_jobs.py"


def test_mypy_sees_the_payload_type() -> None:
    """mypy reports exactly the errors and notes the sample's comments expect."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--hide-error-codes", str(SAMPLE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode in (0, 1), result.stderr
    got = {}
    for line in result.stdout.splitlines():
        found = re.match(r".*typed_jobs\.py:(\d+): (error|note): (.*)$", line)
        assert found, line
        got[int(found[1])] = (found[2], found[3])
    expected = {}
    for number, line in enumerate(SAMPLE.read_text().splitlines(), start=1):
        marker = re.search(r"  # (error|note): (.*)$", line)
        if marker:
            expected[number] = (marker[1], marker[2])
    assert sorted(got) == sorted(expected), result.stdout
    for number, (kind, text) in expected.items():
        assert got[number][0] == kind and text in got[number][1], (number, got[number])
