"""Queue controls with real worker processes against a real Postgres, checked with SQL on
pgjobs.runs and pgjobs.run_waits: concurrency limits (per job and per key) and rate limits hold
across workers, a pause holds every run until its resume, an operator's cancel stops a run, ticks
start on time behind a deep queue of bulk work, and held runs never stand in front of others.

Each test prints what it measured (``pytest -s`` shows it).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
import pytest

from pgjobs import EnqueueRequest, enqueue_many_sync
from pgjobs.execution import CANCEL_GRACE
from tests.cli import run_pgjobs
from tests.test_worker import wait_status
from tests.workers import WorkerProcess, Workers, rows, scalar, wait_until, worker_pool

# It measures latencies: it runs alone, after the tests that share the machine (see Makefile).
pytestmark = pytest.mark.serial

APP = "tests.worker_apps.controls:extension"
# Wake-ups that only a NOTIFY can bring within a second: heartbeats every 10 s, polls every 10 s.
NOTIFY_ONLY = ("--lease", "30", "--poll-interval", "10")


@pytest.fixture
def workers(dsn: str, tmp_path: Path) -> Iterator[Workers]:
    with worker_pool(dsn, tmp_path) as pool:
        yield pool


def start(workers: Workers, jobs: list[str], *args: str, replicas: int = 1) -> list[WorkerProcess]:
    """``replicas`` workers of the controls app registering ``jobs``, once each has registered."""
    procs = [workers.start(jobs, *args, app=APP) for _ in range(replicas)]
    workers.wait_registered(*procs)
    return procs


def enqueue(dsn: str, job: str, payloads: list[dict[str, Any] | None], **fields: Any) -> list[int]:
    """Queue a run of ``job`` per payload in one committed transaction, as an application does."""
    with psycopg.connect(dsn) as conn:
        return enqueue_many_sync(conn, [EnqueueRequest(job, p, **fields) for p in payloads])


def pgjobs_command(dsn: str, *args: str) -> None:
    """``pgjobs ARGS`` as an operator runs it; it must succeed."""
    proc = run_pgjobs(dsn, *args)
    assert proc.returncode == 0, proc.stderr


def status_counts(dsn: str, job: str) -> dict[str, int]:
    return dict(
        rows(dsn, "SELECT status, count(*) FROM pgjobs.runs WHERE job = %s GROUP BY 1", job)
    )


def wait_drained(dsn: str, job: str, timeout: float) -> None:
    """Until no run of ``job`` is queued or running."""
    wait_until(
        lambda: not {"queued", "running"} & status_counts(dsn, job).keys(),
        timeout,
        f"the runs of {job} to finish",
    )


def db_clock(dsn: str) -> datetime:
    return scalar(dsn, "SELECT clock_timestamp()")  # type: ignore[no-any-return]


def seconds(delta: Any) -> float:
    return float(delta.total_seconds())


class Sampler:
    """Runs ``query`` every ``interval`` seconds in a thread while in the ``with`` block, keeping
    every answer's rows."""

    def __init__(self, dsn: str, query: str, *params: Any, interval: float = 0.02) -> None:
        self.samples: list[list[tuple[Any, ...]]] = []
        self._args = (dsn, query, params)
        self._interval = interval
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        dsn, query, params = self._args
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                while not self._stop.is_set():
                    self.samples.append(conn.execute(query, params or None).fetchall())
                    self._stop.wait(self._interval)
        except BaseException as exc:
            self._error = exc

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(10)
        if self._error is not None and kind is None:
            raise AssertionError(f"the sampler failed: {self._error!r}")


# The most runs of a job (per concurrency key) that held their slot at one instant, from the
# runs' own times: a run holds its slot from its claim (started_at, or later for a prefetched run)
# to the statement that records its end (finished_at), and a claim can only see a slot freed by
# a statement that committed before it began, so a limit that held makes these intervals overlap
# at most `limit` deep. At one instant, ends count before starts.
MAX_OVERLAP = """
WITH edges AS (
    SELECT coalesce(concurrency_key, '') AS key, started_at AS at, 1 AS delta
    FROM pgjobs.runs WHERE job = %s AND started_at IS NOT NULL
    UNION ALL
    SELECT coalesce(concurrency_key, ''), finished_at, -1
    FROM pgjobs.runs WHERE job = %s AND finished_at IS NOT NULL AND started_at IS NOT NULL
)
SELECT key, max(running)
FROM (SELECT key, sum(delta) OVER (PARTITION BY key ORDER BY at, delta) AS running FROM edges) e
GROUP BY key
ORDER BY key
"""


