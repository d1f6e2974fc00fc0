"""Whatever a job hands back, its outcome is one PostgreSQL accepts: each hostile outcome goes
through pgjobs.outcomes and then the worker's real finish_and_claim_runs statement, and the row
is read back with SQL."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator, Mapping
from typing import Any

import psycopg
import pytest

from pgjobs.job import MAX_COUNT, JobResult
from pgjobs.named_queries import Queries
from pgjobs.outcomes import (
    CAPS,
    Caps,
    exception_outcome,
    failed_outcome,
    result_outcome,
    safe_outcome,
    with_logs,
)
from pgjobs.store import Outcome, WorkerStore
from pgjobs.worker.connection import is_connection_error

Row = dict[str, Any]


def running_run(dsn: str) -> int:
    """A run that worker ``w`` holds, as after its claim."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO pgjobs.runs (job, trigger, status, worker_id, started_at)"
            " VALUES ('j', 'enqueue', 'running', 'w', now()) RETURNING id"
        ).fetchone()
        assert row is not None
        return int(row[0])


def record(dsn: str, outcome: Outcome) -> Row:
    """Record ``outcome`` with the worker's statement, then read the run's row back."""

    async def finish() -> frozenset[int]:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            store = WorkerStore(conn, Queries(), "w")
            batch = await store.finish_and_claim_runs([outcome], queues=[], limit=0, lease=0)
            return batch.finished

    assert outcome.run_id in asyncio.run(finish())
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute("SELECT * FROM pgjobs.runs WHERE id = %s", [outcome.run_id])
        names = [c.name for c in cur.description or []]
        row = cur.fetchone()
        assert row is not None
        return dict(zip(names, row, strict=True))


class Unprintable:
    def __str__(self) -> str:
        raise KeyboardInterrupt

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class ExplodingMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise SystemExit("iterating data")

    def __len__(self) -> int:
        return 1


@pytest.mark.parametrize(
    ("message", "stored"),
    [
        ("a\x00b", "a\ufffdb"),
        ("lone \ud800 surrogate", "lone \ufffd surrogate"),
        ("pair \ud83d\ude00", "pair \U0001f600"),
        (b"bytes\x00\xff", "bytes\ufffd\ufffd"),
        (["a", "\x00"], "['a', '\\x00']"),
        (Unprintable(), "<tests.test_outcomes.Unprintable object at 0x"),
    ],
    ids=["nul", "lone-surrogate", "surrogate-pair", "bytes", "list", "broken-str-and-repr"],
)
def test_a_message_of_any_kind_is_stored_as_clean_text(
    dsn: str, message: object, stored: str
) -> None:
    run = running_run(dsn)
    row = record(dsn, safe_outcome(run, "succeeded", 0.1, message=message))
    assert row["status"] == "succeeded"
    assert row["message"].startswith(stored)


def test_nuls_in_data_keys_values_and_nested_lists_become_replacement_characters(
    dsn: str,
) -> None:
    run = running_run(dsn)
    data = {"k\x00": "v\x00", "n": [1, "\x00", {"deep\ud800": "x"}], "plain": 2.5}
    row = record(dsn, safe_outcome(run, "succeeded", 0.1, data=data))
    assert row["status"] == "succeeded"
    assert row["data"] == {
        "k\ufffd": "v\ufffd",
        "n": [1, "\ufffd", {"deep\ufffd": "x"}],
        "plain": 2.5,
    }


def test_a_backslash_u0000_written_as_text_is_kept_as_text(dsn: str) -> None:
    run = running_run(dsn)
    row = record(dsn, safe_outcome(run, "succeeded", 0.1, data={"t": "\\u0000 and \\ud800"}))
    assert row["data"] == {"t": "\\u0000 and \\ud800"}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"x": math.nan}, "Out of range float values are not JSON compliant"),
        ({"x": math.inf}, "Out of range float values are not JSON compliant"),
        ({"x": object()}, "Object of type object is not JSON serializable"),
        ({("tuple", "key"): 1}, "keys must be str, int, float, bool or None"),
        (ExplodingMapping(), "SystemExit: iterating data"),
        (["not", "a", "mapping"], "result data must be a mapping"),
    ],
    ids=["nan", "infinity", "object", "tuple-key", "exploding-iter", "list"],
)
def test_data_json_cannot_hold_fails_the_run_saying_why(
    dsn: str, data: object, reason: str
) -> None:
    run = running_run(dsn)
    row = record(dsn, safe_outcome(run, "succeeded", 0.1, message="done", data=data))
    assert row["status"] == "failed"
    assert row["message"] == "done"
    assert row["data"] is None
    assert row["error_type"] == "TypeError"
    assert reason in row["error_message"]


