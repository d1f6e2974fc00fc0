"""The enqueue API against a real Postgres: runs join the caller's transaction (psycopg sync and
async, SQLAlchemy connections and sessions), NOTIFY on commit only, dedup keys, bulk enqueue,
refused input, and real workers running what was enqueued."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgjobs
from pgjobs import ConfigError, EnqueueRequest, Job, UnknownJobError
from tests.workers import Workers, add_waiting_worker, rows, scalar, wait_until, worker_pool


@pytest.fixture
def jobs(conn: psycopg.Connection[Any]) -> None:
    """Rows in ``jobs`` as a worker would register them, without starting one."""
    conn.execute(
        "INSERT INTO pgjobs.jobs (name, extension, priority, queue, max_attempts) VALUES "
        "('t-echo', 't', 0, 'default', 1), ('t-report', 't', 5, 'reports', 3)"
    )


@pytest.fixture
def workers(dsn: str, tmp_path: Path) -> Iterator[Workers]:
    with worker_pool(dsn, tmp_path) as pool:
        yield pool


def runs(dsn: str) -> list[tuple[Any, ...]]:
    return rows(
        dsn,
        "SELECT id, job, trigger, status, payload, parameters, priority, queue, max_attempts, "
        "dedup_key FROM pgjobs.runs ORDER BY id",
    )


def run_count(dsn: str) -> int:
    return int(scalar(dsn, "SELECT count(*) FROM pgjobs.runs"))


# -- psycopg ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("jobs")
def test_enqueue_on_an_async_psycopg_connection_takes_the_jobs_defaults(dsn: str) -> None:
    async def scenario() -> int:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            run_id = await pgjobs.enqueue(conn, "t-report", {"day": "2024-05-01"})
            await conn.commit()
            return run_id

    run_id = asyncio.run(scenario())
    assert runs(dsn) == [
        (
            run_id,
            "t-report",
            "enqueue",
            "queued",
            {"day": "2024-05-01"},
            None,
            5,
            "reports",
            3,
            None,
        )
    ]
    lag = scalar(dsn, "SELECT extract(epoch FROM now() - scheduled_for) FROM pgjobs.runs")
    assert 0 <= lag < 5


@pytest.mark.usefixtures("jobs")
def test_enqueue_sync_on_a_psycopg_connection_overrides_priority_queue_and_parameters(
    dsn: str,
) -> None:
    with psycopg.connect(dsn) as conn:
        run_id = pgjobs.enqueue_sync(
            conn, "t-report", priority=-1, queue="urgent", parameters={"region": "eu"}
        )
        conn.commit()
    assert runs(dsn) == [
        (run_id, "t-report", "enqueue", "queued", None, {"region": "eu"}, -1, "urgent", 3, None)
    ]


@pytest.mark.usefixtures("jobs")
def test_a_rolled_back_enqueue_leaves_nothing_and_notifies_no_one(dsn: str) -> None:
    with (
        psycopg.connect(dsn, autocommit=True) as listener,
        psycopg.connect(dsn) as conn,
    ):
        # A worker waits for t-echo: a queued run wakes it, on its channel, once committed.
        channel = add_waiting_worker(dsn, "t-echo")
        listener.execute("LISTEN pgjobs")
        listener.execute(f'LISTEN "{channel}"')
        pgjobs.enqueue_sync(conn, "t-echo", {"n": 1})
        pgjobs.enqueue_many_sync(conn, [{"job": "t-echo"}, {"job": "t-report"}])
        conn.rollback()
        assert list(listener.notifies(timeout=0.5)) == []
        assert run_count(dsn) == 0

        pgjobs.enqueue_sync(conn, "t-echo", {"n": 2})
        assert list(listener.notifies(timeout=0.3)) == [], "NOTIFY before the commit"
        conn.commit()
        received = list(listener.notifies(timeout=5, stop_after=1))
        assert [(n.channel, n.payload) for n in received] == [(channel, "run")]
    assert [r[4] for r in runs(dsn)] == [{"n": 2}]


@pytest.mark.usefixtures("jobs")
def test_enqueue_never_commits_for_the_caller(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        pgjobs.enqueue_sync(conn, "t-echo")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert run_count(dsn) == 0
    # Leaving psycopg's connection block without error commits: the caller's choice.
    assert run_count(dsn) == 1


# -- SQLAlchemy ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("jobs")
def test_enqueue_joins_a_sqlalchemy_connection_transaction(dsn: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(dsn))
    try:
        with engine.connect() as conn:
            conn.execute(text("CREATE TABLE orders (id int)"))
            conn.commit()
            conn.execute(text("INSERT INTO orders VALUES (1)"))
            pgjobs.enqueue_sync(conn, "t-echo", {"order": 1})
            conn.rollback()
            assert run_count(dsn) == 0
            assert scalar(dsn, "SELECT count(*) FROM orders") == 0

            # No statement yet: the enqueue itself begins the SQLAlchemy transaction.
            pgjobs.enqueue_sync(conn, "t-echo", {"order": 2})
            conn.execute(text("INSERT INTO orders VALUES (2)"))
            conn.commit()
    finally:
        engine.dispose()
    assert [r[4] for r in runs(dsn)] == [{"order": 2}]
    assert scalar(dsn, "SELECT count(*) FROM orders") == 1


@pytest.mark.usefixtures("jobs")
def test_enqueue_joins_a_sqlalchemy_session_transaction(dsn: str) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(dsn))
    try:
        with Session(engine) as session:
            pgjobs.enqueue_sync(session, "t-echo", {"step": "rolled back"})
            session.rollback()
            assert run_count(dsn) == 0
            ids = pgjobs.enqueue_many_sync(
                session, [EnqueueRequest("t-echo", {"step": "committed"}), {"job": "t-report"}]
            )
            session.commit()
    finally:
        engine.dispose()
    assert [(r[0], r[4]) for r in runs(dsn)] == [(ids[0], {"step": "committed"}), (ids[1], None)]


@pytest.mark.usefixtures("jobs")
def test_enqueue_joins_a_sqlalchemy_async_connection_and_session(dsn: str) -> None:
    pytest.importorskip("greenlet", reason="SQLAlchemy's asyncio support needs greenlet")
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    async def scenario() -> None:
        engine = create_async_engine(
            "postgresql+psycopg://", async_creator=lambda: psycopg.AsyncConnection.connect(dsn)
        )
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
                await pgjobs.enqueue(conn, "t-echo", {"via": "connection, rolled back"})
                await conn.rollback()
                assert run_count(dsn) == 0
                await pgjobs.enqueue(conn, "t-echo", {"via": "connection"})
                await conn.commit()
            async with AsyncSession(engine) as session:
                await pgjobs.enqueue(session, "t-echo", {"via": "session, rolled back"})
                await session.rollback()
                await pgjobs.enqueue(session, "t-echo", {"via": "session"})
                await session.commit()
        finally:
            await engine.dispose()

    asyncio.run(scenario())
    assert [r[4] for r in runs(dsn)] == [{"via": "connection"}, {"via": "session"}]


def test_a_connection_of_the_wrong_kind_is_refused_with_the_right_function(dsn: str) -> None:
    async def async_conn_to_sync_function() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            with pytest.raises(ConfigError, match=r"is async: use `await pgjobs.enqueue"):
                pgjobs.enqueue_sync(conn, "t-echo")

    asyncio.run(async_conn_to_sync_function())
    with psycopg.connect(dsn) as conn, pytest.raises(ConfigError, match=r"is sync: use"):
        asyncio.run(pgjobs.enqueue(conn, "t-echo"))
    with pytest.raises(ConfigError, match=r"needs a psycopg Connection .* got str"):
        pgjobs.enqueue_sync(dsn, "t-echo")


@pytest.mark.usefixtures("jobs")
def test_an_enqueue_without_a_dedup_key_does_not_read_runs(conn: psycopg.Connection[Any]) -> None:
    # Looking for queued runs holding a dedup_key is skipped when none is asked for: a generic
    # plan made while runs was small would otherwise scan all of runs on every enqueue.
    conn.execute("SET plan_cache_mode = force_generic_plan")
    with conn.transaction():
        for _ in range(8):  # psycopg prepares the statement on its fifth execution
            pgjobs.enqueue_sync(conn, "t-echo")
        pgjobs.enqueue_many_sync(conn, [{"job": "t-echo"}, {"job": "t-report"}])
        reads = conn.execute(
            "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables "
            "WHERE relid = 'pgjobs.runs'::regclass"
        ).fetchone()
    assert reads == (0, 0)
    assert int(conn.execute("SELECT count(*) FROM pgjobs.runs").fetchone()[0]) == 10


def test_the_enqueue_statement_is_short_enough_for_psycopg_to_keep_its_parse() -> None:
    # psycopg parses the placeholders of a statement over 4096 characters again on every
    # execution (psycopg._queries.MAX_CACHED_STATEMENT_LENGTH): a sixth of a single enqueue's
    # time. Its comments belong above the query's name line, not in it.
    from pgjobs.named_queries import Queries

    longest_schema = "s" * 63
    assert len(Queries(longest_schema)["enqueue_runs"]) <= 4096
    assert len(Queries(longest_schema)["enqueue_one"]) <= 4096


# -- dedup keys ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("jobs")
def test_a_dedup_key_enqueued_twice_gives_one_run_until_that_run_starts(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        first = pgjobs.enqueue_sync(conn, "t-echo", {"v": 1}, dedup_key="order-7")
        again = pgjobs.enqueue_sync(conn, "t-echo", {"v": 2}, dedup_key="order-7")
        other_job = pgjobs.enqueue_sync(conn, "t-report", dedup_key="order-7")
        assert again == first
        assert other_job != first
        assert [r[4] for r in runs(dsn) if r[1] == "t-echo"] == [{"v": 1}]

        conn.execute("UPDATE pgjobs.runs SET status = 'running' WHERE id = %s", [first])
        after_start = pgjobs.enqueue_sync(conn, "t-echo", {"v": 3}, dedup_key="order-7")
        assert after_start not in (first, other_job)
        assert pgjobs.enqueue_sync(conn, "t-echo", dedup_key="order-7") == after_start
    assert run_count(dsn) == 3


@pytest.mark.usefixtures("jobs")
def test_enqueue_many_maps_dedup_keys_within_the_batch_and_to_queued_runs(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        existing = pgjobs.enqueue_sync(conn, "t-echo", dedup_key="a")
        ids = pgjobs.enqueue_many_sync(
            conn,
            [
                {"job": "t-echo", "dedup_key": "a"},
                {"job": "t-echo", "dedup_key": "b"},
                {"job": "t-echo"},
                {"job": "t-echo", "dedup_key": "b"},
                {"job": "t-echo"},
            ],
        )
        conn.commit()
    assert ids[0] == existing
    assert ids[1] == ids[3]
    assert len({existing, ids[1], ids[2], ids[4]}) == 4
    assert ids[2] < ids[4]
    assert run_count(dsn) == 4


@pytest.mark.usefixtures("jobs")
def test_a_dedup_key_racing_with_an_open_transaction_gets_that_transactions_run(
    dsn: str,
) -> None:
    with psycopg.connect(dsn) as first, psycopg.connect(dsn) as second:
        first_id = pgjobs.enqueue_sync(first, "t-echo", dedup_key="k")
        with ThreadPoolExecutor(1) as pool:
            racing = pool.submit(pgjobs.enqueue_sync, second, "t-echo", dedup_key="k")
            # The second insert waits on the first transaction's row with the same key.
            wait_until(
                lambda: (
                    scalar(
                        dsn,
                        "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                        second.info.backend_pid,
                    )
                    == "Lock"
                ),
                10,
                "the second enqueue to wait",
            )
            first.commit()
            assert racing.result(timeout=10) == first_id
        second.commit()
    assert run_count(dsn) == 1


# -- bulk ---------------------------------------------------------------------------------------


@pytest.mark.usefixtures("jobs")
def test_enqueue_many_queues_ten_thousand_runs_in_one_call(dsn: str) -> None:
    requests: list[EnqueueRequest | dict[str, Any]] = [
        {"job": "t-echo", "payload": {"i": i}} if i % 2 else EnqueueRequest("t-report", {"i": i})
        for i in range(10_000)
    ]
    with psycopg.connect(dsn) as conn:
        ids = pgjobs.enqueue_many_sync(conn, requests)
        conn.commit()
    assert len(ids) == 10_000
    assert len(set(ids)) == 10_000
    stored = dict(
        rows(dsn, "SELECT id, (payload->>'i')::int FROM pgjobs.runs WHERE trigger = 'enqueue'")
    )
    assert [stored[run_id] for run_id in ids] == list(range(10_000))
    assert rows(dsn, "SELECT job, queue, count(*) FROM pgjobs.runs GROUP BY 1, 2 ORDER BY 1") == [
        ("t-echo", "default", 5_000),
        ("t-report", "reports", 5_000),
    ]


@pytest.mark.usefixtures("jobs")
def test_enqueue_many_stores_each_requests_own_fields_and_none_as_no_value(dsn: str) -> None:
    # The requests travel as one JSON document of columns, a column no request fills left out,
    # run_at in microseconds: each field must land on its own request exactly, and a missing one
    # must be SQL NULL.
    odd_zone = timezone(timedelta(hours=5, minutes=30, seconds=17))
    sub_second_zone = timezone(timedelta(seconds=3, microseconds=5))
    run_at = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=odd_zone)
    requests: list[dict[str, Any]] = [
        {"job": "t-echo", "payload": {"é": "😀", "s": 'a\\u0000 "q"', "n": [1, 2.5, None]}},
        {"job": "t-report", "parameters": {"ключ": "значение"}, "queue": "q'\"x"},
        {"job": "t-echo", "run_at": run_at, "priority": -(2**31)},
        {"job": "t-echo", "payload": {}, "parameters": {}, "dedup_key": "k"},
        {"job": "t-echo", "run_at": datetime(2030, 1, 1, tzinfo=sub_second_zone)},
        # Past 2**53 microseconds since 1970, where a double would round:
        {"job": "t-echo", "run_at": datetime(2400, 2, 29, 23, 59, 59, 999999, tzinfo=odd_zone)},
    ]
    with psycopg.connect(dsn) as conn:
        ids = pgjobs.enqueue_many_sync(conn, requests)
        conn.commit()
    stored = {
        row[0]: row[1:]
        for row in rows(
            dsn,
            "SELECT id, job, payload IS NULL, payload, parameters IS NULL, parameters, priority, "
            "queue, dedup_key, scheduled_for FROM pgjobs.runs",
        )
    }
    got = [stored[run_id][:-1] for run_id in ids]
    assert got == [
        ("t-echo", False, requests[0]["payload"], True, None, 0, "default", None),
        ("t-report", True, None, False, {"ключ": "значение"}, 5, "q'\"x", None),
        ("t-echo", True, None, True, None, -(2**31), "default", None),
        ("t-echo", False, {}, False, {}, 0, "default", "k"),
        ("t-echo", True, None, True, None, 0, "default", None),
        ("t-echo", True, None, True, None, 0, "default", None),
    ]
    assert stored[ids[2]][-1] == run_at
    assert stored[ids[4]][-1] == requests[4]["run_at"]
    assert stored[ids[5]][-1] == requests[5]["run_at"]


@pytest.mark.usefixtures("jobs")
def test_enqueue_many_of_nothing_returns_nothing(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        assert pgjobs.enqueue_many_sync(conn, []) == []


# -- refused input ------------------------------------------------------------------------------


@pytest.mark.usefixtures("jobs")
def test_an_unknown_job_is_refused_with_the_nearest_names_and_nothing_is_queued(
    dsn: str,
) -> None:
    with psycopg.connect(dsn) as conn:
        with pytest.raises(UnknownJobError) as info:
            pgjobs.enqueue_sync(conn, "t-ecoh")
        assert str(info.value) == "unknown job 't-ecoh'; did you mean: t-echo?"
        with pytest.raises(UnknownJobError, match="'t-repotr'; did you mean: t-report"):
            pgjobs.enqueue_many_sync(conn, [{"job": "t-echo"}, {"job": "t-repotr"}])
        # The caller's transaction is intact: it can carry on and commit.
        pgjobs.enqueue_sync(conn, "t-echo")
        conn.commit()
    assert [r[1] for r in runs(dsn)] == ["t-echo"]


def test_with_no_job_registered_the_error_says_when_a_job_becomes_known(dsn: str) -> None:
    with psycopg.connect(dsn) as conn, pytest.raises(UnknownJobError) as info:
        pgjobs.enqueue_sync(conn, "app-send-mail")
    assert str(info.value) == (
        "unknown job 'app-send-mail'; no jobs are registered "
        "(a job is known once a worker that loads it has started)"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"payload": [1, 2]}, "payload must be a JSON object (a dict) or None, got list"),
        ({"payload": "{}"}, "payload must be a JSON object (a dict) or None, got str"),
        ({"payload": {"when": datetime(2024, 1, 1)}}, "payload is not JSON-serialisable: "),
        ({"payload": {"x": float("nan")}}, "payload is not JSON-serialisable: "),
        ({"payload": {"x": "a\x00b"}}, "payload contains a NUL character"),
        ({"run_at": datetime(2030, 1, 1)}, "run_at must be an aware datetime"),
        ({"priority": "high"}, "priority must be a 32-bit integer, got 'high'"),
        ({"priority": 2**31}, "priority must be a 32-bit integer"),
        ({"queue": ""}, "queue must be a non-empty string, got ''"),
        ({"dedup_key": 7}, "dedup_key must be a non-empty string, got 7"),
        ({"parameters": {"batch": 5}}, "parameters must be a dict of strings to strings"),
        ({"parameters": {"a": "x\x00"}}, "parameters contains a NUL character"),
        ({"queue": "re\x00ports"}, "queue contains a NUL character, which Postgres cannot"),
        ({"dedup_key": "k\x00"}, "dedup_key contains a NUL character, which Postgres cannot"),
        ({"dedup_key": "k" * 513}, "dedup_key is 513 bytes, over the limit of 512: use a hash"),
        ({"dedup_key": "é" * 257}, "dedup_key is 514 bytes, over the limit of 512"),
        ({"dedup_key": "k" * 9000}, "dedup_key is 9000 bytes, over the limit of 512"),
        ({"concurrency_key": ""}, "concurrency_key must be a non-empty string, got ''"),
        ({"concurrency_key": 7}, "concurrency_key must be a non-empty string, got 7"),
        ({"concurrency_key": "k\x00"}, "concurrency_key contains a NUL character, which"),
        ({"concurrency_key": "k" * 513}, "concurrency_key is 513 bytes, over the limit of 512"),
        ({"concurrency_key": "é" * 257}, "concurrency_key is 514 bytes, over the limit of 512"),
        ({"parameters": {"a": "x" * 300_000}}, "parameters are 300009 bytes of JSON, over the"),
    ],
)
@pytest.mark.usefixtures("jobs")
def test_invalid_arguments_are_refused_before_reaching_the_database(
    dsn: str, kwargs: dict[str, Any], message: str
) -> None:
    with psycopg.connect(dsn) as conn:
        with pytest.raises(ConfigError) as info:
            pgjobs.enqueue_sync(conn, "t-echo", **kwargs)
        assert str(info.value).startswith(message)
        assert "\n" not in str(info.value)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


@pytest.mark.usefixtures("jobs")
def test_a_payload_over_the_size_limit_is_refused(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = {"blob": "x" * (256 * 1024)}
    with psycopg.connect(dsn) as conn:
        with pytest.raises(ConfigError, match=r"payload is 262155 bytes of JSON, over the limit"):
            pgjobs.enqueue_sync(conn, "t-echo", big)
        monkeypatch.setenv("PGJOBS_MAX_PAYLOAD_BYTES", "20")
        pgjobs.enqueue_sync(conn, "t-echo", {"é": "12345678901"})  # 20 bytes in UTF-8
        with pytest.raises(ConfigError, match="request 1: payload is 21 bytes"):
            pgjobs.enqueue_many_sync(
                conn, [{"job": "t-echo"}, {"job": "t-echo", "payload": {"é": "123456789012"}}]
            )
        monkeypatch.setenv("PGJOBS_MAX_PAYLOAD_BYTES", "lots")
        with pytest.raises(ConfigError, match="PGJOBS_MAX_PAYLOAD_BYTES must be a positive"):
            pgjobs.enqueue_sync(conn, "t-echo")


@pytest.mark.usefixtures("jobs")
def test_a_refused_enqueue_leaves_the_callers_transaction_working(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE orders (id int)")
        conn.execute("INSERT INTO orders VALUES (1)")
        for bad in (
            {"dedup_key": "k" * 9000},  # over what the dedup B-tree index can hold
            {"parameters": {"blob": "x" * (256 * 1024)}},
            {"queue": "a\x00b"},
            {"dedup_key": "a\x00b"},
            {"concurrency_key": "k" * 9000},
            {"concurrency_key": "a\x00b"},
        ):
            with pytest.raises(ConfigError):
                pgjobs.enqueue_sync(conn, "t-echo", **bad)  # type: ignore[arg-type]
        kept = pgjobs.enqueue_sync(conn, "t-echo", dedup_key="k" * 512)
        conn.execute("INSERT INTO orders VALUES (2)")
        conn.commit()
    assert scalar(dsn, "SELECT count(*) FROM orders") == 2
    assert [(run[0], run[9]) for run in runs(dsn)] == [(kept, "k" * 512)]


@pytest.mark.usefixtures("jobs")
def test_parameters_share_the_payload_limit(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGJOBS_MAX_PAYLOAD_BYTES", "20")
    with psycopg.connect(dsn) as conn:
        pgjobs.enqueue_sync(conn, "t-echo", parameters={"é": "1234567890"})  # 20 bytes
        with pytest.raises(ConfigError, match=r"^parameters are 21 bytes of JSON, over the limit"):
            pgjobs.enqueue_sync(conn, "t-echo", parameters={"é": "12345678901"})


def test_a_bad_request_in_a_batch_is_named_by_its_position(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        with pytest.raises(ConfigError, match=r"^request 1: unknown key 'delay'; the keys are job"):
            pgjobs.enqueue_many_sync(conn, [{"job": "t-echo"}, {"job": "t-echo", "delay": 5}])
        with pytest.raises(ConfigError, match=r"^request 0: missing 'job'"):
            pgjobs.enqueue_many_sync(conn, [{"payload": {}}, {"job": "t-echo"}])
        with pytest.raises(ConfigError, match=r"^request 1: expected an EnqueueRequest or a dict"):
            pgjobs.enqueue_many_sync(conn, [{"job": "t-echo"}, "t-echo"])  # type: ignore[list-item]


# -- concurrency keys ---------------------------------------------------------------------------


def tenant_of(payload: Any) -> Any:
    return payload["tenant"].upper() if payload["tenant"] is not None else None


class CodeKeyed(Job):
    """``t-code``, whose runs are keyed by a function of their payload."""

    name = "t-code"
    concurrency_key = tenant_of


@pytest.fixture
def keyed_jobs(conn: psycopg.Connection[Any], jobs: None) -> None:
    """``t-tenant``, keyed by its payload's ``tenant``, and ``t-code``, keyed in code."""
    conn.execute(
        "INSERT INTO pgjobs.jobs (name, extension, max_concurrency, concurrency_key) VALUES "
        "('t-tenant', 't', 2, 'tenant'), ('t-code', 't', 1, %s)",
        [f"callable:{__name__}.tenant_of"],
    )