# -- concurrency limits -------------------------------------------------------------------------


def test_max_concurrency_holds_across_four_workers_and_is_used(dsn: str, workers: Workers) -> None:
    start(workers, ["c-limited"], "-c", "20", replicas=4)
    running = "SELECT count(*) FROM pgjobs.runs WHERE job = 'c-limited' AND status = 'running'"
    with Sampler(dsn, running) as sampler:
        enqueue(dsn, "c-limited", [None] * 500)
        wait_drained(dsn, "c-limited", 60)

    counts = [sample[0][0] for sample in sampler.samples]
    overlap = dict(rows(dsn, MAX_OVERLAP, "c-limited", "c-limited"))
    drain = scalar(
        dsn,
        "SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM pgjobs.runs "
        "WHERE job = 'c-limited'",
    )
    busy = [c for c in counts if c]
    print(
        f"max_concurrency 5: {len(counts)} samples, max {max(counts)} running, "
        f"mean {sum(busy) / len(busy):.2f} while busy; overlap of run times {overlap}; "
        f"drained in {drain:.2f}s"
    )
    assert max(counts) <= 5, f"more than 5 running at once: {max(counts)}"
    assert max(counts) == 5, "the limit of 5 was never used"
    assert overlap == {"": 5}
    assert status_counts(dsn, "c-limited") == {"succeeded": 500}
    # Every run ran in one of the job's five slots, and each slot was used.
    slots = "SELECT min(slot), max(slot), count(DISTINCT slot) FROM pgjobs.runs WHERE job = %s"
    assert rows(dsn, slots, "c-limited") == [(1, 5, 5)]


def test_a_concurrency_key_runs_one_at_a_time_per_key_and_keys_side_by_side(
    dsn: str, workers: Workers
) -> None:
    start(workers, ["c-per-tenant"], "-c", "20", replicas=4)
    by_key = (
        "SELECT concurrency_key, count(*) FROM pgjobs.runs "
        "WHERE job = 'c-per-tenant' AND status = 'running' GROUP BY 1"
    )
    with Sampler(dsn, by_key) as sampler:
        enqueue(dsn, "c-per-tenant", [{"tenant": f"tenant-{i % 10}"} for i in range(500)])
        wait_drained(dsn, "c-per-tenant", 60)

    most_per_key = max(count for sample in sampler.samples for _, count in sample)
    most_keys = max(len(sample) for sample in sampler.samples)
    overlap = dict(rows(dsn, MAX_OVERLAP, "c-per-tenant", "c-per-tenant"))
    print(
        f"concurrency key: {len(sampler.samples)} samples, at most {most_per_key} running per "
        f"key, at most {most_keys} keys running at once; overlap of run times {overlap}"
    )
    assert most_per_key == 1, "two runs of one key ran at once"
    assert overlap == {f"tenant-{i}": 1 for i in range(10)}
    assert most_keys >= 5, "the keys did not run side by side"
    assert rows(
        dsn,
        "SELECT concurrency_key, count(*) FILTER (WHERE status = 'succeeded') FROM pgjobs.runs "
        "GROUP BY 1 ORDER BY 1",
    ) == [(f"tenant-{i}", 50) for i in range(10)]


def test_a_slot_freed_by_a_busy_worker_goes_to_an_idle_one_at_once(
    dsn: str, workers: Workers
) -> None:
    # The busy worker (one slot) takes the first run of the one-at-a-time job, for 3 s. Then
    # bulk work of 2 s a run is queued behind the job's other runs: when the first run ends, the
    # busy worker's walk of the queue passes over them (the job is at its limit when the walk
    # begins) and takes bulk work. The idle worker only has the job's runs and polls every
    # 10 s: only a NOTIFY can bring it the slot the busy worker freed.
    start(workers, ["c-one-short", "c-sleep"], *NOTIFY_ONLY, "-c", "1", "--prefetch", "0")
    ids = enqueue(dsn, "c-one-short", [{"seconds": 3.0}, None, None, None, None])
    wait_status(dsn, ids[0], {"running"}, 10)
    start(workers, ["c-one-short"], *NOTIFY_ONLY)
    enqueue(dsn, "c-sleep", [{"seconds": 2.0}] * 3)
    wait_drained(dsn, "c-one-short", 20)

    ran = rows(
        dsn,
        "SELECT worker_id, started_at, finished_at FROM pgjobs.runs WHERE id = ANY(%s) "
        "ORDER BY started_at",
        ids,
    )
    gaps = [round(seconds(b[1] - a[2]), 3) for a, b in itertools.pairwise(ran)]
    print(f"one at a time on two workers: {[w for w, _, _ in ran]}, gaps (s) {gaps}")
    assert status_counts(dsn, "c-one-short") == {"succeeded": 5}
    assert [w for w, _, _ in ran[:2]] == ["w1", "w2"], "the idle worker did not take the slot"
    assert max(gaps) <= 0.5, "a freed slot waited for a poll"


