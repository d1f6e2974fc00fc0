"""pgjobs behind PgBouncer in transaction pooling: Debian's 1.18, which cannot carry a prepared
statement from one transaction to the next. Real workers, every command, the dashboard and the
exporter go through it; what happened is checked with SQL on a direct connection.

One PgBouncer serves the whole module. Each test's database starts with three server sessions
that PgBouncer takes in turn (``server_round_robin``), so a client's next transaction lands in
another session, as it does on a busy production pooler.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
from psycopg import errors

from pgjobs import enqueue, enqueue_many, enqueue_many_sync, enqueue_sync
from pgjobs.db import PREPARE_THRESHOLD_ENV, connect, parse_prepare_threshold
from pgjobs.errors import ConfigError
from pgjobs.worker import WorkerSettings
from tests.cli import APP, add_job, add_run, add_worker, invoke
from tests.pgbouncer import PgBouncer, available, pgbouncer
from tests.test_dashboard import TOKEN, seed
from tests.test_metrics import scrape
from tests.test_roles import new_roles
from tests.workers import (
    ROOT,
    Workers,
    assert_each_tick_once,
    rows,
    scalar,
    wait_until,
    worker_pool,
)

OFF = {PREPARE_THRESHOLD_ENV: "off"}
"""The environment of every pgjobs process behind the pooler."""

REPEAT = 8
"""Runs of one statement on one connection: more than psycopg's default prepare threshold (5)."""


@pytest.fixture(scope="module")
def bouncer(pg_admin_dsn: str) -> Iterator[PgBouncer]:
    reason = available()
    if reason is not None:
        pytest.skip(reason)
    with pgbouncer(pg_admin_dsn) as started:
        yield started


@pytest.fixture
def pooled(dsn: str, bouncer: PgBouncer) -> str:
    """The test's database through PgBouncer, which takes turns between its server sessions."""
    return bouncer.warm(dsn)


@pytest.fixture
def workers(pooled: str, tmp_path: Path) -> Iterator[Workers]:
    """Workers whose ``--dsn`` is the pooler."""
    with worker_pool(pooled, tmp_path) as pool:
        yield pool


# -- the knob -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"), [("off", None), ("None", None), (" OFF ", None), ("0", 0), ("12", 12)]
)
def test_a_prepare_threshold_is_a_whole_number_or_off(text: str, value: int | None) -> None:
    assert parse_prepare_threshold(text) == value


@pytest.mark.parametrize("text", ["-1", "1.5", "five", "²", "false", "1e3"])
def test_anything_else_is_one_clear_line(text: str) -> None:
    with pytest.raises(ConfigError, match=f"^invalid PGJOBS_PREPARE_THRESHOLD {text!r}: use a"):
        parse_prepare_threshold(text)


def test_a_worker_that_does_not_listen_on_its_dsn_prepares_nothing_unless_told() -> None:
    assert WorkerSettings().prepare_after == 5 and not WorkerSettings().pooled
    assert WorkerSettings(listen=False).prepare_after is None
    assert WorkerSettings(listen_dsn="host=db").prepare_after is None
    assert WorkerSettings(listen=False, prepare_threshold=5).prepare_after == 5
    assert WorkerSettings(prepare_threshold=None).prepare_after is None


def test_bad_settings_are_one_line_and_exit_2(dsn: str) -> None:
    cases = [
        (
            ("worker", "--app", APP, "--prepare-threshold", "-1"),
            {},
            "error: invalid --prepare-threshold/PGJOBS_PREPARE_THRESHOLD '-1': use a whole number",
        ),
        (
            ("worker", "--app", APP, "--no-listen", "--listen-dsn", dsn),
            {},
            "error: --listen-dsn and --no-listen contradict each other: choose one",
        ),
        (
            ("worker", "--app", APP, "--listen-dsn", "host=db password=hunter2 port"),
            {},
            "error: invalid DSN: ",
        ),
        (("jobs", "status"), {PREPARE_THRESHOLD_ENV: "sometimes"}, "error: invalid PGJOBS_PRE"),
        (("metrics", "--port", "0"), {PREPARE_THRESHOLD_ENV: "-5"}, "error: invalid PGJOBS_PRE"),
    ]
    for args, env, says in cases:
        result = invoke(dsn, *args, env=env)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
        assert result.stderr.startswith(says) and "hunter2" not in result.stderr, result.stderr


# -- the failure mode ---------------------------------------------------------------------------