def test_data_over_its_cap_is_replaced_by_a_note_of_its_size(dsn: str) -> None:
    run = running_run(dsn)
    big = {"rows": ["é" * 100] * 100}
    size = len(json.dumps(big, ensure_ascii=False).encode())
    row = record(dsn, safe_outcome(run, "succeeded", 0.1, data=big, caps=Caps(data=size - 1)))
    assert row["status"] == "succeeded"
    assert row["data"] == {
        "dropped": True,
        "reason": f"the run's data was {size} bytes of JSON, over the cap of {size - 1} bytes",
        "bytes": size,
        "cap_bytes": size - 1,
    }
    run = running_run(dsn)
    assert record(dsn, safe_outcome(run, "succeeded", 0.1, data=big, caps=Caps(data=size)))[
        "data"
    ] == json.loads(json.dumps(big))


@pytest.mark.parametrize(
    ("processed", "error_type", "reason"),
    [
        ("x", "TypeError", "result processed must be an int, got str"),
        (True, "TypeError", "result processed must be an int, got bool"),
        (1.5, "TypeError", "result processed must be an int, got float"),
        (10**30, "ValueError", "result processed is a 100-bit integer: it does not fit"),
        (2**31, "ValueError", "does not fit the 32-bit items_processed column"),
    ],
)
def test_counts_the_integer_columns_cannot_hold_fail_the_run(
    dsn: str, processed: object, error_type: str, reason: str
) -> None:
    run = running_run(dsn)
    row = record(dsn, safe_outcome(run, "succeeded", 0.1, processed=processed, failed=0))
    assert (row["status"], row["error_type"]) == ("failed", error_type)
    assert reason in row["error_message"]
    assert row["items_processed"] is None


def test_counts_at_the_columns_limits_are_stored(dsn: str) -> None:
    run = running_run(dsn)
    row = record(dsn, safe_outcome(run, "succeeded", 0.1, processed=MAX_COUNT, failed=-(2**31)))
    assert (row["items_processed"], row["items_failed"]) == (MAX_COUNT, -(2**31))


def test_every_text_is_capped_visibly_and_keeps_the_useful_end(dsn: str) -> None:
    caps = Caps(message=100, error_type=50, error_message=100, error_traceback=100, logs=100)
    run = running_run(dsn)
    outcome = safe_outcome(
        run,
        "failed",
        0.1,
        message="m" * 1000,
        error_type="T" * 1000,
        error_message="é" * 1000,
        error_traceback="frame\n" * 200 + "RuntimeError: the end",
        caps=caps,
    )
    row = record(dsn, with_logs(outcome, "line\n" * 200 + "last line", caps=caps))
    for column, cap in [
        ("message", 100),
        ("error_type", 50),
        ("error_message", 100),
        ("error_traceback", 100),
        ("logs", 100),
    ]:
        assert len(row[column].encode()) <= cap, column
        assert "[truncated " in row[column], column
    assert row["message"].endswith("… [truncated 926 bytes]")
    assert row["error_message"].startswith("éééé")
    assert row["error_message"].endswith("… [truncated 1926 bytes]")
    assert row["error_traceback"].endswith("RuntimeError: the end")
    assert row["error_traceback"].startswith("[truncated ")
    assert row["logs"].endswith("last line")


def test_a_300_mb_message_and_traceback_are_stored_as_their_capped_ends(dsn: str) -> None:
    huge = "x" * 300_000_000
    started = time.monotonic()
    run = running_run(dsn)
    outcome = safe_outcome(
        run, "failed", 0.1, message=huge, error_message=huge, error_traceback=huge, logs=huge
    )
    del huge
    assert time.monotonic() - started < 30
    row = record(dsn, outcome)
    assert row["message"].endswith(f"… [truncated {300_000_000 - CAPS.message + 31} bytes]")
    for column, cap in [
        ("message", CAPS.message),
        ("error_message", CAPS.error_message),
        ("error_traceback", CAPS.error_traceback),
        ("logs", CAPS.logs),
    ]:
        assert CAPS.message // 2 < len(row[column].encode()) <= cap, column


def test_an_exception_whose_str_raises_is_recorded_from_its_repr(dsn: str) -> None:
    class Broken(Exception):
        def __str__(self) -> str:
            raise ValueError("str of the exception")

    try:
        raise Broken("payload")
    except Broken as exc:
        outcome = exception_outcome(running_run(dsn), exc, 0.1)
    row = record(dsn, outcome)
    assert row["status"] == "failed"
    assert row["error_type"].endswith("Broken")
    assert row["error_message"] == "Broken('payload')"
    assert "<exception str() failed>" in row["error_traceback"]