# -- rate limits --------------------------------------------------------------------------------


def test_a_rate_limit_holds_across_four_workers(dsn: str, workers: Workers) -> None:
    rate, burst, runs = 20, 20, 200
    start(workers, ["c-rated"], replicas=4)
    waits = "SELECT DISTINCT waiting_for FROM pgjobs.run_waits WHERE job = 'c-rated'"
    with Sampler(dsn, waits, interval=0.2) as sampler:
        enqueue(dsn, "c-rated", [None] * runs)
        wait_drained(dsn, "c-rated", 30)

    assert status_counts(dsn, "c-rated") == {"succeeded": runs}
    starts = [
        t.timestamp()
        for (t,) in rows(
            dsn, "SELECT started_at FROM pgjobs.runs WHERE job = 'c-rated' ORDER BY started_at"
        )
    ]
    # Starts in each 1-second window [start, start + 1 s): the bucket holds at most `burst` tokens
    # when the window opens and refills `rate` in it.
    most_in_a_second = max(
        sum(1 for t in starts[i:] if t < first + 1.0) for i, first in enumerate(starts)
    )
    # Any stretch of starts i..j: the bucket pays for at most burst + rate * (t_j - t_i) of them.
    # One token of slack: started_at is the claim's clock, the bucket refills by its transaction
    # time, a few milliseconds earlier.
    excess = max(
        (j - i + 1) - (burst + rate * (starts[j] - starts[i]))
        for i, j in itertools.combinations_with_replacement(range(len(starts)), 2)
    )
    # The first claim finds the bucket full (burst); each of the other runs waits for a token:
    # (runs - burst) / rate = 9 s from the first start to the last. Not faster than that (less
    # the few milliseconds between a claim's transaction time and its clock), and within 10 %.
    ideal = (runs - burst) / rate
    span = starts[-1] - starts[0]
    said = {reason for sample in sampler.samples for (reason,) in sample}
    print(
        f"rate 20/s: {runs} starts in {span:.3f}s (ideal {ideal:.1f}s), at most "
        f"{most_in_a_second} in a second, excess over the bucket {excess:.2f}; "
        f"run_waits said {said}"
    )
    assert most_in_a_second <= rate + burst
    assert excess <= 1.0
    assert ideal - 0.1 <= span <= ideal * 1.1
    assert "rate limit" in said


def test_many_workers_claiming_limited_runs_at_once_never_deadlock(
    dsn: str, workers: Workers
) -> None:
    # Every claim takes slots and tokens while other workers record the ends of runs it may have
    # met in the queue: the order of the statement's steps is all that keeps them apart.
    procs = start(workers, ["c-rated-fast"], "-c", "10", replicas=4)
    deadlocks = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    before = scalar(dsn, deadlocks)
    enqueue(dsn, "c-rated-fast", [None] * 6000)
    wait_drained(dsn, "c-rated-fast", 60)
    for p in procs:
        assert p.stop() == 0, p.log()
    # A backend reports its statistics when it exits, at the latest.
    wait_until(
        lambda: (
            scalar(
                dsn,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name LIKE 'pgjobs-%%'",
            )
            == 0
        ),
        10,
        "the workers' sessions to end",
    )
    found = scalar(dsn, deadlocks) - before
    logs = [p.log() for p in procs]
    print(f"4 workers drained 6,000 limited runs: {found} deadlocks")
    assert found == 0
    assert not [log for log in logs if "deadlock" in log]
    assert status_counts(dsn, "c-rated-fast") == {"succeeded": 6000}
    # Every run had a token and a slot (the job has both limits).
    assert scalar(dsn, "SELECT count(*) FROM pgjobs.runs WHERE slot IS NULL") == 0


# -- pause and resume ---------------------------------------------------------------------------

PAUSED = {"job": ("jobs", "c-sleep", "job paused"), "queue": ("queues", "default", "queue paused")}