def statements_across_sessions(
    conns: list[psycopg.Connection[Any]], rounds: int = REPEAT * 2
) -> list[set[int]]:
    """Each connection runs the same statement ``rounds`` times or more while, in turn, one of
    them holds a transaction open (and runs it once more after), so that their statements move
    between server sessions whichever idle session PgBouncer picks first. Returns the server
    sessions (backend pids) each connection's statements ran in."""
    seen: list[set[int]] = [set() for _ in conns]

    def run(i: int, turn: int) -> None:
        row = conns[i].execute("SELECT pg_backend_pid(), %s::int", [turn]).fetchone()
        assert row is not None
        seen[i].add(row[0])

    for turn in range(rounds):
        holder = turn % len(conns)
        with conns[holder].transaction():
            for i in [holder, *(i for i in range(len(conns)) if i != holder)]:
                run(i, turn)
        run(holder, turn)
    return seen


def test_prepared_statements_fail_across_pooled_sessions(pooled: str) -> None:
    """What operators met: psycopg's default prepares a statement after 5 runs, in a session
    that is another client's by the next transaction."""
    conns = [connect(pooled) for _ in range(3)]
    try:
        with pytest.raises((errors.DuplicatePreparedStatement, errors.InvalidSqlStatementName)):
            statements_across_sessions(conns)
    finally:
        for conn in conns:
            conn.close()


def test_with_prepared_statements_off_statements_repeat_across_pooled_sessions(
    pooled: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PREPARE_THRESHOLD_ENV, "off")
    conns = [connect(pooled) for _ in range(3)]
    try:
        seen = statements_across_sessions(conns)
    finally:
        for conn in conns:
            conn.close()
    assert all(len(sessions) >= 2 for sessions in seen), seen


# -- workers ------------------------------------------------------------------------------------


def test_workers_tick_once_and_drain_5000_runs_through_pgbouncer(
    dsn: str, pooled: str, bouncer: PgBouncer, workers: Workers
) -> None:
    """Four workers behind the pooler, two polling (``--no-listen``) and two listening on a
    direct connection (``--listen-dsn``), none told about prepared statements: an every-second
    job ticks once a second, each tick once, while they drain 5,000 enqueued runs and jobs use
    their pools. Nothing they did is left in a server session other clients get."""
    jobs = ["t-tick", "t-echo", "t-async-db", "t-sync-db"]
    polling = ("--no-listen", "--poll-interval", "0.5")
    listening = ("--listen-dsn", dsn)
    procs = [workers.start(jobs, *(polling if n < 2 else listening)) for n in range(4)]
    workers.wait_registered(*procs)
    start = scalar(dsn, "SELECT now()")
    with psycopg.connect(pooled, prepare_threshold=None) as app:
        enqueue_many_sync(app, [{"job": "t-echo", "payload": {"n": n}} for n in range(5000)])
        for _ in range(REPEAT * 2):
            enqueue_sync(app, "t-async-db")
            enqueue_sync(app, "t-sync-db")

    def done() -> bool:
        ticks, drained = rows(
            dsn,
            "SELECT count(*) FILTER (WHERE job = 't-tick' AND scheduled_for > %s),"
            " count(*) FILTER (WHERE job <> 't-tick') FROM pgjobs.runs WHERE status = 'succeeded'",
            start,
        )[0]
        return ticks >= 32 and drained == 5000 + REPEAT * 4

    wait_until(done, 90, "32 ticks and the drain", interval=0.5)
    for proc in procs:
        proc.signal(signal.SIGTERM)  # all at once: they stop side by side
    for proc in procs:
        assert proc.wait(20) == 0, proc.log()

    assert_each_tick_once(dsn, "t-tick", at_least=30)
    assert rows(
        dsn,
        # The 5,000 runs spread over the workers; the pool-using few may all go to one.
        "SELECT job, status, attempt, count(*),"
        " count(DISTINCT worker_id) >= CASE job WHEN 't-echo' THEN 2 ELSE 1 END,"
        " bool_and(coalesce((data->>'value')::int, 42) = 42) FROM pgjobs.runs"
        " WHERE job <> 't-tick' GROUP BY 1, 2, 3 ORDER BY 1",
    ) == [
        ("t-async-db", "succeeded", 1, REPEAT * 2, True, True),
        ("t-echo", "succeeded", 1, 5000, True, True),
        ("t-sync-db", "succeeded", 1, REPEAT * 2, True, True),
    ]
    assert scalar(dsn, "SELECT count(DISTINCT payload->>'n') FROM pgjobs.runs") == 5000
    logs = workers.logs()
    assert not re.search(r'prepared statement "|database error|refused', logs), logs
    # Every server session of the pool, each held by a client at once: none kept a setting.
    sessions = sum(pool["sv_idle"] + pool["sv_used"] for pool in pool_of(bouncer, dsn))
    held = [psycopg.connect(pooled, prepare_threshold=None) for _ in range(sessions)]
    try:
        settings = set()
        for conn in held:
            conn.execute("SELECT 1")  # opens a transaction: the session stays with this client
            settings.add(conn.execute("SHOW plan_cache_mode").fetchone()[0])
    finally:
        for conn in held:
            conn.close()
    assert settings == {"auto"}