def keys(dsn: str, ids: list[int]) -> list[str | None]:
    """The concurrency key of each run of ``ids``, in that order."""
    stored = dict(rows(dsn, "SELECT id, concurrency_key FROM pgjobs.runs"))
    return [stored[run_id] for run_id in ids]


@pytest.mark.usefixtures("keyed_jobs")
def test_a_run_is_keyed_by_the_payload_field_its_job_names_or_the_key_given(dsn: str) -> None:
    requests: list[EnqueueRequest | dict[str, Any]] = [
        {"job": "t-tenant", "payload": {"tenant": "acme"}},
        {"job": "t-tenant", "payload": {"tenant": 7}},
        {"job": "t-tenant", "payload": {"tenant": {"id": 1}}},
        {"job": "t-tenant", "payload": {"other": "x"}},
        {"job": "t-tenant"},
        {"job": "t-tenant", "payload": {"tenant": "acme"}, "concurrency_key": "given"},
        {"job": "t-echo", "payload": {"tenant": "acme"}},
        EnqueueRequest("t-echo", concurrency_key="mine"),
    ]
    with psycopg.connect(dsn) as conn:
        ids = pgjobs.enqueue_many_sync(conn, requests)
        ids.append(pgjobs.enqueue_sync(conn, "t-tenant", {"tenant": "solo"}))
        conn.commit()
    assert keys(dsn, ids) == ["acme", "7", '{"id": 1}', None, None, "given", None, "mine", "solo"]


