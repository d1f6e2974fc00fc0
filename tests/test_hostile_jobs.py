"""One hostile job never takes down a worker: real worker processes run jobs that hand back NULs,
bytes, NaN, 300 MB strings, counts beyond 32 bits, exceptions whose str() raises, SystemExit and
KeyboardInterrupt; each such run ends with a clear error, the runs beside them finish, and the
worker keeps claiming. Checked with SQL."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgjobs.outcomes import CAPS
from tests.workers import Workers, scalar, wait_until, worker_pool

Row = dict[str, Any]
Check = Callable[[Row], object]


@pytest.fixture
def workers(dsn: str, tmp_path: Path) -> Iterator[Workers]:
    with worker_pool(dsn, tmp_path) as pool:
        yield pool


def enqueue(dsn: str, job: str, payload: dict[str, Any]) -> int:
    return int(
        scalar(
            dsn,
            "INSERT INTO pgjobs.runs (job, trigger, payload) VALUES (%s, 'enqueue', %s)"
            " RETURNING id",
            job,
            json.dumps(payload),
        )
    )


def runs(dsn: str, ids: list[int]) -> dict[int, Row]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute("SELECT * FROM pgjobs.runs WHERE id = ANY(%s)", [ids])
        names = [c.name for c in cur.description or []]
        return {row[0]: dict(zip(names, row, strict=True)) for row in cur.fetchall()}


def error(error_type: str, text: str) -> Check:
    return lambda row: row["error_type"] == error_type and text in row["error_message"]


def truncated(column: str, cap: int) -> Check:
    return lambda row: len(row[column].encode()) <= cap and " [truncated " in row[column][-40:]


# kind -> (status, what the row must show); each kind runs in an async job and a sync one.
EXPECTED: dict[str, tuple[str, Check]] = {
    "nul-message": ("failed", lambda row: row["message"] == "read \ufffd from the socket"),
    "nul-success": ("succeeded", lambda row: row["message"] == "read \ufffd from the socket"),
    "nul-data": ("failed", lambda row: row["data"] == {"k\ufffd": "v\ufffd"}),
    "nul-exception": ("failed", error("RuntimeError", "boom \ufffd")),
    "nul-log": ("failed", lambda row: "line with a NUL \ufffd in it" in row["logs"]),
    "bytes-message": ("failed", lambda row: row["message"] == "raw \ufffd bytes"),
    "object-message": ("failed", lambda row: row["message"].startswith("<object object at 0x")),
    "stats-str": ("failed", error("TypeError", "with_stats: processed must be an int, got str")),
    "stats-huge": (
        "failed",
        error("ValueError", "with_stats: processed must be from 0 to 2147483647, got a 100-bit"),
    ),
    "stats-unchecked": ("failed", error("ValueError", "does not fit the 32-bit items_processed")),
    "nan-data": ("failed", error("TypeError", "result data is not JSON-serialisable")),
    "broken-str": ("failed", error("BrokenStr", "BrokenStr('payload')")),
    "broken-traceback": (
        "failed",
        lambda row: row["error_traceback"].startswith("(the traceback could not be formatted"),
    ),
    "hostile-result": ("failed", error("TypeError", "the job's result could not be read")),
    "keyboard-interrupt": ("failed", error("KeyboardInterrupt", "raised by the job")),
    "system-exit": ("failed", error("SystemExit", "raised by the job (the worker carries on): 3")),
    "cancelled-error": ("failed", error("CancelledError", "raised by the job")),
}


def test_hostile_runs_fail_clearly_while_the_worker_runs_the_others(
    dsn: str, workers: Workers
) -> None:
    worker = workers.start(["t-hostile", "t-hostile-sync", "t-echo"])
    workers.wait_registered(worker)

    hostile: dict[int, str] = {}
    normal: list[int] = []
    for kind in EXPECTED:
        for job in ("t-hostile", "t-hostile-sync"):
            hostile[enqueue(dsn, job, {"kind": kind})] = kind
            normal.append(enqueue(dsn, "t-echo", {"beside": kind}))
    huge = enqueue(dsn, "t-hostile", {"kind": "huge"})

    everything = [*hostile, *normal, huge]
    wait_until(
        lambda: all(r["finished_at"] is not None for r in runs(dsn, everything).values()),
        120,
        "every run to finish",
        interval=0.2,
    )
    rows = runs(dsn, everything)
    wrong = []
    for run_id, kind in hostile.items():
        row = rows[run_id]
        status, check = EXPECTED[kind]
        if row["status"] != status or not check(row):
            wrong.append((kind, row["job"], row["status"], row["message"], row["error_message"]))
    assert not wrong, wrong
    assert {rows[i]["status"] for i in normal} == {"succeeded"}

    big = rows[huge]
    assert big["status"] == "failed"
    assert truncated("message", CAPS.message)(big)
    assert big["message"].endswith(f"… [truncated {300_000_000 - CAPS.message + 31} bytes]")
    assert big["data"]["dropped"] is True
    assert big["data"]["bytes"] > 300_000_000

    # Still claiming afterwards, and never restarted.
    after = enqueue(dsn, "t-echo", {"after": True})
    wait_until(
        lambda: runs(dsn, [after])[after]["status"] == "succeeded", 30, "a run after them all"
    )
    assert worker.proc.poll() is None, worker.log()
    assert scalar(dsn, "SELECT state FROM pgjobs.workers WHERE id = %s", worker.id) == "running"
    assert worker.stop() == 0, worker.log()