def pool_of(bouncer: PgBouncer, dsn: str) -> list[dict[str, Any]]:
    """PgBouncer's pools of the database of ``dsn``."""
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    return [pool for pool in bouncer.show("POOLS") if pool["database"] == name]


def test_a_worker_listening_on_a_direct_connection_wakes_at_once(
    dsn: str, pooled: str, bouncer: PgBouncer, workers: Workers
) -> None:
    """``--listen-dsn``: statements through the pooler, NOTIFYs on a direct session, so an
    enqueued run starts at once although the worker polls only every 30 s."""
    worker = workers.start(["t-echo"], "--listen-dsn", dsn, "--poll-interval", "30")
    workers.wait_registered(worker)
    listening = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
    wait_until(lambda: scalar(dsn, listening, "pgjobs-listen w1"), 10, "the LISTEN session")
    clients = {c["application_name"] for c in bouncer.show("CLIENTS")}
    assert "pgjobs-worker w1" in clients and "pgjobs-listen w1" not in clients
    time.sleep(1)  # the worker is asleep until its next poll, 30 s away

    async def enqueue_one() -> tuple[int, float]:
        async with await psycopg.AsyncConnection.connect(
            pooled, autocommit=True, prepare_threshold=None
        ) as app:
            return await enqueue(app, "t-echo", {"hello": "pooler"}), time.monotonic()

    run_id, enqueued = asyncio.run(enqueue_one())
    wait_until(
        lambda: scalar(dsn, "SELECT status FROM pgjobs.runs WHERE id = %s", run_id) == "succeeded",
        10,
        "the run",
    )
    assert time.monotonic() - enqueued < 5
    assert worker.stop() == 0, worker.log()
    said = "--dsn taken for a transaction pooler (--listen-dsn): prepared statements off"
    assert said in worker.log()


# -- enqueue from application code --------------------------------------------------------------


def test_enqueue_through_pgbouncer_sync_and_async(
    conn: psycopg.Connection[Any], dsn: str, pooled: str
) -> None:
    """An application's own connections behind the pooler, with ``prepare_threshold=None`` as
    psycopg documents for PgBouncer: in its transactions and in autocommit, sync and async."""
    add_job(conn, "t-echo")
    with psycopg.connect(pooled, prepare_threshold=None) as app:
        for n in range(REPEAT):
            enqueue_sync(app, "t-echo", {"via": "sync"}, dedup_key=f"s{n}")
        app.commit()
        app.autocommit = True
        for _ in range(REPEAT):
            enqueue_many_sync(app, [{"job": "t-echo", "payload": {"via": "sync many"}}] * 3)

    async def from_async() -> None:
        async with await psycopg.AsyncConnection.connect(pooled, prepare_threshold=None) as app:
            for _ in range(REPEAT):
                await enqueue(app, "t-echo", {"via": "async"})
            await app.commit()
            await app.set_autocommit(True)
            for _ in range(REPEAT):
                await enqueue_many(app, [{"job": "t-echo", "payload": {"via": "async many"}}] * 3)

    asyncio.run(from_async())
    assert rows(dsn, "SELECT payload->>'via', count(*) FROM pgjobs.runs GROUP BY 1 ORDER BY 1") == [
        ("async", REPEAT),
        ("async many", REPEAT * 3),
        ("sync", REPEAT),
        ("sync many", REPEAT * 3),
    ]


# -- every command ------------------------------------------------------------------------------


