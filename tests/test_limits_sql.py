"""Limits in SQL, under claims at the same instant. Slots: a slot is held once among running runs
(the unique index says so), the second look of a claim drops a slot another claim committed in
between, and two claims take different slots without waiting for each other. Rate buckets: a
high rate is kept in shards, two claims debit different shards without waiting, and a claim that
finds every shard held waits for shard 0 and debits it as the holder left it."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from benchmarks import history
from pgjobs.named_queries import Queries

Conn = psycopg.Connection[tuple[Any, ...]]


def limited_job(conn: Conn, name: str, slots: int, queued: int) -> list[int]:
    """Job ``name`` with ``slots`` slots, registered for the benchmark worker, and ``queued``
    queued runs of it; their ids."""
    history.add_jobs(conn, [name], None)
    conn.execute("UPDATE pgjobs.jobs SET max_concurrency = %s WHERE name = %s", [slots, name])
    found = conn.execute(
        "INSERT INTO pgjobs.runs (job, trigger) SELECT %s, 'enqueue' FROM generate_series(1, %s)"
        " RETURNING id",
        [name, queued],
    ).fetchall()
    return [row[0] for row in found]


def running(conn: Conn, job: str, slot: int) -> int:
    """A running run of ``job`` holding ``slot``; its id."""
    row = conn.execute(
        "INSERT INTO pgjobs.runs (job, trigger, status, worker_id, started_at, slot)"
        " VALUES (%s, 'enqueue', 'running', 'w-other', now(), %s) RETURNING id",
        [job, slot],
    ).fetchone()
    assert row is not None
    return int(row[0])


def claim(conn: Conn, limit: int) -> list[tuple[int, int]]:
    """The worker's statement, claiming up to ``limit`` runs: (id, slot) of those it started."""
    _, query = history.claim_query(history.queries())
    params = history.claim_params(query, [], limit)
    started = [row[1] for row in conn.execute(query, params).fetchall() if row[0] == "started"]
    return conn.execute(
        "SELECT id, slot FROM pgjobs.runs WHERE id = ANY (%s) ORDER BY id", [started]
    ).fetchall()


def test_a_slot_is_held_by_one_running_run_at_most(conn: Conn) -> None:
    limited_job(conn, "x.limited", 2, 0)
    running(conn, "x.limited", 1)

    with pytest.raises(psycopg.errors.UniqueViolation):
        running(conn, "x.limited", 1)
    running(conn, "x.limited", 2)  # another slot
    # A slot is held while its run runs, not after.
    conn.execute("UPDATE pgjobs.runs SET status = 'succeeded' WHERE slot = 1")
    running(conn, "x.limited", 1)


def test_the_second_look_drops_a_slot_a_claim_committed_since(conn: Conn) -> None:
    first, second = limited_job(conn, "x.limited", 4, 2)
    running(conn, "x.limited", 3)

    unheld = conn.execute(
        "SELECT run_id, run_slot FROM pgjobs.unheld_slots(%s, %s, %s, %s)",
        [[first, second], [3, 4], ["x.limited"] * 2, ["", ""]],
    ).fetchall()
    assert unheld == [(second, 4)]

    # The form of revision 0006, which looks each run's group up, for the workers of a release
    # before 0019 during a rolling upgrade.
    unheld = conn.execute(
        "SELECT run_id, run_slot FROM pgjobs.unheld_slots(%s, %s)", [[first, second], [3, 4]]
    ).fetchall()
    assert unheld == [(second, 4)]


def test_the_second_look_tells_the_keys_of_a_job_apart(conn: Conn) -> None:
    limited_job(conn, "x.keyed", 1, 0)
    conn.execute("UPDATE pgjobs.jobs SET concurrency_key = 'tenant' WHERE name = 'x.keyed'")
    conn.execute(
        "INSERT INTO pgjobs.runs (job, trigger, status, worker_id, started_at, slot,"
        " concurrency_key) VALUES ('x.keyed', 'enqueue', 'running', 'w-other', now(), 1, 'a')"
    )

    unheld = conn.execute(
        "SELECT run_id, run_slot FROM pgjobs.unheld_slots(%s, %s, %s, %s)",
        [[101, 102], [1, 1], ["x.keyed"] * 2, ["a", "b"]],
    ).fetchall()

    assert unheld == [(102, 1)], "key a's slot 1 is held, key b's is not"