def test_an_exception_whose_traceback_cannot_be_formatted_is_still_recorded(dsn: str) -> None:
    class NoNotes(Exception):
        @property
        def __notes__(self) -> list[str]:
            raise RuntimeError("notes exploded")

    row = record(dsn, exception_outcome(running_run(dsn), NoNotes("bad\x00"), 0.1))
    assert (row["status"], row["error_message"]) == ("failed", "bad\ufffd")
    assert row["error_traceback"] == (
        "(the traceback could not be formatted: RuntimeError: notes exploded)"
    )


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3)], ids=["ctrl-c", "exit"])
def test_a_job_asking_its_process_to_stop_is_a_failed_run(dsn: str, exc: BaseException) -> None:
    row = record(dsn, exception_outcome(running_run(dsn), exc, 0.1))
    name = type(exc).__name__
    assert (row["status"], row["error_type"]) == ("failed", name)
    assert row["error_message"].startswith(f"{name} raised by the job (the worker carries on)")


def test_a_job_result_with_hostile_properties_is_a_failed_run(dsn: str) -> None:
    class Hostile(JobResult):
        def __getattribute__(self, name: str) -> Any:
            if name == "data":
                raise SystemExit("data")
            return super().__getattribute__(name)

        def __repr__(self) -> str:
            return "<Hostile>"

    row = record(dsn, result_outcome(running_run(dsn), Hostile(ok=True), 0.1))
    assert row["status"] == "failed"
    assert row["error_message"] == "the job's result could not be read: SystemExit: data"


def test_a_result_that_is_no_job_result_is_a_failed_run_even_if_its_repr_raises(
    dsn: str,
) -> None:
    row = record(dsn, result_outcome(running_run(dsn), Unprintable(), 0.1))
    assert (row["status"], row["error_type"]) == ("failed", "TypeError")
    assert row["message"] == "execute returned Unprintable, not JobResult"
    assert row["error_message"].startswith("execute must return a JobResult, got <")


def test_a_result_without_data_stores_an_empty_object(dsn: str) -> None:
    row = record(dsn, result_outcome(running_run(dsn), JobResult.success("plain"), 0.1))
    assert (row["status"], row["message"], row["data"]) == ("succeeded", "plain", {})


def test_a_succeeded_result_keeps_its_status_once_made_safe(dsn: str) -> None:
    result = JobResult.success("read \x00 from the file").with_data(raw="\x00").with_stats(3, 1)
    row = record(dsn, result_outcome(running_run(dsn), result, 0.1))
    assert (row["status"], row["message"]) == ("succeeded", "read \ufffd from the file")
    assert (row["data"], row["items_processed"], row["items_failed"]) == ({"raw": "\ufffd"}, 3, 1)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("x",), TypeError),
        ((True,), TypeError),
        ((10**30,), ValueError),
        ((-1,), ValueError),
        ((1, 2**31), ValueError),
    ],
)
def test_with_stats_refuses_counts_the_run_cannot_store(
    args: tuple[Any, ...], error: type[Exception]
) -> None:
    with pytest.raises(error, match=r"^with_stats: (processed|failed) must be"):
        JobResult.success().with_stats(*args)


def test_a_rejected_outcome_is_recognised_and_its_last_resort_is_accepted(dsn: str) -> None:
    run = running_run(dsn)
    raw = Outcome(run_id=run, status="succeeded", duration=0.1, message="a\x00b")

    lost: list[bool] = []  # whether the worker would take the refusal for a lost connection

    async def finish(outcome: Outcome) -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            store = WorkerStore(conn, Queries(), "w")
            try:
                await store.finish_and_claim_runs([outcome], queues=[], limit=0, lease=0)
            except psycopg.Error as exc:
                lost.append(is_connection_error(exc, conn))
                raise

    with pytest.raises(psycopg.Error) as rejected:
        asyncio.run(finish(raw))
    assert lost == [False], "a refused outcome belongs to its run, not to the connection"
    assert is_connection_error(psycopg.OperationalError("connection lost"), None)

    reason = f"outcome rejected: {rejected.value}\x00 é"
    row = record(dsn, failed_outcome(run, reason))
    assert (row["status"], row["error_type"]) == ("failed", "OutcomeNotStored")
    assert row["message"].startswith("outcome rejected: ")
    assert row["message"].endswith("\\0 \\xe9")
    assert row["message"].isascii()