@pytest.mark.usefixtures("keyed_jobs")
def test_a_key_computed_in_code_comes_from_the_job_class_or_instance(dsn: str) -> None:
    async def scenario() -> int:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            run_id = await pgjobs.enqueue(conn, CodeKeyed, {"tenant": "async"})
            await conn.commit()
            return run_id

    with psycopg.connect(dsn) as conn:
        ids = [
            pgjobs.enqueue_sync(conn, CodeKeyed, {"tenant": "acme"}),
            pgjobs.enqueue_sync(conn, CodeKeyed(), {"tenant": "globex"}),
            pgjobs.enqueue_sync(conn, CodeKeyed, {"tenant": None}),
            pgjobs.enqueue_sync(conn, CodeKeyed, {"tenant": "x"}, concurrency_key="given"),
            pgjobs.enqueue_sync(conn, "t-code", concurrency_key="by name"),
            *pgjobs.enqueue_many_sync(
                conn,
                [
                    {"job": CodeKeyed, "payload": {"tenant": "many"}},
                    {"job": "t-echo"},
                    EnqueueRequest(CodeKeyed(), {"tenant": "more"}),
                ],
            ),
        ]
        conn.commit()
    ids.append(asyncio.run(scenario()))
    assert keys(dsn, ids) == [
        "ACME",
        "GLOBEX",
        None,
        "given",
        "by name",
        "MANY",
        None,
        "MORE",
        "ASYNC",
    ]
    assert {job for _, job, *_ in runs(dsn)} == {"t-code", "t-echo"}