def test_claims_at_the_same_instant_take_different_slots_without_waiting(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as setup:
        limited_job(setup, "x.limited", 4, 8)
    with psycopg.connect(dsn) as a, psycopg.connect(dsn) as b:
        # b would wait for a's commit if it queued behind a's slots; it must pass over them.
        b.execute("SET statement_timeout = '2s'")
        taken_by_a = claim(a, 2)  # uncommitted: a holds its slots' advisory locks
        taken_by_b = claim(b, 4)
        a.commit()
        b.commit()

    assert [slot for _, slot in taken_by_a] == [1, 2]
    assert [slot for _, slot in taken_by_b] == [3, 4]


def test_a_claim_passes_over_full_groups_only(conn: Conn) -> None:
    """A group is full when its running runs hold as many slots as its limit, whichever slots:
    the claim gives a free slot below the top one, passes over the runs of a full group to the
    run behind them, and holds a group whose limit was lowered below its running runs."""
    queued = limited_job(conn, "x.limited", 3, 3)
    history.add_jobs(conn, ["x.free"], None)
    behind = conn.execute(
        "INSERT INTO pgjobs.runs (job, trigger) VALUES ('x.free', 'enqueue') RETURNING id"
    ).fetchone()
    assert behind is not None
    running(conn, "x.limited", 2)
    running(conn, "x.limited", 3)

    assert claim(conn, 1) == [(queued[0], 1)]  # slot 3 is taken, slot 1 is not: not full
    assert claim(conn, 1) == [(behind[0], None)]  # full: its runs do not stand in front
    conn.execute("UPDATE pgjobs.jobs SET max_concurrency = 2 WHERE name = 'x.limited'")
    assert claim(conn, 2) == []  # three running, two allowed
    assert queued[1:] == [
        row[0]
        for row in conn.execute(
            "SELECT id FROM pgjobs.runs WHERE job = 'x.limited' AND status = 'queued' ORDER BY id"
        )
    ]


def sync_bucket(conn: Conn, job: str, rate: float, burst: float) -> list[tuple[Any, ...]]:
    """The bucket of ``job`` as a worker registering that rate limit leaves it: its shards'
    (shard, rate, burst, tokens)."""
    conn.execute("UPDATE pgjobs.jobs SET rate_limit = 'set' WHERE name = %s", [job])
    conn.execute(
        Queries("pgjobs")["sync_rate_buckets"],
        {"scope": "job", "names": [job], "rates": [rate], "bursts": [burst]},
    )
    return conn.execute(
        "SELECT shard, rate, burst, tokens FROM pgjobs.rate_buckets WHERE name = %s ORDER BY 1",
        [job],
    ).fetchall()


def test_a_high_rate_is_kept_in_four_shards_that_make_the_bucket(conn: Conn) -> None:
    history.add_jobs(conn, ["x.rated"], None)

    assert sync_bucket(conn, "x.rated", 1000.0, 1000.0) == [
        (shard, 250.0, 250.0, 250.0) for shard in range(4)
    ]
    # A lower rate: one row, which keeps its tokens up to its new size.
    assert sync_bucket(conn, "x.rated", 20.0, 20.0) == [(0, 20.0, 20.0, 20.0)]
    assert sync_bucket(conn, "x.rated", 1000.0, 1000.0)[0] == (0, 250.0, 250.0, 20.0)


def test_claims_at_the_same_instant_debit_different_shards_without_waiting(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as setup:
        limited_job(setup, "x.rated", 1, 8)
        setup.execute("UPDATE pgjobs.jobs SET max_concurrency = NULL WHERE name = 'x.rated'")
        sync_bucket(setup, "x.rated", 1000.0, 1000.0)
    with psycopg.connect(dsn) as a, psycopg.connect(dsn) as b:
        # b would wait for a's commit if it queued behind the shard a debits.
        b.execute("SET statement_timeout = '2s'")
        taken_by_a = claim(a, 4)  # uncommitted: a holds the shard it debited
        taken_by_b = claim(b, 4)
        a.commit()
        b.commit()
        debited = a.execute(
            "SELECT shard, granted FROM pgjobs.rate_buckets WHERE granted > 0 ORDER BY 1"
        ).fetchall()

    assert (len(taken_by_a), len(taken_by_b)) == (4, 4)
    assert [granted for _, granted in debited] == [4, 4]


def take_tokens(conn: Conn, job: str, wanted: int) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT shard, granted, tokens FROM pgjobs.take_tokens('job', %s, %s)", [job, wanted]
    ).fetchall()


def test_take_tokens_grants_what_the_fullest_free_shard_holds(conn: Conn) -> None:
    history.add_jobs(conn, ["x.rated"], None)
    sync_bucket(conn, "x.rated", 1000.0, 1000.0)
    conn.execute(
        "UPDATE pgjobs.rate_buckets SET tokens = 10 * shard, updated_at = now() + interval '1 h'"
        " WHERE name = 'x.rated'"
    )  # refilled by nothing until then: shard k holds 10 k tokens

    assert take_tokens(conn, "x.rated", 25) == [(3, 25, 5.0)]
    assert take_tokens(conn, "x.rated", 25) == [(2, 20, 0.0)]  # all it has
    assert take_tokens(conn, "x.rated", 1) == [(1, 1, 9.0)]
    assert take_tokens(conn, "x.unknown", 1) == []


def waits_for_lock(dsn: str, pid: int) -> None:
    """Return once backend ``pid`` waits for a lock (fail after 10 s)."""
    deadline = time.monotonic() + 10
    with psycopg.connect(dsn, autocommit=True) as look:
        while time.monotonic() < deadline:
            row = look.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid]
            ).fetchone()
            if row is not None and row[0] == "Lock":
                return
            time.sleep(0.01)
    raise AssertionError(f"backend {pid} never waited for a lock")


def test_take_tokens_waits_for_shard_0_when_other_claims_hold_every_shard(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as setup:
        history.add_jobs(setup, ["x.rated"], None)
        sync_bucket(setup, "x.rated", 1000.0, 1000.0)
    with psycopg.connect(dsn) as holder, psycopg.connect(dsn, autocommit=True) as claimer:
        holder.execute("SELECT * FROM pgjobs.rate_buckets WHERE name = 'x.rated' FOR UPDATE")
        claimer.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            take_tokens(claimer, "x.rated", 1)
        claimer.execute("SET lock_timeout = 0")
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(take_tokens, claimer, "x.rated", 1)
            waits_for_lock(dsn, claimer.info.backend_pid)
            assert not waiting.done()
            # The holder empties every shard (refilled by nothing for an hour) and commits: the
            # waiting claim debits shard 0 as that commit left it.
            holder.execute(
                "UPDATE pgjobs.rate_buckets SET tokens = 0, updated_at = now() + interval '1 h'"
                " WHERE name = 'x.rated'"
            )
            holder.commit()
            assert waiting.result(timeout=10) == [(0, 0, 0.0)]