def pause(dsn: str, scope: str) -> None:
    group, name, _ = PAUSED[scope]
    pgjobs_command(dsn, group, "pause", name)


def resume(dsn: str, scope: str) -> datetime:
    """Resume with the CLI; returns the resume's transaction time."""
    group, name, _ = PAUSED[scope]
    pgjobs_command(dsn, group, "resume", name)
    table = {"job": "jobs", "queue": "queues"}[scope]
    resumed: datetime = scalar(
        dsn, f"SELECT updated_at FROM pgjobs.{table} WHERE name = %s AND NOT paused", name
    )
    assert resumed is not None
    return resumed


def started(dsn: str, ids: list[int]) -> set[int]:
    return {
        run_id
        for (run_id,) in rows(
            dsn, "SELECT id FROM pgjobs.runs WHERE id = ANY(%s) AND started_at IS NOT NULL", ids
        )
    }


def assert_held(dsn: str, scope: str, ids: list[int], ran: set[int], hold: float) -> None:
    """For ``hold`` seconds, while the workers run other work (c-bulk runs in the other queue),
    no run of ``ids`` but ``ran`` starts, and run_waits says the pause holds the rest."""
    deadline = time.monotonic() + hold
    other = enqueue(dsn, "c-bulk", [None] * 20, queue="other")
    while time.monotonic() < deadline:
        assert started(dsn, ids) == ran, "a run started while paused"
        time.sleep(0.05)
    reason = PAUSED[scope][2]
    waiting = rows(
        dsn,
        "SELECT waiting_for, count(*) FROM pgjobs.run_waits WHERE id = ANY(%s) GROUP BY 1",
        ids,
    )
    assert waiting == [(reason, len(ids) - len(ran))]
    assert status_counts(dsn, "c-bulk") == {"succeeded": len(other)}, "the workers were idle"


def assert_released(dsn: str, ids: list[int], resumed: datetime, *, all_within: float) -> None:
    """Every run of ``ids`` succeeds, the first within a second of the resume (a NOTIFY wakes
    the workers), the last within ``all_within`` seconds of it."""
    wait_until(
        lambda: (
            scalar(
                dsn,
                "SELECT count(*) FROM pgjobs.runs WHERE id = ANY(%s) AND status = 'succeeded'",
                ids,
            )
            == len(ids)
        ),
        30,
        "the held runs to succeed after the resume",
    )
    first, last = rows(
        dsn,
        "SELECT min(started_at) - %s, max(started_at) - %s FROM pgjobs.runs "
        "WHERE id = ANY(%s) AND started_at > %s",
        resumed,
        resumed,
        ids,
        resumed,
    )[0]
    print(f"after the resume: first start {seconds(first):.3f}s, last {seconds(last):.3f}s")
    assert seconds(first) <= 1.0
    assert seconds(last) <= all_within


@pytest.mark.parametrize("scope", ["job", "queue"])
def test_a_pause_made_before_any_worker_runs_holds_every_run_until_resumed(
    dsn: str, workers: Workers, scope: str
) -> None:
    # A worker registers the jobs (so they may be enqueued and paused), then stops.
    (first,) = start(workers, ["c-sleep", "c-bulk"])
    assert first.stop() == 0, first.log()
    pause(dsn, scope)
    ids = enqueue(dsn, "c-sleep", [None] * 100)
    start(workers, ["c-sleep", "c-bulk"], *NOTIFY_ONLY, "-q", "default", "-q", "other", replicas=2)

    assert_held(dsn, scope, ids, set(), hold=2.0)
    # 100 runs of 50 ms on 20 slots take 0.25 s.
    assert_released(dsn, ids, resume(dsn, scope), all_within=1.0)


