"""Cron schedules: the format, the fire times, the DST rule and the error messages."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pgjobs.errors import ConfigError, CronError
from pgjobs.schedule import CronSchedule, validate_timezone

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
# A Monday, mid-minute, so "strictly after" and rounding both matter.
SEED_AFTER = datetime(2026, 1, 5, 10, 7, 30, tzinfo=UTC)


def local(zone: tzinfo, year: int, month: int, day: int, *hms: int, fold: int = 0) -> datetime:
    hour, minute, second, microsecond = (*hms, 0, 0, 0, 0)[:4]
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=zone, fold=fold)


def utc(year: int, month: int, day: int, *hms: int) -> datetime:
    return local(UTC, year, month, day, *hms)


def in_zone(times: list[datetime], zone: ZoneInfo) -> list[str]:
    return [t.astimezone(zone).isoformat() for t in times]


# --- the seed guide's examples ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "meaning", "expected"),
    [
        (
            "0 0 * * * *",
            "every hour",
            [utc(2026, 1, 5, 11), utc(2026, 1, 5, 12), utc(2026, 1, 5, 13)],
        ),
        (
            "0 */15 * * * *",
            "every 15 minutes",
            [utc(2026, 1, 5, 10, 15), utc(2026, 1, 5, 10, 30), utc(2026, 1, 5, 10, 45)],
        ),
        (
            "0 0 0 * * *",
            "daily at 00:00",
            [utc(2026, 1, 6), utc(2026, 1, 7), utc(2026, 1, 8)],
        ),
        (
            "0 30 2 * * *",
            "daily at 02:30",
            [utc(2026, 1, 6, 2, 30), utc(2026, 1, 7, 2, 30), utc(2026, 1, 8, 2, 30)],
        ),
        (
            "0 0 0 * * 1",
            "every Monday at 00:00",
            [utc(2026, 1, 12), utc(2026, 1, 19), utc(2026, 1, 26)],
        ),
    ],
)
def test_the_seed_examples_fire_when_the_guide_says(
    expression: str, meaning: str, expected: list[datetime]
) -> None:
    schedule = CronSchedule.parse(expression)
    assert schedule.fire_times(SEED_AFTER, 3) == expected
    assert schedule.next_after(SEED_AFTER) == expected[0]
    assert schedule.describe() == meaning
    assert all(t.tzinfo is UTC for t in expected)


def test_fire_times_are_strictly_after_an_instant_that_is_itself_a_fire_time() -> None:
    hourly = CronSchedule.parse("0 0 * * * *")
    assert hourly.next_after(utc(2026, 1, 5, 11)) == utc(2026, 1, 5, 12)
    assert hourly.next_after(utc(2026, 1, 5, 10, 59, 59, 999999)) == utc(2026, 1, 5, 11)


def test_after_may_be_in_any_zone_and_results_are_always_utc() -> None:
    tokyo_after = SEED_AFTER.astimezone(ZoneInfo("Asia/Tokyo"))
    fires = CronSchedule.parse("0 */15 * * * *").fire_times(tokyo_after, 2)
    assert fires == [utc(2026, 1, 5, 10, 15), utc(2026, 1, 5, 10, 30)]
    assert all(t.tzinfo is UTC for t in fires)


def test_a_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        CronSchedule.parse("@hourly").next_after(datetime(2026, 1, 5))


def test_seconds_field_fires_within_a_minute() -> None:
    fires = CronSchedule.parse("*/20 * * * * *").fire_times(SEED_AFTER, 4)
    assert fires == [
        utc(2026, 1, 5, 10, 7, 40),
        utc(2026, 1, 5, 10, 8, 0),
        utc(2026, 1, 5, 10, 8, 20),
        utc(2026, 1, 5, 10, 8, 40),
    ]


# --- equivalent spellings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "six_fields"),
    [
        ("0 * * * *", "0 0 * * * *"),
        ("*/15 * * * *", "0 */15 * * * *"),
        ("30 2 * * *", "0 30 2 * * *"),
        ("@hourly", "0 0 * * * *"),
        ("@daily", "0 0 0 * * *"),
        ("@midnight", "0 0 0 * * *"),
        ("@weekly", "0 0 0 * * 0"),
        ("@monthly", "0 0 0 1 * *"),
        ("@yearly", "0 0 0 1 1 *"),
        ("@annually", "0 0 0 1 1 *"),
        ("@DAILY", "0 0 0 * * *"),
        ("  \t0 0 * * * *\n", "0 0 * * * *"),
        ("0 0 0 * * MON", "0 0 0 * * 1"),
        ("0 0 0 * * mon-fri", "0 0 0 * * 1-5"),
        ("0 0 0 1 JAN *", "0 0 0 1 1 *"),
        ("0 0 0 1 jan,Jul *", "0 0 0 1 1,7 *"),
        ("0 0 0 * * 7", "0 0 0 * * 0"),
        ("0 0 0 * * SUN", "0 0 0 * * 0"),
        ("0 0 0 * * 0-7", "0 0 0 * * *"),
        ("0 0 0 * * 1-7", "0 0 0 * * *"),
        ("0 0 0 * * 5-7", "0 0 0 * * 0,5,6"),
        ("0 0 0 * * SAT-SUN", "0 0 0 * * 0,6"),
        ("0 0 0 * * 7-1", "0 0 0 * * 0,1"),
        ("0 0 0 * * 3-3", "0 0 0 * * 3"),
        ("0 0 0 * * FRI-SUN", "0 0 0 * * 0,5,6"),
        ("0 0 0 * * 5-0", "0 0 0 * * 0,5,6"),
        ("0 0 0 * * SUN-SUN", "0 0 0 * * 0"),
        ("0 0 22-23,0-2 * * *", "0 0 0,1,2,22,23 * * *"),
        ("0 5/15 * * * *", "0 5,20,35,50 * * * *"),
        ("0 0 0 */10 * *", "0 0 0 1,11,21,31 * *"),
    ],
)
def test_equivalent_spellings_fire_at_the_same_times(spelling: str, six_fields: str) -> None:
    after = utc(2025, 12, 30, 22, 13, 7)
    assert CronSchedule.parse(spelling).fire_times(after, 12) == CronSchedule.parse(
        six_fields
    ).fire_times(after, 12)


def test_weekday_zero_and_seven_are_both_sunday() -> None:
    for expression in ("0 0 12 * * 0", "0 0 12 * * 7", "0 0 12 * * sun"):
        fires = CronSchedule.parse(expression).fire_times(SEED_AFTER, 3)
        assert fires == [utc(2026, 1, 11, 12), utc(2026, 1, 18, 12), utc(2026, 1, 25, 12)]
        assert {t.weekday() for t in fires} == {6}


def test_day_and_weekday_both_restricted_match_either_like_classic_cron() -> None:
    # The 13th of the month or any Friday.
    fires = CronSchedule.parse("0 0 0 13 * FRI").fire_times(SEED_AFTER, 4)
    assert fires == [utc(2026, 1, 9), utc(2026, 1, 13), utc(2026, 1, 16), utc(2026, 1, 23)]


def test_day_and_weekday_combine_by_what_the_fields_cover_not_by_how_they_are_spelled() -> None:
    """pgjobs' rule, not Vixie cron's: '*/2' restricts the day (odd days), so it is OR'ed with
    Monday (classic cron sees the leading '*' and ANDs: odd Mondays only); '1-31' covers every day,
    so only the weekday restricts (classic cron sees no '*' and ORs: every day)."""
    after = utc(2026, 5, 31, 13)  # Sunday; June 2026 starts on a Monday
    odd_days_or_mondays = CronSchedule.parse("0 0 12 */2 * MON").fire_times(after, 6)
    assert [t.day for t in odd_days_or_mondays] == [1, 3, 5, 7, 8, 9]
    assert CronSchedule.parse("0 0 12 1-31 * MON").fire_times(after, 3) == [
        utc(2026, 6, 1, 12),
        utc(2026, 6, 8, 12),
        utc(2026, 6, 15, 12),
    ]
    assert CronSchedule.parse("0 0 12 1-31 * MON").fire_times(after, 3) == CronSchedule.parse(
        "0 0 12 * * MON"
    ).fire_times(after, 3)


def test_february_29th_fires_in_leap_years_only() -> None:
    fires = CronSchedule.parse("0 0 0 29 2 *").fire_times(SEED_AFTER, 2)
    assert fires == [utc(2028, 2, 29), utc(2032, 2, 29)]


# --- the DST rule -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "day_before", "expected"),
    [
        (
            BERLIN,  # 2026-03-29 02:00 CET -> 03:00 CEST
            local(BERLIN, 2026, 3, 27, 12),
            [
                "2026-03-28T02:30:00+01:00",
                "2026-03-30T02:30:00+02:00",
                "2026-03-31T02:30:00+02:00",
            ],
        ),
        (
            NEW_YORK,  # 2026-03-08 02:00 EST -> 03:00 EDT
            local(NEW_YORK, 2026, 3, 6, 12),
            [
                "2026-03-07T02:30:00-05:00",
                "2026-03-09T02:30:00-04:00",
                "2026-03-10T02:30:00-04:00",
            ],
        ),
    ],
)
def test_a_daily_job_at_a_skipped_local_time_does_not_fire_that_day(
    zone: ZoneInfo, day_before: datetime, expected: list[str]
) -> None:
    schedule = CronSchedule.parse("0 30 2 * * *", zone.key)
    assert in_zone(schedule.fire_times(day_before, 3), zone) == expected


@pytest.mark.parametrize(
    ("zone", "expression", "day_before", "expected"),
    [
        (
            BERLIN,  # 2026-10-25 03:00 CEST -> 02:00 CET: 02:00-02:59 happens twice
            "0 30 2 * * *",
            local(BERLIN, 2026, 10, 24, 12),
            [
                "2026-10-25T02:30:00+02:00",
                "2026-10-26T02:30:00+01:00",
                "2026-10-27T02:30:00+01:00",
            ],
        ),
        (
            NEW_YORK,  # 2026-11-01 02:00 EDT -> 01:00 EST: 01:00-01:59 happens twice
            "0 30 1 * * *",
            local(NEW_YORK, 2026, 10, 31, 12),
            [
                "2026-11-01T01:30:00-04:00",
                "2026-11-02T01:30:00-05:00",
                "2026-11-03T01:30:00-05:00",
            ],
        ),
    ],
)
def test_a_daily_job_at_a_repeated_local_time_fires_once_at_its_first_occurrence(
    zone: ZoneInfo, expression: str, day_before: datetime, expected: list[str]
) -> None:
    schedule = CronSchedule.parse(expression, zone.key)
    assert in_zone(schedule.fire_times(day_before, 3), zone) == expected


@pytest.mark.parametrize(
    ("zone", "repeated_hour"),
    [(BERLIN, (2026, 10, 25, 2)), (NEW_YORK, (2026, 11, 1, 1))],
)
def test_an_instant_in_the_second_pass_of_a_repeated_hour_does_not_fire_it_again(
    zone: ZoneInfo, repeated_hour: tuple[int, int, int, int]
) -> None:
    schedule = CronSchedule.parse(f"0 30 {repeated_hour[3]} * * *", zone.key)
    first_pass = local(zone, *repeated_hour, 40)
    second_pass = local(zone, *repeated_hour, 10, fold=1)
    assert first_pass.astimezone(UTC) < second_pass.astimezone(UTC)
    next_day = local(zone, *repeated_hour[:2], repeated_hour[2] + 1, repeated_hour[3], 30)
    assert schedule.next_after(first_pass) == next_day
    assert schedule.next_after(second_pass) == next_day
    assert schedule.next_after(local(zone, *repeated_hour, 30)) == next_day


def test_every_15_minutes_in_berlin_fires_the_repeated_hour_once() -> None:
    schedule = CronSchedule.parse("0 */15 * * * *", "Europe/Berlin")
    fires = schedule.fire_times(local(BERLIN, 2026, 10, 25, 1, 40), 7)
    assert in_zone(fires, BERLIN) == [
        "2026-10-25T01:45:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:15:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:45:00+02:00",
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T03:15:00+01:00",
    ]
    # Starting inside the second pass resumes after it, never back in the first.
    second_pass = local(BERLIN, 2026, 10, 25, 2, 20, fold=1)
    assert in_zone(schedule.fire_times(second_pass, 2), BERLIN) == [
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T03:15:00+01:00",
    ]


def test_every_15_minutes_in_berlin_skips_the_missing_hour() -> None:
    schedule = CronSchedule.parse("0 */15 * * * *", "Europe/Berlin")
    fires = schedule.fire_times(local(BERLIN, 2026, 3, 29, 1, 40), 3)
    assert in_zone(fires, BERLIN) == [
        "2026-03-29T01:45:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:15:00+02:00",
    ]


def test_every_15_minutes_in_new_york_across_both_transitions() -> None:
    schedule = CronSchedule.parse("0 */15 * * * *", "America/New_York")
    spring = schedule.fire_times(local(NEW_YORK, 2026, 3, 8, 1, 40), 3)
    assert in_zone(spring, NEW_YORK) == [
        "2026-03-08T01:45:00-05:00",
        "2026-03-08T03:00:00-04:00",
        "2026-03-08T03:15:00-04:00",
    ]
    autumn = schedule.fire_times(local(NEW_YORK, 2026, 11, 1, 0, 50), 7)
    assert in_zone(autumn, NEW_YORK) == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:15:00-04:00",
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:45:00-04:00",
        "2026-11-01T02:00:00-05:00",
        "2026-11-01T02:15:00-05:00",
        "2026-11-01T02:30:00-05:00",
    ]


def test_daily_skips_the_day_whose_midnight_does_not_exist() -> None:
    """America/Santiago springs forward at midnight: 2026-09-06 starts at 01:00, so '@daily'
    (00:00) does not fire that day at all; the day before and after it does."""
    santiago = ZoneInfo("America/Santiago")
    fires = CronSchedule.parse("@daily", "America/Santiago").fire_times(utc(2026, 9, 4, 12), 3)
    assert in_zone(fires, santiago) == [
        "2026-09-05T00:00:00-04:00",
        "2026-09-07T00:00:00-03:00",
        "2026-09-08T00:00:00-03:00",
    ]
    assert fires[1] - fires[0] == timedelta(hours=47)


def test_an_hourly_job_has_a_two_hour_gap_when_clocks_fall_back() -> None:
    """Berlin, 2026-10-25: 02:00 CEST fires, the repeated 02:00 (CET) does not, 03:00 CET is
    next: two hours of real time between two runs of an hourly job."""
    fires = CronSchedule.parse("@hourly", "Europe/Berlin").fire_times(utc(2026, 10, 24, 22, 30), 4)
    assert in_zone(fires, BERLIN) == [
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T04:00:00+01:00",
    ]
    gaps = [b - a for a, b in itertools.pairwise(fires)]
    assert gaps == [timedelta(hours=1), timedelta(hours=2), timedelta(hours=1)]


def test_a_month_of_a_daily_job_around_spring_forward_loses_exactly_one_run() -> None:
    schedule = CronSchedule.parse("0 30 2 * * *", "Europe/Berlin")
    march = schedule.fire_times_between(
        local(BERLIN, 2026, 3, 1), local(BERLIN, 2026, 4, 1), limit=100
    )
    assert len(march) == 30
    assert local(BERLIN, 2026, 3, 29).date() not in {t.astimezone(BERLIN).date() for t in march}


# --- fire_times_between -----------------------------------------------------------------------


def test_fire_times_between_excludes_after_includes_until_and_keeps_the_earliest() -> None:
    hourly = CronSchedule.parse("@hourly")
    after, until = utc(2026, 1, 5, 10), utc(2026, 1, 5, 13)
    assert hourly.fire_times_between(after, until, 10) == [
        utc(2026, 1, 5, 11),
        utc(2026, 1, 5, 12),
        utc(2026, 1, 5, 13),
    ]
    assert hourly.fire_times_between(after, until, 2) == [utc(2026, 1, 5, 11), utc(2026, 1, 5, 12)]
    assert hourly.fire_times_between(after, until, 0) == []
    assert hourly.fire_times_between(until, after, 10) == []
    assert hourly.fire_times_between(after, after, 10) == []
    assert hourly.fire_times_between(after, utc(2026, 1, 5, 10, 59), 10) == []


def test_negative_counts_are_refused() -> None:
    hourly = CronSchedule.parse("@hourly")
    with pytest.raises(ValueError):
        hourly.fire_times(SEED_AFTER, -1)
    with pytest.raises(ValueError):
        hourly.fire_times_between(SEED_AFTER, SEED_AFTER, -1)
    assert hourly.fire_times(SEED_AFTER, 0) == []


def test_previous_fire_times_are_the_latest_at_or_before_until_oldest_first() -> None:
    hourly = CronSchedule.parse("@hourly")
    assert hourly.previous_fire_times(utc(2026, 1, 5, 11), 3) == [
        utc(2026, 1, 5, 9),
        utc(2026, 1, 5, 10),
        utc(2026, 1, 5, 11),
    ]
    assert hourly.previous_fire_times(utc(2026, 1, 5, 10, 59, 59), 1) == [utc(2026, 1, 5, 10)]
    assert hourly.previous_fire_times(SEED_AFTER, 0) == []
    with pytest.raises(ValueError):
        hourly.previous_fire_times(SEED_AFTER, -1)


def test_previous_fire_times_stop_at_the_start_of_the_calendar() -> None:
    yearly = CronSchedule.parse("@yearly").previous_fire_times(utc(2026, 1, 5), 5000)
    assert len(yearly) == 2026
    assert yearly[0] == utc(1, 1, 1)


def test_previous_fire_times_follow_the_dst_rule() -> None:
    schedule = CronSchedule.parse("0 */15 * * * *", "Europe/Berlin")
    second_pass = local(BERLIN, 2026, 10, 25, 2, 10, fold=1)
    assert in_zone(schedule.previous_fire_times(second_pass, 3), BERLIN) == [
        "2026-10-25T02:15:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:45:00+02:00",
    ]
    first_pass = local(BERLIN, 2026, 10, 25, 2, 20)
    assert in_zone(schedule.previous_fire_times(first_pass, 3), BERLIN) == [
        "2026-10-25T01:45:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:15:00+02:00",
    ]
    after_gap = local(BERLIN, 2026, 3, 29, 3, 10)
    assert in_zone(schedule.previous_fire_times(after_gap, 3), BERLIN) == [
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T01:45:00+01:00",
        "2026-03-29T03:00:00+02:00",
    ]


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "invalid cron '': the expression is empty"),
        ("   ", "the expression is empty"),
        ("1 2 3 4", "invalid cron '1 2 3 4': expected 5 or 6 fields, got 4"),
        ("0 0 0 1 1 * 2026", "expected 5 or 6 fields, got 7"),
        ("60 * * * * *", "second field '60' is out of range 0-59"),
        ("0 61 * * * *", "invalid cron '0 61 * * * *': minute field '61' is out of range 0-59"),
        ("0 0 24 * * *", "hour field '24' is out of range 0-23"),
        ("0 0 0 0 * *", "day field '0' is out of range 1-31"),
        ("0 0 0 32 * *", "day field '32' is out of range 1-31"),
        ("0 0 0 * 0 *", "month field '0' is out of range 1-12"),
        ("0 0 0 * 13 *", "month field '13' is out of range 1-12"),
        ("0 0 0 * * 8", "weekday field '8' is out of range 0-7"),
        ("60 * * * *", "minute field '60' is out of range 0-59"),
        ("0 5,61 * * * *", "minute field '5,61': '61' is out of range 0-59"),
        ("0 5-61 * * * *", "minute field '5-61': '61' is out of range 0-59"),
        (
            "0 0 * * * FOO",
            "invalid cron '0 0 * * * FOO': weekday field 'FOO' is not a number, range or name",
        ),
        ("0 0 0 * FOO *", "month field 'FOO' is not a number, range or name"),
        ("0 0 0 * * MONDAY", "weekday field 'MONDAY' is not a number, range or name"),
        ("0 0 MON * * *", "hour field 'MON' is not a number or range"),
        ("0 0 0 L * *", "day field 'L' is not a number or range"),
        ("0 0 0 ? * *", "day field '?' is not a number or range"),
        ("0 0 0 * * 1#2", "weekday field '1#2' is not a number, range or name"),
        ("0 0 0 * * 1-", "weekday field '1-' is not a number, range or name"),
        ("0 -1 * * * *", "minute field '-1' is not a number or range"),
        ("0 ** * * * *", "minute field '**' is not a number or range"),
        ("0 \u00b2 * * * *", "minute field '\u00b2' is not a number or range"),
        ("*/0 * * * * *", "second field '*/0' has step '0'; the step must be 1-59"),
        ("0 */60 * * * *", "minute field '*/60' has step '60'; the step must be 1-59"),
        ("0 0 */x * * *", "hour field '*/x' has step 'x'; the step must be 1-23"),
        ("0 0 1-5/ * * *", "hour field '1-5/' has step ''; the step must be 1-23"),
        ("0 1,,2 * * * *", "minute field '1,,2' has an empty list item"),
        ("0 1, * * * *", "minute field '1,' has an empty list item"),
        ("0 0 0 30 2 *", "day field '30' never occurs in month field '2'"),
        ("1-0 * * * * *", "second field '1-0' is a reversed range: a range runs from low to high"),
        ("0 1-0 * * * *", "minute field '1-0' is a reversed range"),
        ("0 0 22-2 * * *", "hour field '22-2' is a reversed range"),
        ("0 0 0 2-1 * *", "day field '2-1' is a reversed range"),
        ("0 0 0 1 NOV-FEB *", "to span the end of the field write 'NOV-DEC,JAN-FEB'"),
        ("0 0 0 * * FRI-MON", "weekday field 'FRI-MON' is a reversed range"),
        ("0 0 0 * * 6-1", "to span the end of the field write '6,0-1'"),
        ("0 0 1,23-0 * * *", "hour field '1,23-0': '23-0' is a reversed range"),
        ("0 50-10/5 * * * *", "split it into two ranges, each with its own step"),
        ("0 0 0 31 APR,JUN *", "day field '31' never occurs in month field 'APR,JUN'"),
        ("@fortnightly", "unknown macro '@fortnightly' (known: @yearly,"),
        ("@reboot", "unknown macro '@reboot'"),
    ],
)
def test_an_invalid_expression_names_the_field_and_why(expression: str, message: str) -> None:
    with pytest.raises(CronError) as caught:
        CronSchedule.parse(expression)
    text = str(caught.value)
    assert message in text
    assert text.startswith(f"invalid cron '{expression}': ")
    assert "\n" not in text
    assert isinstance(caught.value, ConfigError)


FIELD_NAMES = ("second", "minute", "hour", "day", "month", "weekday")


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_every_reversed_range_in_every_field_is_refused(data: st.DataObject) -> None:
    """A range ``a-b`` with ``a > b`` would wrap round the field (``1-0`` is every second):
    refused, naming the field. Weekday ranges may end on Sunday (``FRI-SUN``, ``5-0``)."""
    index = data.draw(st.integers(0, 5))
    low, high = FIELD_SPECS[index][:2]
    last = data.draw(st.integers(low + (index == 5), high - 1), label="last")
    first = data.draw(st.integers(last + 1, high), label="first")
    step = data.draw(st.sampled_from(["", "/1", "/2"]), label="step")
    fields = ["0", "0", "0", "*", "*", "*"]
    item = f"{first}-{last}{step}"
    fields[index] = f"1,{item}" if data.draw(st.booleans()) else item
    expression = " ".join(fields)
    with pytest.raises(CronError) as caught:
        CronSchedule.parse(expression)
    assert f"{FIELD_NAMES[index]} field '{fields[index]}'" in str(caught.value)
    assert f"'{item}' is a reversed range" in str(caught.value)


@pytest.mark.parametrize("expression", [5, None, b"0 0 * * *", ["0", "0"]])
def test_a_non_string_expression_is_a_cron_error(expression: object) -> None:
    with pytest.raises(CronError, match=f"expected a string, got {type(expression).__name__}"):
        CronSchedule.parse(expression)  # type: ignore[arg-type]


def test_constructing_directly_validates_too() -> None:
    with pytest.raises(CronError, match="minute field '61'"):
        CronSchedule("0 61 * * * *")


@pytest.mark.parametrize("name", ["Mars/Base", "", "../etc/passwd", "/etc/localtime", "Europe"])
def test_an_unknown_timezone_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown timezone '{name}': ") as caught:
        CronSchedule.parse("@daily", name)
    assert not isinstance(caught.value, CronError)
    with pytest.raises(ConfigError, match="unknown timezone"):
        validate_timezone(name)


def test_validate_timezone_returns_the_zone() -> None:
    assert validate_timezone("Europe/Berlin") == BERLIN


@pytest.mark.parametrize("name", ["UTC", "Etc/UTC", "Europe/Berlin", "US/Eastern", "Etc/GMT+5"])
def test_iana_names_and_their_links_are_accepted(name: str) -> None:
    assert validate_timezone(name).key == name
    assert CronSchedule.parse("@daily", name).timezone == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("localtime", "it is the host's own zone, so workers on hosts in different zones"),
        ("posixrules", "it is the host's rule for POSIX TZ strings, not a zone"),
        ("Factory", "it is tzdata's placeholder for a zone that was never set"),
        ("posix/Europe/Berlin", "it is a copy of 'Europe/Berlin' that exists on some hosts only"),
        ("right/Europe/Berlin", "it is a leap-second variant of 'Europe/Berlin'"),
        ("right/UTC", "write 'UTC'"),
    ],
)
def test_names_that_mean_something_else_on_each_host_are_refused(name: str, reason: str) -> None:
    """``ZoneInfo`` resolves these on Debian (``localtime`` is the host's /etc/localtime), so
    replicas whose hosts are set to different zones would tick at different instants."""
    for check in (validate_timezone, lambda zone: CronSchedule.parse("@daily", zone)):
        with pytest.raises(ConfigError) as caught:
            check(name)
        message = str(caught.value)
        assert message.startswith(f"timezone '{name}' is not allowed: "), message
        assert reason in message
        assert "\n" not in message


def _registration_error(timezone: str) -> str:
    from pgjobs import Extension, Job, JobContext, JobResult
    from pgjobs.errors import RegistrationError
    from pgjobs.registry import Registry

    async def execute(self: Job, ctx: JobContext) -> JobResult:
        return JobResult.success()

    job_cls = type("TzJob", (Job,), {"name": "tz-job", "execute": execute, "timezone": timezone})
    ext_cls = type("TzExt", (Extension,), {"name": "tz", "jobs": lambda self: [job_cls()]})
    with pytest.raises(RegistrationError) as caught:
        Registry.build([ext_cls()])
    return str(caught.value)


def test_a_job_class_with_the_hosts_zone_is_refused_at_registration() -> None:
    message = _registration_error("localtime")
    assert message.startswith(
        "extension 'tz', job 'tz-job': timezone 'localtime' is not allowed: it is the host's own"
    )
    assert "\n" not in message
    assert "unknown timezone 'posix/Asia/Tokyo'" not in _registration_error("posix/Asia/Tokyo")
    assert "write 'Asia/Tokyo'" in _registration_error("posix/Asia/Tokyo")


def test_a_profile_timezone_of_the_host_is_refused_at_its_file_and_line(
    dsn: str, tmp_path: Path
) -> None:
    from tests.cli import APP, one_line_error, run_pgjobs

    profile = tmp_path / "profile.yaml"
    profile.write_text("scheduler:\n  jobs:\n    - job: t-tick\n      timezone: localtime\n")
    proc = run_pgjobs(dsn, "worker", "--app", APP, "--profile", str(profile), jobs="t-tick")
    assert proc.returncode != 0
    line = one_line_error(proc)
    assert f"{profile}:4: scheduler.jobs[0].timezone: timezone 'localtime' is not allowed" in line


# --- value semantics and description ----------------------------------------------------------


def test_a_schedule_is_a_value_compared_by_expression_and_timezone() -> None:
    a = CronSchedule.parse("@daily", "Europe/Berlin")
    assert a == CronSchedule("@daily", "Europe/Berlin")
    assert a != CronSchedule("@daily")
    assert len({a, CronSchedule("@daily", "Europe/Berlin")}) == 1
    assert repr(a) == "CronSchedule(expression='@daily', timezone='Europe/Berlin')"
    assert CronSchedule.parse(" @daily ").expression == " @daily "


@pytest.mark.parametrize(
    ("expression", "timezone", "description"),
    [
        ("* * * * * *", "UTC", "every second"),
        ("*/10 * * * * *", "UTC", "every 10 seconds"),
        ("* * * * *", "UTC", "every minute"),
        ("@hourly", "UTC", "every hour"),
        ("*/5 * * * *", "UTC", "every 5 minutes"),
        ("0 30 * * * *", "UTC", "every hour at minute 30"),
        ("0 0 */6 * * *", "UTC", "every 6 hours"),
        ("0 30 2 * * *", "Europe/Berlin", "daily at 02:30 (Europe/Berlin)"),
        ("15 30 2 * * *", "UTC", "daily at 02:30:15"),
        ("0 0 9 * * MON-FRI", "UTC", "every Monday to Friday at 09:00"),
        ("0 0 9 * * SAT,SUN", "UTC", "every Saturday and Sunday at 09:00"),
        ("0 0 9 * * 1,3,5", "UTC", "every Monday, Wednesday and Friday at 09:00"),
        ("@weekly", "UTC", "every Sunday at 00:00"),
        ("@monthly", "UTC", "monthly on day 1 at 00:00"),
        ("@yearly", "UTC", "yearly on January 1 at 00:00"),
        ("0 */7 * * * *", "UTC", "0 */7 * * * *"),
        (" 0 0 0 13 * FRI ", "UTC", "0 0 0 13 * FRI"),
    ],
)
def test_describe_says_it_in_english_or_falls_back_to_the_expression(
    expression: str, timezone: str, description: str
) -> None:
    assert CronSchedule.parse(expression, timezone).describe() == description


# --- properties -------------------------------------------------------------------------------

# (low, highest distinct value, names); weekday 7 is only ever written, never a value.
FIELD_SPECS = [
    (0, 59, []),
    (0, 59, []),
    (0, 23, []),
    (1, 31, []),
    (1, 12, ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]),
    (0, 6, ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]),
]
# Each zone's 2026 transitions, in UTC (UTC and Kolkata have none).
TRANSITIONS: dict[str, list[datetime]] = {
    "UTC": [],
    "Asia/Kolkata": [],
    "Europe/Berlin": [utc(2026, 3, 29, 1), utc(2026, 10, 25, 1)],
    "America/New_York": [utc(2026, 3, 8, 7), utc(2026, 11, 1, 6)],
    "Australia/Lord_Howe": [utc(2026, 4, 4, 15), utc(2026, 10, 3, 15, 30)],  # 30-minute shifts
}
ZONES_WITH_DST = [zone for zone, transitions in TRANSITIONS.items() if transitions]


@st.composite
def field_forms(draw: st.DrawFn, index: int) -> tuple[str, frozenset[int]]:
    """A random spelling of one field and the set of values it must mean."""
    low, high, names = FIELD_SPECS[index]
    size = high - low + 1
    weekday = index == 5
    values = st.integers(low, high)

    def spell(value: int) -> str:
        if len(names) > 0 and draw(st.booleans()):
            name = names[value - low]
            return draw(st.sampled_from([name, name.lower(), name.title()]))
        if weekday and value == 0 and draw(st.booleans()):
            return "7"
        return str(value)

    kind = draw(st.sampled_from(["star", "value", "list", "range", "star_step", "start_step"]))
    if kind == "star":
        return "*", frozenset(range(low, high + 1))
    if kind == "value":
        value = draw(values)
        return spell(value), frozenset({value})
    if kind == "list":
        chosen = draw(st.lists(values, min_size=1, max_size=4))
        return ",".join(spell(v) for v in chosen), frozenset(chosen)
    if kind == "range":
        first, last = sorted((draw(values), draw(values)))
        walk = list(range(first, last + 1))
        text = f"{spell(first)}-{spell(last)}"
        if weekday and last == 0:  # '0-7' is every day, Sunday to Sunday: spell Sunday alone
            text = draw(st.sampled_from(["0-0", "SUN-SUN", "7-7", "7-0", "sun-0"]))
        if weekday and first > 0 and draw(st.booleans()):
            # A weekday range may end on Sunday, written 0, 7 or SUN: 'FRI-SUN' is 5, 6, 0.
            walk = [*range(first, 7), 0]
            text = f"{spell(first)}-{draw(st.sampled_from(['0', '7', 'SUN', 'sun']))}"
        if draw(st.booleans()):
            step = draw(st.integers(1, size - 1))
            return f"{text}/{step}", frozenset(walk[::step])
        return text, frozenset(walk)
    step = draw(st.integers(1, size - 1))
    if kind == "star_step":
        return f"*/{step}", frozenset(range(low, high + 1, step))
    first = draw(values)
    return f"{spell(first)}/{step}", frozenset(range(first, high + 1, step))


@st.composite
def expressions(
    draw: st.DrawFn, single_second: bool = False, often_every_day: bool = False
) -> tuple[str, tuple[frozenset[int], ...]]:
    fields = [draw(field_forms(i)) for i in range(6)]
    if often_every_day and draw(st.booleans()):
        for i in (3, 4, 5):
            fields[i] = ("*", frozenset(range(FIELD_SPECS[i][0], FIELD_SPECS[i][1] + 1)))
    if single_second:
        second = draw(st.integers(0, 59))
        fields[0] = (str(second), frozenset({second}))
    texts = [text for text, _ in fields]
    if fields[0][1] == {0} and draw(st.booleans()):
        texts = texts[1:]  # the 5-field form
    return " ".join(texts), tuple(values for _, values in fields)


def matches(wall: datetime, sets: tuple[frozenset[int], ...]) -> bool:
    second, minute, hour, day, month, weekday = sets
    day_ok, weekday_ok = wall.day in day, wall.isoweekday() % 7 in weekday
    if len(day) < 31 and len(weekday) < 7:
        day_matches = day_ok or weekday_ok
    else:
        day_matches = day_ok and weekday_ok
    return (
        wall.second in second
        and wall.minute in minute
        and wall.hour in hour
        and wall.month in month
        and day_matches
    )


def schedule_or_skip(expression: str, zone: str) -> CronSchedule:
    try:
        return CronSchedule.parse(expression, zone)
    except CronError as err:
        assert "never occurs" in str(err)
        assume(False)
        raise


@st.composite
def zones_and_instants(draw: st.DrawFn) -> tuple[str, datetime]:
    """A zone, and an instant that is often within 90 minutes of one of its transitions."""
    zone = draw(st.sampled_from(list(TRANSITIONS)))
    if len(TRANSITIONS[zone]) > 0 and draw(st.booleans()):
        near = draw(st.sampled_from(TRANSITIONS[zone]))
        return zone, near + timedelta(seconds=draw(st.integers(-5400, 5400)))
    moment = draw(
        st.datetimes(datetime(2020, 1, 1), datetime(2035, 12, 31), timezones=st.just(UTC))
    )
    return zone, moment


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions(often_every_day=True), zones_and_instants())
def test_fire_times_increase_follow_after_and_match_the_expression_locally(
    generated: tuple[str, tuple[frozenset[int], ...]], zone_and_after: tuple[str, datetime]
) -> None:
    expression, sets = generated
    zone, after = zone_and_after
    schedule = schedule_or_skip(expression, zone)
    fires = schedule.fire_times(after, 5)
    assert all(t.tzinfo is UTC for t in fires)
    assert fires[0] > after
    assert all(a < b for a, b in itertools.pairwise(fires))
    for fire in fires:
        wall = fire.astimezone(ZoneInfo(zone))
        assert matches(wall, sets), (expression, wall)
        assert wall.fold == 0, "a repeated local time fires at its first occurrence only"
    assert schedule.next_after(after) == fires[0]
    # Looking back from `after` and forward again lands on the same fire times.
    earlier = schedule.previous_fire_times(after, 3)
    assert earlier, "every generated schedule fires within 50 years"
    assert earlier[-1] <= after < schedule.next_after(earlier[-1]) == fires[0]
    assert [schedule.next_after(t) for t in earlier[:-1]] == earlier[1:]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    expressions(single_second=True, often_every_day=True),
    st.sampled_from(ZONES_WITH_DST),
    st.integers(0, 1),
    # Half the time `after` is in the hour after the transition: the second pass of a repeated
    # hour, where wall times just ahead of `after` first occurred before it.
    st.one_of(st.integers(-20 * 3600, 0), st.integers(0, 3600)),
)
def test_around_a_transition_exactly_the_first_occurrence_of_each_matching_wall_time_fires(
    generated: tuple[str, tuple[frozenset[int], ...]],
    zone: str,
    which: int,
    offset: int,
) -> None:
    """Brute force: every UTC minute of two days around a transition, read in the zone."""
    expression, sets = generated
    transition = TRANSITIONS[zone][which]
    schedule = schedule_or_skip(expression, zone)
    tz = ZoneInfo(zone)
    pivot = (transition + timedelta(seconds=offset)).replace(second=min(sets[0]))
    start, end = pivot - timedelta(days=1), pivot + timedelta(days=1)
    expected = []
    instant = start + timedelta(minutes=1)
    while instant <= end:
        wall = instant.astimezone(tz)
        if wall.fold == 0 and matches(wall, sets):
            expected.append(instant)
        instant += timedelta(minutes=1)
    up_to_pivot = [t for t in expected if t <= pivot]
    assert schedule.fire_times_between(start, end, 4000) == expected
    assert schedule.fire_times_between(pivot, end, 4000) == expected[len(up_to_pivot) :]
    assert schedule.previous_fire_times(end, len(expected)) == expected
    assert schedule.previous_fire_times(pivot, len(up_to_pivot)) == up_to_pivot


def test_instants_in_a_repeated_hour_are_ordered_by_the_real_clock_not_the_wall() -> None:
    schedule = CronSchedule.parse("0 */15 * * * *", "Europe/Berlin")
    after = local(BERLIN, 2026, 10, 25, 2, 20)  # first pass, 00:20 UTC
    until = local(BERLIN, 2026, 10, 25, 2, 10, fold=1)  # second pass, 01:10 UTC
    assert in_zone(schedule.fire_times_between(after, until, 10), BERLIN) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:45:00+02:00",
    ]