def test_every_command_works_through_pgbouncer(conn: psycopg.Connection[Any], pooled: str) -> None:
    """Each command with a valid argument, through the pooler (``PGJOBS_PREPARE_THRESHOLD=off``):
    exit 0, and what it wrote is in the database. (``worker``, ``dashboard`` and ``metrics``
    have tests of their own below; ``demo`` runs its own workers on its own database.)"""
    for job in ("t-echo", "t-async-db"):
        add_job(conn, job)
    add_job(conn, "t-tick", schedule="* * * * * *", next_fire_at=None)
    add_worker(conn, "w-pooled", ["t-echo", "t-tick"])
    failed = add_run(conn, "t-echo", status="failed", finished_at="2026-01-01T00:00:00Z")
    queued = add_run(conn, "t-echo")
    old = add_run(conn, "t-echo", status="succeeded", created_at="2020-01-01T00:00:00Z")
    add_run(conn, "t-echo", status="succeeded")  # the job's latest, never pruned

    def value(query: str, *params: Any) -> Any:
        row = conn.execute(query, params or None).fetchone()
        return None if row is None else row[0]

    def paused(table: str, name: str) -> Any:
        return value(f"SELECT paused FROM pgjobs.{table} WHERE name = %s", name)

    with new_roles(conn.info.dsn) as roles:
        writes: list[tuple[tuple[str, ...], Callable[[], object]]] = [
            (("jobs", "pause", "t-echo"), lambda: paused("jobs", "t-echo") is True),
            (("jobs", "resume", "t-echo"), lambda: paused("jobs", "t-echo") is False),
            (("queues", "pause", "default"), lambda: paused("queues", "default") is True),
            (("queues", "resume", "default"), lambda: paused("queues", "default") is False),
            (
                ("schedules", "add", "t-echo", "0 0 3 * * *", "--name", "nightly"),
                lambda: value("SELECT cron FROM pgjobs.schedules WHERE name = 'nightly'"),
            ),
            (
                ("schedules", "pause", "t-echo", "nightly"),
                lambda: value("SELECT paused FROM pgjobs.schedules WHERE name = 'nightly'"),
            ),
            (
                ("schedules", "resume", "t-echo", "nightly"),
                lambda: not value("SELECT paused FROM pgjobs.schedules WHERE name = 'nightly'"),
            ),
            (
                ("runs", "cancel", str(queued)),
                lambda: (
                    value("SELECT status FROM pgjobs.runs WHERE id = %s", queued) == "cancelled"
                ),
            ),
            (
                ("runs", "retry", str(failed)),
                lambda: value("SELECT count(*) FROM pgjobs.runs WHERE retry_of = %s", failed) == 1,
            ),
            (
                ("runs", "prune", "--older-than", "30d"),
                lambda: value("SELECT count(*) FROM pgjobs.runs WHERE id = %s", old) == 0,
            ),
            (
                ("jobs", "run", "t-echo", "--app", APP, "-p", "where=pooler"),
                lambda: (
                    value("SELECT status FROM pgjobs.runs WHERE parameters->>'where' = 'pooler'")
                    == "succeeded"
                ),
            ),
            (
                ("jobs", "run", "t-async-db", "--app", APP),
                lambda: (
                    value(
                        "SELECT data->>'value' FROM pgjobs.runs WHERE job = 't-async-db'"
                        " AND trigger = 'manual' AND status = 'succeeded'"
                    )
                    == "42"
                ),
            ),
            (
                ("jobs", "run", "t-echo", "--queue-it", "--payload", '{"queued": true}'),
                lambda: (
                    value("SELECT status FROM pgjobs.runs WHERE payload ? 'queued'") == "queued"
                ),
            ),
            (
                ("db", "grant", "--role", roles.names["reader"], "--as", "reader"),
                lambda: roles.has("reader", "SELECT"),
            ),
            (("db", "upgrade"), lambda: True),
        ]
        reads: list[tuple[str, ...]] = [
            ("check", "--app", APP),
            ("jobs", "list"),
            ("jobs", "show", "t-echo"),
            ("jobs", "status"),
            ("jobs", "history"),
            ("jobs", "next", "t-tick"),
            ("runs", "list"),
            ("runs", "show", str(failed)),
            ("runs", "waits"),
            ("queues", "list"),
            ("schedules", "list"),
            ("schedules", "show", "t-echo", "nightly"),
            ("workers", "list", "--all"),
            ("db", "current"),
            ("db", "grant", "--role", roles.names["worker"], "--as", "worker", "--sql"),
        ]
        for args, effect in writes:
            result = invoke(pooled, *args, jobs="t-echo,t-async-db", env=OFF)
            assert result.exit_code == 0, (args, result.output)
            assert effect(), (args, result.output)
        for args in reads:
            # Twice the prepare threshold: a command that prepared would fail by the 6th time.
            for _ in range(2):
                result = invoke(pooled, *args, jobs="t-echo,t-async-db", env=OFF)
                assert result.exit_code == 0, (args, result.output)
        assert invoke(pooled, "schedules", "rm", "t-echo", "nightly", env=OFF).exit_code == 0
        assert value("SELECT count(*) FROM pgjobs.schedules WHERE name = 'nightly'") == 0
    # Following a queued run polls it on one connection, far more than 5 times; no worker here
    # runs it, so the wait ends at its timeout, as `timeout(1)` does.
    args = ("jobs", "run", "t-echo", "--queue-it", "--wait", "--timeout", "1.5", "-p", "w=1")
    followed = invoke(pooled, *args, env=OFF)
    assert followed.exit_code == 124, followed.output
    assert value("SELECT status FROM pgjobs.runs WHERE parameters->>'w' = '1'") == "queued"