@pytest.mark.parametrize("scope", ["job", "queue"])
def test_a_pause_lets_running_runs_finish_and_holds_the_queued_ones_until_resumed(
    dsn: str, workers: Workers, scope: str
) -> None:
    args = (*NOTIFY_ONLY, "-c", "4", "-q", "default", "-q", "other")
    start(workers, ["c-sleep", "c-bulk"], *args, replicas=2)
    ids = enqueue(dsn, "c-sleep", [{"seconds": 0.3}] * 100)
    wait_until(lambda: len(started(dsn, ids)) >= 8, 10, "runs to start")
    pause(dsn, scope)
    paused = db_clock(dsn)
    wait_until(
        lambda: "running" not in status_counts(dsn, "c-sleep"), 5, "the running runs to finish"
    )
    ran = started(dsn, ids)
    late = scalar(
        dsn, "SELECT count(*) FROM pgjobs.runs WHERE id = ANY(%s) AND started_at > %s", ids, paused
    )
    print(f"paused with {len(ran)} of {len(ids)} runs started")
    assert late == 0, "a run started after the pause"
    assert status_counts(dsn, "c-sleep") == {"succeeded": len(ran), "queued": len(ids) - len(ran)}
    assert len(ran) < len(ids)

    assert_held(dsn, scope, ids, ran, hold=2.0)
    # Up to 92 runs of 0.3 s on 8 slots take 3.5 s; a second more for the statements.
    assert_released(dsn, ids, resume(dsn, scope), all_within=4.5)


# -- cancel -------------------------------------------------------------------------------------


def a_running_run(dsn: str, job: str) -> int:
    """Queue one run of ``job``; its id once a worker runs it."""
    (run_id,) = enqueue(dsn, job, [None])
    wait_status(dsn, run_id, {"running"}, 10)
    return run_id


def cancel_latency(dsn: str, run_id: int) -> tuple[dict[str, Any], float]:
    """The run once finished, and the seconds from the cancel request to its end."""
    row: dict[str, Any] = dict(
        wait_status(dsn, run_id, {"cancelled", "succeeded", "failed", "abandoned"}, 15)
    )
    return row, seconds(row["finished_at"] - row["cancel_requested_at"])


def test_pgjobs_runs_cancel_stops_an_async_job_that_ignores_it_within_a_second(
    dsn: str, workers: Workers
) -> None:
    (w,) = start(workers, ["c-ignores-cancel"], *NOTIFY_ONLY)
    run_id = a_running_run(dsn, "c-ignores-cancel")
    pgjobs_command(dsn, "runs", "cancel", str(run_id))

    row, latency = cancel_latency(dsn, run_id)
    print(f"cancel of an async job that ignores it: {latency:.3f}s")
    assert row["status"] == "cancelled", row
    assert latency <= 1.0
    assert scalar(dsn, "SELECT count(*) FROM pgjobs.run_locks") == 0
    assert w.proc.poll() is None


def test_a_cancel_by_sql_stops_a_sync_job_that_checks_ctx_cancelled_within_a_second(
    dsn: str, workers: Workers
) -> None:
    start(workers, ["c-heeds-cancel"], *NOTIFY_ONLY)
    run_id = a_running_run(dsn, "c-heeds-cancel")
    scalar(
        dsn, "UPDATE pgjobs.runs SET cancel_requested_at = now() WHERE id = %s RETURNING id", run_id
    )

    row, latency = cancel_latency(dsn, run_id)
    print(f"cancel of a sync job that checks ctx.cancelled: {latency:.3f}s")
    assert row["status"] == "cancelled" and row["message"] == "stopped when cancelled", row
    assert latency <= 1.0


def test_without_listen_a_cancel_arrives_with_the_heartbeat(dsn: str, workers: Workers) -> None:
    lease = 1.5  # a heartbeat every lease / 3 = 0.5 s
    start(workers, ["c-ignores-cancel"], "--no-listen", "--lease", str(lease))
    run_id = a_running_run(dsn, "c-ignores-cancel")
    pgjobs_command(dsn, "runs", "cancel", str(run_id))

    row, latency = cancel_latency(dsn, run_id)
    print(f"cancel without LISTEN: {latency:.3f}s")
    assert row["status"] == "cancelled", row
    # The next heartbeat carries it, then the job has its grace; 0.5 s for the statements.
    assert latency <= lease / 3 + CANCEL_GRACE + 0.5


# -- ticks behind bulk work ---------------------------------------------------------------------


# Keeps the bulk job's queue %s runs deep, as an application that enqueues as fast as the workers
# drain: each time, how deep it was and how many runs it added.
TOP_UP = """
WITH depth AS (
    SELECT count(*) AS n FROM pgjobs.runs WHERE job = 'c-bulk' AND status = 'queued'
), added AS (
    INSERT INTO pgjobs.runs (job, trigger)
    SELECT 'c-bulk', 'enqueue' FROM depth, generate_series(1, %s - depth.n)
    RETURNING 1
)
SELECT (SELECT n FROM depth), (SELECT count(*) FROM added)
"""