@pytest.mark.usefixtures("keyed_jobs")
def test_the_jobs_row_decides_how_its_runs_are_keyed(dsn: str) -> None:
    # A profile may replace the code's callable by a payload field: the class's callable is then
    # not what keys the runs. A job whose row has no key keeps none.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE pgjobs.jobs SET concurrency_key = 'region' WHERE name = 't-code'")
        by_field = pgjobs.enqueue_sync(conn, CodeKeyed, {"tenant": "acme", "region": "eu"})
        conn.execute("UPDATE pgjobs.jobs SET concurrency_key = NULL WHERE name = 't-code'")
        unkeyed = pgjobs.enqueue_sync(conn, CodeKeyed, {"tenant": "acme"})
    assert keys(dsn, [by_field, unkeyed]) == ["eu", None]


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        (
            [{"job": "t-code", "payload": {"tenant": "acme"}}],
            "job 't-code' computes its concurrency key in code: "
            "pass concurrency_key=... or enqueue the Job class",
        ),
        (
            [{"job": "t-echo"}, {"job": "t-code"}],
            "job 't-code' computes its concurrency key in code: "
            "pass concurrency_key=... or enqueue the Job class",
        ),
        (
            [
                {"job": "t-tenant", "payload": {"tenant": "ok"}},
                {"job": "t-tenant", "payload": {"tenant": "é" * 257}},
            ],
            "job 't-tenant': the payload field 'tenant', its concurrency key, holds more than "
            "512 bytes: pass concurrency_key= with a hash of it",
        ),
    ],
)
@pytest.mark.usefixtures("keyed_jobs")
def test_a_run_without_a_key_it_can_hold_is_refused_and_nothing_is_queued(
    dsn: str, requests: list[dict[str, Any]], message: str
) -> None:
    # Refused by the enqueue statement itself, which inserts nothing: the caller's transaction
    # goes on. A job keyed in code cannot be keyed by name; a key over 512 bytes cannot be a slot.
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE orders (id int)")
        with pytest.raises(ConfigError) as info:
            pgjobs.enqueue_many_sync(conn, requests)
        assert str(info.value) == message
        conn.execute("INSERT INTO orders VALUES (1)")
        kept = pgjobs.enqueue_sync(conn, "t-tenant", {"tenant": "k" * 512})
        conn.commit()
    assert scalar(dsn, "SELECT count(*) FROM orders") == 1
    assert rows(dsn, "SELECT id, length(concurrency_key) FROM pgjobs.runs") == [(kept, 512)]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (
            staticmethod(lambda payload: payload["missing"]),
            r"^job 't-code': callable:tests\.test_enqueue\..*<lambda> raised KeyError: 'missing'$",
        ),
        (
            staticmethod(lambda payload: "k" * 600),
            r"^the concurrency key callable:.*<lambda> computed is 600 bytes, over the limit",
        ),
        (
            staticmethod(lambda payload: "a\x00b"),
            r"^the concurrency key callable:.*<lambda> computed contains a NUL character",
        ),
        (
            staticmethod(lambda payload: object()),
            r"^job 't-code': callable:.*<lambda> raised TypeError: Object of type object",
        ),
    ],
)
@pytest.mark.usefixtures("keyed_jobs")
def test_a_key_the_code_cannot_compute_is_refused_before_the_database(
    dsn: str, key: Any, message: str
) -> None:
    job = type("BadKey", (CodeKeyed,), {"concurrency_key": key})
    with psycopg.connect(dsn) as conn:
        with pytest.raises(ConfigError, match=message):
            pgjobs.enqueue_sync(conn, job, {"tenant": "acme"})
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