def test_migrations_run_through_pgbouncer(empty_dsn: str, bouncer: PgBouncer) -> None:
    pooled = bouncer.warm(empty_dsn)
    assert invoke(pooled, "db", "upgrade", env=OFF).exit_code == 0
    assert scalar(empty_dsn, "SELECT to_regclass('pgjobs.runs') IS NOT NULL")
    result = invoke(pooled, "db", "downgrade", "base", env=OFF)
    assert result.exit_code == 0, result.output
    assert scalar(empty_dsn, "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgjobs'") == 0


# -- the dashboard and the exporter -------------------------------------------------------------


@contextmanager
def serving(*commands: tuple[str, ...]) -> Iterator[list[int]]:
    """``python -m pgjobs COMMAND --port 0`` for each command (servers, started together) with
    prepared statements off; the port each serves on, stopped when the block ends."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pgjobs", *command, "--port", "0"],
            cwd=ROOT,
            env={**_environ(), **OFF},
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    try:
        ports = []
        for proc in procs:
            assert proc.stderr is not None
            line = proc.stderr.readline()
            match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            assert match, f"no address in {line!r}"
            ports.append(int(match[1]))
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def _environ() -> dict[str, str]:
    """This process's environment without pgjobs' variables, plus the tests on the path."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("PGJOBS_")}
    return {**kept, "PYTHONPATH": str(ROOT)}


def request(port: int, path: str, form: dict[str, str] | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = urlencode(form) if form is not None else None
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if form is not None else {}
    conn.request("POST" if form is not None else "GET", path, body, headers)
    response = conn.getresponse()
    reply = response.status, response.read().decode()
    conn.close()
    return reply


def test_the_dashboard_and_pgjobs_metrics_serve_through_pgbouncer(dsn: str, pooled: str) -> None:
    """Every page, many times over on the connections the dashboard keeps, and every action;
    scrapes of the exporter, each on a connection of its own."""
    seed(dsn)
    failed = scalar(dsn, "SELECT id FROM pgjobs.runs WHERE status = 'failed'")
    running = scalar(dsn, "SELECT id FROM pgjobs.runs WHERE status = 'running'")
    dashboard = ("dashboard", "--dsn", pooled, "--allow-actions", "--token", TOKEN)
    exporter = ("metrics", "--dsn", pooled, "--host", "127.0.0.1")
    with serving(dashboard, exporter) as (port, metrics_port):
        pages = ["/", "/timeline", "/runs", "/workers", "/queues", "/job?name=obs-report"]
        for path in [*pages, f"/runs/{failed}"] * REPEAT:
            status, text = request(port, path)
            assert status == 200 and "pgjobs" in text, (path, status)
        for _ in range(REPEAT):
            samples = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
            assert samples[("pgjobs_up", ())] == 1
            assert samples[("pgjobs_queue_depth", (("queue", "reports"),))] == 1
        actions = [
            ("pause", {"job": "obs-report"}),
            ("resume", {"job": "obs-report"}),
            ("pause-queue", {"queue": "reports"}),
            ("resume-queue", {"queue": "reports"}),
            ("run-now", {"job": "obs-cleanup"}),
            ("retry", {"run": str(failed)}),
            ("cancel", {"run": str(running)}),
        ]
        for name, form in actions:
            status, text = request(port, f"/actions/{name}", {**form, "token": TOKEN})
            assert status == 303, (name, status, text)
    assert rows(
        dsn,
        "SELECT (SELECT paused FROM pgjobs.jobs WHERE name = 'obs-report'),"
        " (SELECT paused FROM pgjobs.queues WHERE name = 'reports'),"
        " (SELECT count(*) FROM pgjobs.runs WHERE job = 'obs-cleanup' AND trigger = 'manual'"
        "  AND status = 'queued'),"
        " (SELECT count(*) FROM pgjobs.runs WHERE retry_of = %s),"
        " (SELECT cancel_requested_at IS NOT NULL FROM pgjobs.runs WHERE id = %s)",
        failed,
        running,
    ) == [(False, False, 1, 1, True)]