# The first ticks scheduled after a time, with their lag in seconds.
TICKS = """
SELECT scheduled_for, status, extract(epoch FROM started_at - scheduled_for)::float8 AS lag
FROM pgjobs.runs
WHERE job = 'c-every-second' AND scheduled_for > %s
ORDER BY scheduled_for
LIMIT %s
"""


def test_ticks_start_on_time_behind_a_deep_queue_of_bulk_work(dsn: str, workers: Workers) -> None:
    ticks, depth = 15, 30_000
    procs = start(workers, ["c-bulk", "c-every-second"], "-c", "10", replicas=4)
    enqueue(dsn, "c-bulk", [None] * depth)
    loaded = db_clock(dsn)
    # 30,000 runs of 5 ms drain in about 5 s here: topped up, the queue stays deep for every tick.
    with Sampler(dsn, TOP_UP, depth, interval=0.2) as feeder:
        wait_until(
            lambda: (
                scalar(
                    dsn,
                    f"SELECT count(*) FROM ({TICKS}) t WHERE status NOT IN ('running', 'queued')",
                    loaded,
                    ticks,
                )
                == ticks
            ),
            ticks + 30,
            f"{ticks} ticks",
        )
    for p in procs:
        assert p.stop() == 0, p.log()

    measured = rows(dsn, TICKS, loaded, ticks)
    p50, p99, worst = rows(
        dsn,
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), "
        f"percentile_cont(0.99) WITHIN GROUP (ORDER BY lag), max(lag) FROM ({TICKS}) t",
        loaded,
        ticks,
    )[0]
    depths = [sample[0][0] for sample in feeder.samples]
    bulk = scalar(
        dsn, "SELECT count(*) FROM pgjobs.runs WHERE job = 'c-bulk' AND status = 'succeeded'"
    )
    print(
        f"tick lag over {ticks} ticks behind {depth} queued bulk runs: p50 {p50 * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms, max {worst * 1000:.0f} ms; lags (ms) "
        f"{[lag and round(lag * 1000) for _, _, lag in measured]}; {bulk} bulk runs done, "
        f"queue depth {min(depths)} to {max(depths)}"
    )
    assert min(depths) >= depth // 3, "the bulk queue ran dry while the ticks were measured"
    assert [status for _, status, _ in measured] == ["succeeded"] * ticks
    gaps = {seconds(b - a) for (a, _, _), (b, _, _) in itertools.pairwise(measured)}
    assert gaps == {1.0}, f"a tick is missing or ran twice: gaps {sorted(gaps)}"
    assert p99 <= 0.1


# -- held runs do not block others --------------------------------------------------------------

HOLDS = {
    # One runs (for a minute), the others wait for its slot.
    "concurrency": ("c-one-at-a-time", "concurrency", {"running": 1, "queued": 199}),
    # One takes the hour's token, the others wait for the next.
    "rate limit": ("c-hourly", "rate limit", {"succeeded": 1, "queued": 199}),
    # All wait for a resume.
    "job paused": ("c-paused", "job paused", {"queued": 200}),
}


@pytest.mark.parametrize("hold", list(HOLDS))
def test_held_runs_do_not_stand_in_front_of_runs_that_may_start(
    dsn: str, workers: Workers, hold: str
) -> None:
    job, reason, held = HOLDS[hold]
    start(workers, ["c-sleep", job], *NOTIFY_ONLY, "-c", "4", replicas=2)
    if hold == "job paused":
        pgjobs_command(dsn, "jobs", "pause", job)
    enqueue(dsn, job, [None] * 200)
    waits = "SELECT waiting_for, count(*) FROM pgjobs.run_waits WHERE job = %s GROUP BY 1"
    wait_until(lambda: status_counts(dsn, job) == held, 10, f"the runs of {job} to be held")
    assert rows(dsn, waits, job) == [(reason, held["queued"])]

    # Newer runs of an unlimited job, behind 199 or 200 held ones in the same queue.
    ids = enqueue(dsn, "c-sleep", [None] * 20)
    wait_drained(dsn, "c-sleep", 10)
    worst = scalar(
        dsn,
        "SELECT max(started_at - scheduled_for) FROM pgjobs.runs WHERE id = ANY(%s)",
        ids,
    )
    print(f"held by {hold}: the 20 newer runs started at most {seconds(worst):.3f}s after enqueue")
    assert status_counts(dsn, "c-sleep") == {"succeeded": 20}
    assert seconds(worst) <= 1.0
    assert status_counts(dsn, job) == held
    assert rows(dsn, waits, job) == [(reason, held["queued"])]
