"""``pgjobs runs`` and ``pgjobs workers``: listing and showing runs, cancelling queued and running
runs (through a real worker), retrying, pruning, and the workers that are alive."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.cli import add_job, add_run, add_worker, invoke, parse_json, run_rows
from tests.workers import Workers, scalar, wait_until, worker_pool

Conn = psycopg.Connection[Any]


@pytest.fixture
def workers(dsn: str, tmp_path: Path) -> Iterator[Workers]:
    with worker_pool(dsn, tmp_path) as pool:
        yield pool


def status_of(dsn: str, run_id: int) -> str:
    return str(scalar(dsn, "SELECT status FROM pgjobs.runs WHERE id = %s", run_id))


def test_runs_list_filters_by_job_status_and_age(conn: Conn, dsn: str) -> None:
    add_job(conn, "t-a")
    add_job(conn, "t-b")
    old = add_run(conn, "t-a", status="succeeded", duration_seconds=0.25)
    conn.execute(
        "UPDATE pgjobs.runs SET created_at = now() - interval '2 hours',"
        " scheduled_for = now() - interval '2 hours' WHERE id = %s",
        [old],
    )
    failed = add_run(conn, "t-a", status="failed", message="it broke", error_message="boom")
    queued = add_run(conn, "t-b", payload={"x": 1})

    listed = parse_json(invoke(dsn, "runs", "list", "--json"))
    assert [r["id"] for r in listed] == [queued, failed, old]
    assert listed[2]["duration_seconds"] == 0.25
    assert listed[0]["payload"] == {"x": 1} and listed[0]["status"] == "queued"

    def ids(*args: str) -> list[int]:
        return [r["id"] for r in parse_json(invoke(dsn, "runs", "list", "--json", *args))]

    assert ids("--job", "t-a") == [failed, old]
    assert ids("--status", "failed") == [failed]
    assert ids("--since", "1h") == [queued, failed]
    assert ids("--since", "3h", "-n", "1") == [queued]

    table = invoke(dsn, "runs", "list", "--job", "t-a")
    assert table.exit_code == 0, table.output
    first = table.stdout.splitlines()[1]
    assert first.split()[:4] == [str(failed), "t-a", "enqueue", "failed"] and "boom" in first
    assert "2h ago" in table.stdout.splitlines()[2] and "250ms" in table.stdout


def test_runs_show_prints_everything_stored_about_a_run(conn: Conn, dsn: str) -> None:
    add_worker(conn, "w1", ["t-a"])
    run_id = add_run(
        conn,
        "t-a",
        status="failed",
        worker_id="w1",
        payload={"n": 1},
        parameters={"k": "v"},
        error_type="RuntimeError",
        error_message="boom",
        error_traceback="Traceback (most recent call last):\n  ...\nRuntimeError: boom\n",
        items_processed=7,
        items_failed=1,
        logs="17:28:13.762 INFO fetching page 3\n17:28:13.900 ERROR giving up",
    )
    table = invoke(dsn, "runs", "show", str(run_id))
    assert table.exit_code == 0, table.output
    for expected in (
        "status         failed",
        "worker         w1 (host host-a, pid 4242)",
        'payload        {"n": 1}',
        "items          7 processed, 1 failed",
        "error          RuntimeError: boom",
        "RuntimeError: boom",
        "logs (the run's last lines):\n17:28:13.762 INFO fetching page 3",
    ):
        assert expected in table.stdout, table.stdout

    shown = parse_json(invoke(dsn, "runs", "show", str(run_id), "--json"))
    assert shown["id"] == run_id and shown["host"] == "host-a"
    assert shown["parameters"] == {"k": "v"} and shown["retried_by"] == []
    assert shown["error_traceback"].endswith("RuntimeError: boom\n")
    assert shown["logs"].endswith("ERROR giving up")

    missing = invoke(dsn, "runs", "show", "999")
    assert missing.exit_code == 1 and missing.stderr.strip() == "error: no run with id 999"


def test_runs_cancel_takes_a_queued_run_out_of_the_queue(conn: Conn, dsn: str) -> None:
    run_id = add_run(conn, "t-a")
    result = invoke(dsn, "runs", "cancel", str(run_id))
    assert result.exit_code == 0, result.output
    assert "cancelled before it started" in result.stdout
    [run] = run_rows(conn)
    assert run["status"] == "cancelled" and run["finished_at"] is not None

    again = invoke(dsn, "runs", "cancel", str(run_id))
    assert again.exit_code == 1
    assert "already finished (cancelled)" in again.stderr


def test_runs_cancel_of_a_running_run_is_carried_out_by_its_worker(
    conn: Conn, dsn: str, workers: Workers
) -> None:
    # A short lease makes the worker heartbeat (and see the request) every ~0.3 s.
    workers.wait_registered(workers.start(["t-sleep"], "--lease", "1"))
    run_id = add_run(conn, "t-sleep", payload={"seconds": 30})
    wait_until(lambda: status_of(dsn, run_id) == "running", 10, "the run to start")

    result = invoke(dsn, "runs", "cancel", str(run_id))
    assert result.exit_code == 0, result.output
    assert "worker w1 stops the job at its next heartbeat" in result.stdout
    wait_until(lambda: status_of(dsn, run_id) == "cancelled", 5, "the worker to cancel the run")
    [run] = run_rows(conn)
    assert run["cancel_requested_at"] is not None
    assert run["message"] == "cancelled by operator"
    assert run["duration_seconds"] < 10


def test_runs_retry_queues_a_new_attempt_of_the_same_work(conn: Conn, dsn: str) -> None:
    failed = add_run(
        conn,
        "t-a",
        status="failed",
        payload={"n": 1},
        parameters={"k": "v"},
        priority=3,
        queue="reports",
    )
    trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    conn.execute(
        "UPDATE pgjobs.runs SET concurrency_key = 'tenant-7', trace_context = %s WHERE id = %s",
        [Jsonb(trace), failed],
    )
    result = invoke(dsn, "runs", "retry", str(failed))
    assert result.exit_code == 0, result.output
    original, retry = run_rows(conn)
    assert f"queued again as run {retry['id']} (attempt 2)" in result.stdout
    assert (retry["trigger"], retry["status"], retry["attempt"], retry["retry_of"]) == (
        "retry",
        "queued",
        2,
        failed,
    )
    # The same work: a keyed job's limit counts the retry by the same key; it joins the trace.
    for key in (
        "job",
        "payload",
        "parameters",
        "priority",
        "queue",
        "concurrency_key",
        "trace_context",
    ):
        assert retry[key] == original[key]
    assert original["status"] == "failed"

    twice = invoke(dsn, "runs", "retry", str(failed))
    assert twice.exit_code == 1
    assert f"already retried as run {retry['id']}" in twice.stderr

    succeeded = add_run(conn, "t-a", status="succeeded")
    refused = invoke(dsn, "runs", "retry", str(succeeded))
    assert refused.exit_code == 1
    assert f"run {succeeded} is succeeded: only failed" in refused.stderr
    assert len(run_rows(conn)) == 3


def test_runs_prune_deletes_old_finished_runs(conn: Conn, dsn: str) -> None:
    ids = [add_run(conn, "t-a", status="succeeded") for _ in range(3)]
    conn.execute("UPDATE pgjobs.runs SET created_at = now() - interval '40 days'")
    dry = invoke(dsn, "runs", "prune", "--older-than", "30d", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.startswith("would delete ") and "older than 30d" in dry.stdout
    assert len(run_rows(conn)) == 3

    done = invoke(dsn, "runs", "prune", "--older-than", "30d")
    assert done.exit_code == 0, done.output
    assert [r["id"] for r in run_rows(conn)] == ids[-1:]  # each job's latest run stays


def test_runs_prune_under_a_day_needs_yes(conn: Conn, dsn: str) -> None:
    ids = [add_run(conn, "t-a", status="succeeded") for _ in range(3)]
    conn.execute("UPDATE pgjobs.runs SET created_at = now() - interval '1 hour'")
    for age, shown in (("0d", "0s"), ("0s", "0s"), ("23h", "23h"), ("90m", "90m")):
        refused = invoke(dsn, "runs", "prune", "--older-than", age)
        assert refused.exit_code == 2
        assert refused.stderr.splitlines() == [
            f"error: --older-than {shown} deletes the history of the last day too: "
            "pass --yes to confirm (or --dry-run to count it)"
        ]
    assert len(run_rows(conn)) == 3
    dry = invoke(dsn, "runs", "prune", "--older-than", "0d", "--dry-run")
    assert dry.exit_code == 0 and dry.stdout.startswith("would delete 2 run(s)")
    done = invoke(dsn, "runs", "prune", "--older-than", "0d", "--yes")
    assert done.exit_code == 0, done.output
    assert [r["id"] for r in run_rows(conn)] == ids[-1:]


def test_workers_list_shows_live_workers_and_all_with_all(conn: Conn, dsn: str) -> None:
    add_worker(conn, "w-live", ["t-a"])
    add_worker(conn, "w-dead", ["t-a"], live=False)
    add_run(conn, "t-a", status="running", worker_id="w-live")

    table = invoke(dsn, "workers", "list")
    assert table.exit_code == 0, table.output
    assert [line.split()[:3] for line in table.stdout.splitlines()[1:]] == [
        ["w-live", "running", "host-a"]
    ]
    every = parse_json(invoke(dsn, "workers", "list", "--all", "--json"))
    by_id = {w["id"]: w for w in every}
    assert set(by_id) == {"w-live", "w-dead"}
    assert by_id["w-live"]["live"] is True and by_id["w-live"]["running_now"] == 1
    assert by_id["w-dead"]["state"] == "dead" and by_id["w-dead"]["heartbeat_age_seconds"] > 3500
    assert by_id["w-live"]["queues"] == ["default"]
    json.dumps(every)  # nothing left that is not plain JSON
