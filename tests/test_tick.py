"""Tick planning: every due tick runs or is dropped by the misfire policy, none vanishes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgjobs.named_queries import Queries
from pgjobs.schedule import CronSchedule
from pgjobs.tick import MAX_TICKS, SCALED_GRACE_MAX, SCALED_GRACE_SHARE, TickPlan, plan_ticks
from tests.cli import add_worker
from tests.workers import Workers, rows, scalar, wait_until, worker_pool

SECOND = timedelta(seconds=1)
EPSILON = timedelta(microseconds=1)
EVERY_SECOND = CronSchedule.parse("* * * * * *")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def plan(
    cron: CronSchedule,
    watermark: datetime,
    now: datetime,
    misfire: str = "coalesce",
    *,
    grace: float = 5.0,
    cap: int = 100,
    max_ticks: int = MAX_TICKS,
) -> TickPlan:
    return plan_ticks(
        cron,
        next_fire_at=watermark,
        now=now,
        misfire=misfire,
        backfill_cap=cap,
        misfire_grace=grace,
        max_ticks=max_ticks,
    )


def catch_up(
    cron: CronSchedule, watermark: datetime, now: datetime, misfire: str, **kw: float
) -> list[TickPlan]:
    """Plan as the worker does: while the job is due, plan and feed back the new watermark."""
    plans: list[TickPlan] = []
    while watermark <= now:
        plans.append(plan(cron, watermark, now, misfire, **kw))  # type: ignore[arg-type]
        watermark = plans[-1].next_fire_at
        assert len(plans) < 100
    return plans


# --- a grace wider than one plan --------------------------------------------------------------


def test_a_grace_spanning_more_ticks_than_one_plan_holds_runs_every_one_of_them() -> None:
    """15,001 on-time ticks of an every-second job: 10,000 now, the watermark stops after them
    (the job is still due), and the next plan runs the other 5,001."""
    now = utc(2026, 6, 1, 12, 0, 0) + timedelta(milliseconds=500)
    watermark = utc(2026, 6, 1, 12, 0, 0) - timedelta(seconds=15_000)
    first = plan(EVERY_SECOND, watermark, now, "backfill", grace=20_000, cap=100)
    assert len(first.ticks) == MAX_TICKS
    assert first.ticks[0] == watermark
    assert first.next_fire_at == first.ticks[-1] + SECOND <= now  # still due: not moved past now
    second = plan(EVERY_SECOND, first.next_fire_at, now, "backfill", grace=20_000, cap=100)
    assert len(second.ticks) == 5_001
    assert second.ticks[0] == first.next_fire_at
    assert second.ticks[-1] == utc(2026, 6, 1, 12, 0, 0)
    assert second.next_fire_at == utc(2026, 6, 1, 12, 0, 1) > now  # caught up
    everything = first.ticks + second.ticks
    assert everything == [watermark + i * SECOND for i in range(15_001)]


def test_a_backfill_cap_larger_than_one_plan_runs_the_latest_cap_over_several_plans() -> None:
    now = utc(2026, 6, 1, 12, 0, 0)
    watermark = now - timedelta(hours=1)
    plans = catch_up(EVERY_SECOND, watermark, now, "backfill", grace=0, cap=25, max_ticks=10)
    ticks = [t for p in plans for t in p.ticks]
    assert [len(p.ticks) for p in plans] == [10, 10, 6]
    assert ticks == [now - i * SECOND for i in range(25, -1, -1)]  # 25 missed + the on-time one


def test_max_ticks_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_ticks must be >= 1, got 0"):
        plan(EVERY_SECOND, utc(2026, 1, 1), utc(2026, 1, 1), max_ticks=0)


# --- the grace and the schedule's own interval ------------------------------------------------


def test_a_lone_worker_paused_12_s_on_an_every_second_job_follows_its_policy() -> None:
    """The configured grace (5 s) is what counts for fine schedules: 12 missed ticks are 5 on
    time plus 7 missed ones, which the policy decides about."""
    now = utc(2026, 6, 1, 12, 0, 12) + timedelta(milliseconds=300)
    watermark = utc(2026, 6, 1, 12, 0, 1)
    assert len(plan(EVERY_SECOND, watermark, now, "coalesce").ticks) == 6  # 1 missed + 5
    assert len(plan(EVERY_SECOND, watermark, now, "skip").ticks) == 5
    assert len(plan(EVERY_SECOND, watermark, now, "backfill").ticks) == 12
    assert len(plan(EVERY_SECOND, watermark, now, "coalesce", grace=15).ticks) == 12


@pytest.mark.parametrize(
    ("expression", "late", "on_time"),
    [
        ("0 0 2 * * *", timedelta(seconds=30), True),  # daily: 1% is 14.4 min
        ("0 0 2 * * *", timedelta(minutes=14), True),
        ("0 0 2 * * *", timedelta(minutes=15), False),
        ("0 0 * * * *", timedelta(seconds=36), True),  # hourly: 1% is 36 s
        ("0 0 * * * *", timedelta(seconds=37), False),
        ("0 * * * * *", timedelta(seconds=5), True),  # every minute: the 5 s grace is more
        ("0 * * * * *", timedelta(seconds=6), False),
        ("0 0 2 * * MON", timedelta(minutes=15), True),  # weekly: capped at 15 minutes
        ("0 0 2 * * MON", timedelta(minutes=16), False),
    ],
)
def test_the_latest_tick_is_on_time_within_one_percent_of_its_interval(
    expression: str, late: timedelta, on_time: bool
) -> None:
    """A ``skip`` job whose workers were out when it was due (a deploy, a failover) still runs
    if they are back within 1% of its interval (15 minutes at most), not only within the grace."""
    cron = CronSchedule.parse(expression)
    tick = cron.next_after(utc(2026, 6, 1))
    result = plan(cron, tick, tick + late, "skip")
    assert result.ticks == ([tick] if on_time else [])
    assert result.next_fire_at == cron.next_after(tick)


def test_the_interval_is_the_gap_to_the_next_tick_of_an_irregular_schedule() -> None:
    """09:00 on weekdays: Friday's tick is followed by Monday's (3 days: 1% is 43 min, capped at
    15), Monday's by Tuesday's (1 day: 14.4 min)."""
    cron = CronSchedule.parse("0 0 9 * * MON-FRI")
    friday, monday = utc(2026, 6, 5, 9), utc(2026, 6, 8, 9)
    assert plan(cron, friday, friday + timedelta(minutes=15), "skip").ticks == [friday]
    assert plan(cron, monday, monday + timedelta(minutes=15), "skip").ticks == []
    assert plan(cron, monday, monday + timedelta(minutes=14), "skip").ticks == [monday]


def test_only_the_latest_tick_gains_the_scaled_grace() -> None:
    """An hourly ``coalesce`` job back 20 s after 03:00, its watermark at 01:00: 03:00 is on
    time, 01:00 and 02:00 were missed and coalesce into the latest of them."""
    cron = CronSchedule.parse("0 0 * * * *")
    result = plan(cron, utc(2026, 6, 1, 1), utc(2026, 6, 1, 3, 0, 20), "coalesce")
    assert result.ticks == [utc(2026, 6, 1, 2), utc(2026, 6, 1, 3)]
    skipped = plan(cron, utc(2026, 6, 1, 1), utc(2026, 6, 1, 3, 0, 20), "skip")
    assert skipped.ticks == [utc(2026, 6, 1, 3)]


# --- the invariant ----------------------------------------------------------------------------

# (expression, zone, a typical interval in seconds: the scale of the generated lags and graces)
SCHEDULES = [
    ("* * * * * *", "UTC", 1),
    ("*/7 * * * * *", "UTC", 7),
    ("0 * * * * *", "UTC", 60),
    ("0 */15 * * * *", "Europe/Berlin", 900),
    ("0 0 * * * *", "America/New_York", 3600),
    ("0 30 2 * * *", "Europe/Berlin", 86_400),
    ("0 0 9 * * MON-FRI", "UTC", 86_400),
    ("0 0 0 1 * *", "UTC", 2_678_400),
]
STARTS = [utc(2026, 1, 5), utc(2026, 3, 28, 23), utc(2026, 3, 8, 5), utc(2026, 10, 24, 23)]


def is_fire_time(cron: CronSchedule, t: datetime) -> bool:
    return cron.next_after(t - EPSILON) == t


def scaled_grace(cron: CronSchedule, tick: datetime) -> timedelta:
    return min((cron.next_after(tick) - tick) * SCALED_GRACE_SHARE, SCALED_GRACE_MAX)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    schedule=st.sampled_from(SCHEDULES),
    start=st.sampled_from(STARTS),
    offset=st.floats(0, 1),
    policy=st.sampled_from(["coalesce", "skip", "backfill"]),
    cap=st.integers(1, 6),
    max_ticks=st.integers(1, 8),
    lag=st.floats(0, 40),
    grace=st.floats(0, 12),
    data=st.data(),
)
def test_every_tick_runs_once_or_is_dropped_by_the_policy(
    schedule: tuple[str, str, int],
    start: datetime,
    offset: float,
    policy: str,
    cap: int,
    max_ticks: int,
    lag: float,
    grace: float,
    data: st.DataObject,
) -> None:
    """From a random watermark, plan as the worker does (feeding back each new watermark, with
    now advancing a little between plans, then standing still) until caught up. Every tick
    between the first watermark and the last one is a run exactly once, or was passed over by a
    plan in which it was older than the grace and the policy drops it: ``skip`` any missed
    tick, ``coalesce`` all but the latest, ``backfill`` all but the latest ``cap``."""
    expression, zone, interval = schedule
    cron = CronSchedule.parse(expression, zone)
    seconds = interval * (lag if interval < 60 else lag / 10)
    grace_seconds = grace * interval if interval < 3600 else grace * 60
    first = cron.next_after(start + timedelta(seconds=offset * interval))
    now = first + timedelta(seconds=seconds)
    watermark = first
    run: list[datetime] = []
    missed_runs: list[datetime] = []  # the runs of ticks older than the grace of their plan
    drops: list[tuple[datetime, datetime]] = []  # (a tick passed over, that plan's grace start)
    calls = 0
    while watermark <= now:
        calls += 1
        assert calls <= 400, "no progress"
        result = plan(
            cron, watermark, now, policy, grace=grace_seconds, cap=cap, max_ticks=max_ticks
        )
        ticks = result.ticks
        assert len(ticks) <= max_ticks
        assert ticks == sorted(set(ticks))
        assert all(watermark <= t <= now and is_fire_time(cron, t) for t in ticks)
        assert is_fire_time(cron, result.next_fire_at)
        if result.next_fire_at <= now:  # stopped early: a full plan, the job still due
            assert len(ticks) == max_ticks and result.next_fire_at == cron.next_after(ticks[-1])
        else:
            assert result.next_fire_at == cron.next_after(now)
        passed = cron.fire_times_between(watermark - EPSILON, result.next_fire_at - EPSILON, 10**6)
        assert set(ticks) <= set(passed)
        latest_due = max((t for t in passed if t <= now), default=None)
        for dropped in sorted(set(passed) - set(ticks)):
            age = now - dropped
            assert age > timedelta(seconds=grace_seconds), f"on-time tick {dropped} dropped"
            if dropped == latest_due:
                assert age > scaled_grace(cron, dropped), f"latest tick {dropped} dropped"
            drops.append((dropped, now - timedelta(seconds=grace_seconds)))
        run += ticks
        missed_runs += [t for t in ticks if now - t > timedelta(seconds=grace_seconds)]
        watermark = result.next_fire_at
        if calls <= 3:
            now += timedelta(seconds=data.draw(st.floats(0, interval), label="advance"))
    assert run == sorted(set(run))  # no tick twice
    for dropped, grace_start in drops:
        # Missed ticks run after it, in that plan or the next ones (a full plan stops early):
        # ticks already missed when it was dropped, or missed by the time a later plan ran them
        # (with now advancing, a plan that stopped early may leave a kept tick to a plan for which
        # newer ticks are missed too, and that plan keeps the newest).
        later = sum(dropped < t and (t < grace_start or t in missed_runs) for t in run)
        if policy == "coalesce":
            assert later >= 1, f"{dropped} dropped with no later missed run"
        elif policy == "backfill":
            assert later >= cap, f"{dropped} dropped with fewer than {cap} later missed runs"
    assert watermark == cron.next_after(now)


def test_a_tick_a_stopped_plan_kept_for_backfill_gives_way_to_newer_missed_ones() -> None:
    """Hypothesis's find: ``backfill`` with a cap of 2, plans of one tick. The first plan keeps
    the two latest missed ticks (02:42, 02:49), runs 02:42 and stops. 6 s later, 02:56 and 03:00
    are missed too, and the next plan keeps those two: 02:49 is dropped, and the backlog still
    runs at least two missed ticks after every tick it dropped."""
    cron = CronSchedule.parse("*/7 * * * * *", "UTC")  # seconds 0, 7, ... 56 of each minute
    first = datetime(2026, 1, 5, 0, 0, 7, tzinfo=UTC)
    now = first + timedelta(seconds=218.75)  # 00:03:45.75; the grace, 50.75 s, from 00:02:55
    one = plan(cron, first, now, "backfill", grace=50.75, cap=2, max_ticks=1)
    assert [t.strftime("%M:%S") for t in one.ticks] == ["02:42"]
    assert one.next_fire_at.strftime("%M:%S") == "02:49"

    later = now + timedelta(seconds=6)
    two = plan(cron, one.next_fire_at, later, "backfill", grace=50.75, cap=2, max_ticks=1)
    assert [t.strftime("%M:%S") for t in two.ticks] == ["02:56"]
    assert two.next_fire_at.strftime("%M:%S") == "03:00"


# --- through a worker and the database --------------------------------------------------------


@pytest.fixture
def workers(dsn: str, tmp_path: Path) -> Iterator[Workers]:
    with worker_pool(dsn, tmp_path) as pool:
        yield pool


def test_a_worker_catches_up_on_more_on_time_ticks_than_one_plan_holds(
    dsn: str, workers: Workers
) -> None:
    """10,500 ticks within a 6-hour grace: the worker's first plan inserts 10,000 runs and leaves
    the job due, its next one inserts the rest. Its queue is elsewhere, so the runs stay queued
    and only their existence is counted: one per second, none missing."""
    job = "t-misfire-backfill"
    args = ("--misfire-grace", "21600", "--queue", "elsewhere")
    first = workers.start([job], *args)
    workers.wait_registered(first)
    assert first.stop() == 0
    start = scalar(
        dsn,
        "UPDATE pgjobs.jobs SET next_fire_at = date_trunc('second', now()) - interval '10500 s' "
        "WHERE name = %s RETURNING next_fire_at",
        job,
    )
    second = workers.start([job], *args)
    workers.wait_registered(second)
    wait_until(
        lambda: scalar(dsn, "SELECT next_fire_at > now() FROM pgjobs.jobs WHERE name = %s", job),
        60,
        "the job to catch up",
    )
    assert second.stop() == 0
    count, first_tick, last_tick = rows(
        dsn,
        "SELECT count(*), min(scheduled_for), max(scheduled_for) FROM pgjobs.runs "
        "WHERE job = %s AND scheduled_for >= %s",
        job,
        start,
    )[0]
    assert first_tick == start
    assert count > 10_500
    assert count == (last_tick - first_tick).total_seconds() + 1  # one run a second, no gap


# -- who ticks first -----------------------------------------------------------------------------


def test_due_at_one_instant_the_oftenest_schedule_is_locked_first(conn: psycopg.Connection) -> None:
    # A thousand jobs firing every minute and one every second, all due at second 0: the
    # every-second job comes first, whatever the jobs' names or the order they were written in.
    queries = Queries("pgjobs")
    add_worker(conn, "w1", [])
    due = "date_trunc('minute', now())"
    conn.execute(
        "INSERT INTO pgjobs.jobs (name, extension, schedule, next_fire_at, last_tick_at) "
        f"SELECT format('a-minute-%s', i), 'a', '0 * * * * *', {due}, {due} - interval '1 minute' "
        "FROM generate_series(1, 1000) i"
    )
    conn.execute(
        "INSERT INTO pgjobs.jobs (name, extension, schedule, next_fire_at, last_tick_at) "
        f"VALUES ('z-second', 'z', '* * * * * *', {due}, {due} - interval '1 second'), "
        f"('z-new', 'z', '0 * * * * *', {due}, NULL)"
    )
    conn.execute(
        "INSERT INTO pgjobs.worker_jobs (worker_id, job, schedule) "
        "SELECT 'w1', name, schedule FROM pgjobs.jobs"
    )
    conn.execute(
        "INSERT INTO pgjobs.schedules (job, name, cron, next_fire_at, last_tick_at) "
        f"SELECT 'a-minute-1', format('m%s', i), '0 * * * * *', {due}, "
        f"{due} - interval '1 minute' FROM generate_series(1, 100) i "
        f"UNION ALL SELECT 'a-minute-1', 's', '* * * * * *', {due}, {due} - interval '1 second'"
    )

    with conn.transaction():
        jobs = conn.execute(
            queries["lock_due_jobs_oftenest_first"], {"worker": "w1", "limit": 3}
        ).fetchall()
        schedules = conn.execute(
            queries["lock_due_schedules_oftenest_first"], {"worker": "w1", "limit": 1}
        ).fetchall()
    assert jobs[0][0] == "z-second"
    assert "z-new" not in [j[0] for j in jobs]  # no tick yet: its period is unknown, so last
    assert schedules[0][1] == "s"