# -- real workers -------------------------------------------------------------------------------


def test_a_worker_runs_an_enqueued_job_with_the_payload_it_was_given(
    dsn: str, workers: Workers
) -> None:
    workers.wait_registered(workers.start(["t-echo"]))
    with psycopg.connect(dsn) as conn:
        run_id = pgjobs.enqueue_sync(
            conn, "t-echo", {"order": 42, "items": ["a", "b"]}, parameters={"mode": "fast"}
        )
        conn.commit()
    wait_until(
        lambda: scalar(dsn, "SELECT status FROM pgjobs.runs WHERE id = %s", run_id) == "succeeded",
        20,
        "the enqueued run to succeed",
    )
    data = scalar(dsn, "SELECT data FROM pgjobs.runs WHERE id = %s", run_id)
    assert data == {
        "payload": {"order": 42, "items": ["a", "b"]},
        "parameters": {"mode": "fast"},
        "trigger": "enqueue",
    }


def test_a_run_at_in_the_future_is_not_claimed_before_its_time(dsn: str, workers: Workers) -> None:
    workers.wait_registered(workers.start(["t-echo"]))
    with psycopg.connect(dsn) as conn:
        db_now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        run_at = (db_now + timedelta(seconds=2.5)).astimezone(timezone(timedelta(hours=2)))
        run_id = pgjobs.enqueue_sync(conn, "t-echo", {"late": True}, run_at=run_at)
        conn.commit()
    assert scalar(dsn, "SELECT scheduled_for FROM pgjobs.runs WHERE id = %s", run_id) == run_at
    wait_until(
        lambda: scalar(dsn, "SELECT now() > %s", db_now + timedelta(seconds=1.5)), 5, "1.5 s"
    )
    assert scalar(dsn, "SELECT status FROM pgjobs.runs WHERE id = %s", run_id) == "queued"
    wait_until(
        lambda: scalar(dsn, "SELECT status FROM pgjobs.runs WHERE id = %s", run_id) == "succeeded",
        20,
        "the delayed run to succeed",
    )
    started_at = scalar(dsn, "SELECT started_at FROM pgjobs.runs WHERE id = %s", run_id)
    assert started_at >= run_at
    assert scalar(dsn, "SELECT data->'payload' FROM pgjobs.runs") == {"late": True}
