"""Schedules at runtime against a real Postgres: the Python API (sync and async, psycopg and
SQLAlchemy) adds, replaces, alters and removes schedules in the caller's transaction, checks the
cron and timezone first, and never aborts the caller's transaction; the SQL functions it calls
refuse what they should, with a clear message and no row, and tell the workers on commit."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus

import pgjobs
from pgjobs import ConfigError, CronError, Job, JobContext, JobResult, UnknownJobError
from tests.workers import rows, scalar

Conn = psycopg.Connection[Any]


@pytest.fixture
def jobs(conn: Conn) -> None:
    """Rows in ``jobs`` as a worker would register them: t-report has a schedule of its own."""
    conn.execute(
        "INSERT INTO pgjobs.jobs (name, extension, schedule, misfire) VALUES "
        "('t-echo', 't', NULL, 'coalesce'), ('t-report', 't', '0 0 * * * *', 'skip')"
    )


class Report(Job):
    name = "t-report"

    async def execute(self, ctx: JobContext) -> JobResult:
        return JobResult.success()


def schedules(dsn: str) -> list[tuple[Any, ...]]:
    return rows(
        dsn,
        "SELECT job, name, cron, timezone, payload, parameters, misfire, enabled, paused"
        " FROM pgjobs.schedules ORDER BY job, name",
    )


def count(dsn: str) -> int:
    return int(scalar(dsn, "SELECT count(*) FROM pgjobs.schedules"))


# -- adding, replacing, altering, removing ------------------------------------------------------


@pytest.mark.usefixtures("jobs")
def test_schedule_sync_adds_a_schedule_named_by_its_cron_when_committed(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        name = pgjobs.schedule_sync(conn, "t-echo", " */5 * * * * ")
        assert conn.info.transaction_status == TransactionStatus.INTRANS
        assert count(dsn) == 0, "visible before the caller commits"
        conn.commit()
    assert name == "*/5 * * * *"
    assert schedules(dsn) == [
        ("t-echo", "*/5 * * * *", "*/5 * * * *", "UTC", None, None, None, True, False)
    ]


@pytest.mark.usefixtures("jobs")
def test_schedule_on_an_async_connection_stores_every_setting(dsn: str) -> None:
    async def scenario() -> str:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            name = await pgjobs.schedule(
                conn,
                Report,
                "0 0 7 * * MON-FRI",
                name="weekday mornings",
                timezone="Europe/Paris",
                payload={"window": "1d"},
                parameters={"region": "eu"},
                misfire="backfill",
                enabled=False,
            )
            await conn.commit()
            return name

    assert asyncio.run(scenario()) == "weekday mornings"
    assert schedules(dsn) == [
        (
            "t-report",
            "weekday mornings",
            "0 0 7 * * MON-FRI",
            "Europe/Paris",
            {"window": "1d"},
            {"region": "eu"},
            "backfill",
            False,
            False,
        )
    ]


@pytest.mark.usefixtures("jobs")
def test_scheduling_an_existing_name_replaces_that_schedule(conn: Conn, dsn: str) -> None:
    pgjobs.schedule_sync(conn, Report(), "0 0 7 * * *", name="mornings", payload={"v": 1})
    pgjobs.schedule_sync(conn, "t-report", "0 30 8 * * *", name="mornings", timezone="Asia/Tokyo")
    pgjobs.schedule_sync(conn, "t-report", "0 0 12 * * *", name="noon")

    assert schedules(dsn) == [
        ("t-report", "mornings", "0 30 8 * * *", "Asia/Tokyo", None, None, None, True, False),
        ("t-report", "noon", "0 0 12 * * *", "UTC", None, None, None, True, False),
    ]


@pytest.mark.usefixtures("jobs")
def test_alter_schedule_changes_only_what_it_is_given(conn: Conn, dsn: str) -> None:
    pgjobs.schedule_sync(conn, "t-echo", "0 0 7 * * *", name="m", payload={"v": 1})
    conn.execute(
        "UPDATE pgjobs.schedules SET next_fire_at = now() + interval '1 hour', error = 'old'"
    )

    pgjobs.alter_schedule_sync(conn, "t-echo", "m", paused=True, parameters={"k": "v"})

    assert schedules(dsn) == [
        ("t-echo", "m", "0 0 7 * * *", "UTC", {"v": 1}, {"k": "v"}, None, True, True)
    ]
    kept = rows(dsn, "SELECT next_fire_at IS NOT NULL, error FROM pgjobs.schedules")
    assert kept == [(True, "old")], "a pause keeps the watermark"

    pgjobs.alter_schedule_sync(conn, "t-echo", "m", cron="0 0 9 * * *", misfire="skip")

    assert schedules(dsn) == [
        ("t-echo", "m", "0 0 9 * * *", "UTC", {"v": 1}, {"k": "v"}, "skip", True, True)
    ]
    reset = rows(dsn, "SELECT next_fire_at, error FROM pgjobs.schedules")
    assert reset == [(None, None)], "a new cron is worked out again from now"


@pytest.mark.usefixtures("jobs")
def test_unschedule_removes_a_schedule_and_says_whether_it_existed(conn: Conn, dsn: str) -> None:
    pgjobs.schedule_sync(conn, "t-echo", "0 0 7 * * *", name="m")
    run = conn.execute(
        "INSERT INTO pgjobs.runs (job, trigger, schedule) VALUES ('t-echo', 'schedule', 'm')"
        " RETURNING id"
    ).fetchone()

    assert pgjobs.unschedule_sync(conn, "t-echo", "m") is True
    assert pgjobs.unschedule_sync(conn, "t-echo", "m") is False
    assert asyncio.run(_unschedule_async(dsn, "t-echo", "other")) is False
    assert count(dsn) == 0
    assert rows(dsn, "SELECT id FROM pgjobs.runs") == [run], "runs already queued stay"


async def _unschedule_async(dsn: str, job: str, name: str) -> bool:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        return await pgjobs.unschedule(conn, job, name)


@pytest.mark.usefixtures("jobs")
def test_alter_schedule_on_an_async_connection(dsn: str) -> None:
    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await pgjobs.schedule(conn, "t-echo", "@hourly", name="h")
            await pgjobs.alter_schedule(conn, "t-echo", "h", timezone="America/New_York")
            await conn.commit()

    asyncio.run(scenario())
    assert schedules(dsn) == [
        ("t-echo", "h", "@hourly", "America/New_York", None, None, None, True, False)
    ]


# -- the caller's transaction -------------------------------------------------------------------


@pytest.mark.usefixtures("jobs")
def test_a_rolled_back_change_leaves_nothing_and_a_committed_one_notifies_the_workers(
    dsn: str,
) -> None:
    with (
        psycopg.connect(dsn, autocommit=True) as listener,
        psycopg.connect(dsn) as conn,
    ):
        listener.execute("LISTEN pgjobs")
        pgjobs.schedule_sync(conn, "t-echo", "0 0 7 * * *", name="m")
        conn.rollback()
        assert list(listener.notifies(timeout=0.5)) == []
        assert count(dsn) == 0

        pgjobs.schedule_sync(conn, "t-echo", "0 0 7 * * *", name="m")
        assert list(listener.notifies(timeout=0.3)) == [], "NOTIFY before the commit"
        conn.commit()
        received = list(listener.notifies(timeout=5, stop_after=1))
        assert [(n.channel, n.payload) for n in received] == [("pgjobs", "schedule")]
    assert count(dsn) == 1


@pytest.mark.usefixtures("jobs")
def test_a_refused_change_leaves_the_callers_transaction_working(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE orders (id int)")
        conn.execute("INSERT INTO orders VALUES (1)")
        with pytest.raises(UnknownJobError):
            pgjobs.schedule_sync(conn, "t-nope", "0 0 7 * * *")
        with pytest.raises(ConfigError, match="default"):
            pgjobs.schedule_sync(conn, "t-echo", "0 0 7 * * *", name="default")
        with pytest.raises(ConfigError, match="has no schedule named"):
            pgjobs.alter_schedule_sync(conn, "t-echo", "missing", paused=True)
        pgjobs.schedule_sync(conn, "t-echo", "0 0 7 * * *", name="kept")
        conn.execute("INSERT INTO orders VALUES (2)")
        conn.commit()
    assert scalar(dsn, "SELECT count(*) FROM orders") == 2
    assert [row[1] for row in schedules(dsn)] == ["kept"]


@pytest.mark.usefixtures("jobs")
def test_the_api_joins_a_sqlalchemy_connection_and_session(dsn: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(dsn))
    try:
        with engine.connect() as conn:
            pgjobs.schedule_sync(conn, "t-echo", "0 0 7 * * *", name="rolled back")
            conn.rollback()
            assert count(dsn) == 0
            conn.execute(text("SELECT 1"))
            pgjobs.schedule_sync(conn, "t-echo", "0 0 7 * * *", name="m")
            conn.commit()
        with Session(engine) as session:
            pgjobs.alter_schedule_sync(session, "t-echo", "m", paused=True)
            session.commit()
            assert pgjobs.unschedule_sync(session, "t-echo", "m") is True
            session.rollback()
    finally:
        engine.dispose()
    assert [(row[1], row[8]) for row in schedules(dsn)] == [("m", True)]


@pytest.mark.usefixtures("jobs")
def test_the_api_joins_a_sqlalchemy_async_session(dsn: str) -> None:
    pytest.importorskip("greenlet", reason="SQLAlchemy's asyncio support needs greenlet")
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    async def scenario() -> None:
        engine = create_async_engine(
            "postgresql+psycopg://", async_creator=lambda: psycopg.AsyncConnection.connect(dsn)
        )
        try:
            async with AsyncSession(engine) as session:
                await pgjobs.schedule(session, "t-echo", "0 0 7 * * *", name="m")
                with pytest.raises(UnknownJobError):
                    await pgjobs.schedule(session, "t-ehco", "0 0 7 * * *")
                await session.commit()
        finally:
            await engine.dispose()

    asyncio.run(scenario())
    assert [row[1] for row in schedules(dsn)] == ["m"]


def test_a_connection_of_the_wrong_kind_is_refused_with_the_right_function(dsn: str) -> None:
    async def async_conn_to_sync_function() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            with pytest.raises(ConfigError, match=r"is async: use `await pgjobs.unschedule"):
                pgjobs.unschedule_sync(conn, "t-echo", "m")

    asyncio.run(async_conn_to_sync_function())
    with psycopg.connect(dsn) as conn, pytest.raises(ConfigError, match=r"is sync: use `pgjobs"):
        asyncio.run(pgjobs.schedule(conn, "t-echo", "@daily"))
    with pytest.raises(ConfigError, match=r"^alter_schedule_sync needs a psycopg Connection"):
        pgjobs.alter_schedule_sync(dsn, "t-echo", "m", paused=True)


# -- refused input ------------------------------------------------------------------------------


@pytest.mark.usefixtures("jobs")
def test_an_unknown_job_is_refused_with_the_nearest_names_and_no_row(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        with pytest.raises(UnknownJobError) as info:
            pgjobs.schedule_sync(conn, "t-ehco", "0 0 7 * * *")
        conn.commit()
    assert str(info.value) == "unknown job 't-ehco'; did you mean: t-echo?"
    assert count(dsn) == 0


@pytest.mark.parametrize(
    ("cron", "timezone", "error", "message"),
    [
        ("0 61 * * * *", "UTC", CronError, "invalid cron '0 61 * * * *': minute field '61' is"),
        ("0 0 25 * * *", "UTC", CronError, "invalid cron '0 0 25 * * *': hour field '25' is"),
        ("* * *", "UTC", CronError, "invalid cron '* * *'"),
        ("@often", "UTC", CronError, "invalid cron '@often'"),
        ("0 0 7 * * *", "Mars/Base", ConfigError, "unknown timezone 'Mars/Base'"),
        ("0 0 7 * * *", "localtime", ConfigError, "timezone 'localtime' is not allowed"),
    ],
)
@pytest.mark.usefixtures("jobs")
def test_a_bad_cron_or_timezone_gives_the_exact_error_before_any_statement(
    dsn: str, cron: str, timezone: str, error: type[Exception], message: str
) -> None:
    with psycopg.connect(dsn) as conn:
        with pytest.raises(error) as info:
            pgjobs.schedule_sync(conn, "t-echo", cron, timezone=timezone)
        assert str(info.value).startswith(message)
        with pytest.raises(error):
            pgjobs.alter_schedule_sync(conn, "t-echo", "m", cron=cron, timezone=timezone)
        assert conn.info.transaction_status == TransactionStatus.IDLE
    assert count(dsn) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"payload": [1]}, "payload must be a JSON object (a dict) or None, got list"),
        ({"parameters": {"n": 5}}, "parameters must be a dict of strings to strings"),
        ({"name": "a\x00b"}, "name contains a NUL character"),
        ({"name": 7}, "name must be a string, got 7"),
        ({"enabled": "yes"}, "enabled must be True or False, got 'yes'"),
    ],
)
@pytest.mark.usefixtures("jobs")
def test_invalid_arguments_are_refused_before_reaching_the_database(
    dsn: str, kwargs: dict[str, Any], message: str
) -> None:
    with psycopg.connect(dsn) as conn:
        with pytest.raises(ConfigError) as info:
            pgjobs.schedule_sync(conn, "t-echo", "@daily", **kwargs)
        assert str(info.value).startswith(message)
        assert conn.info.transaction_status == TransactionStatus.IDLE


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "default"}, "the schedule named default is the job's own, from its code or"),
        ({"name": " padded"}, "schedule name ' padded' must be 1 to 100 characters"),
        ({"misfire": "later"}, "misfire must be coalesce, skip or backfill, got 'later'"),
    ],
)
@pytest.mark.usefixtures("jobs")
def test_what_the_database_refuses_is_a_config_error_of_one_line(
    conn: Conn, dsn: str, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        pgjobs.schedule_sync(conn, "t-echo", "@daily", **kwargs)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)
    assert count(dsn) == 0


@pytest.mark.usefixtures("jobs")
def test_the_jobs_own_schedule_is_not_changed_or_removed_here(conn: Conn) -> None:
    with pytest.raises(ConfigError, match="pause the job instead: pgjobs jobs pause t-report"):
        pgjobs.unschedule_sync(conn, "t-report", "default")
    with pytest.raises(ConfigError, match="the schedule named default is the job's own"):
        pgjobs.alter_schedule_sync(conn, "t-report", "default", paused=True)


@pytest.mark.usefixtures("jobs")
def test_altering_a_schedule_the_job_does_not_have_is_refused(conn: Conn) -> None:
    with pytest.raises(ConfigError) as info:
        pgjobs.alter_schedule_sync(conn, "t-echo", "nightly", enabled=False)
    assert str(info.value) == "job 't-echo' has no schedule named 'nightly'"


@pytest.mark.usefixtures("jobs")
def test_a_schedule_from_the_profile_may_only_be_paused_here(conn: Conn, dsn: str) -> None:
    conn.execute(
        "INSERT INTO pgjobs.schedules (job, name, cron, origin)"
        " VALUES ('t-report', 'nightly', '0 0 2 * * *', 'profile')"
    )

    pgjobs.alter_schedule_sync(conn, "t-report", "nightly", paused=True)

    with pytest.raises(ConfigError) as info:
        pgjobs.alter_schedule_sync(conn, "t-report", "nightly", cron="0 0 3 * * *")
    assert str(info.value) == (
        "schedule 'nightly' of job 't-report' comes from the profile; "
        "change it in the profile; only its pause is kept at runtime"
    )
    with pytest.raises(ConfigError, match="comes from the profile; change it in the profile"):
        pgjobs.schedule_sync(conn, "t-report", "@daily", name="nightly")
    with pytest.raises(ConfigError, match="comes from the profile; remove it from the profile"):
        pgjobs.unschedule_sync(conn, "t-report", "nightly")
    assert schedules(dsn) == [
        ("t-report", "nightly", "0 0 2 * * *", "UTC", None, None, None, True, True)
    ]


# -- the SQL functions --------------------------------------------------------------------------


@pytest.mark.usefixtures("jobs")
def test_sql_schedule_of_an_unknown_job_and_a_bad_cron_names_the_job(conn: Conn, dsn: str) -> None:
    with pytest.raises(psycopg.errors.UndefinedObject) as info:
        conn.execute("SELECT pgjobs.schedule('nope', 'bad cron')")
    assert info.value.diag.message_primary == "unknown job 'nope'"
    assert info.value.diag.message_hint == "known jobs: t-echo, t-report"
    assert count(dsn) == 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            "pgjobs.schedule('t-echo', 'bad cron')",
            "cron expression 'bad cron' has 2 fields; it needs 6 (second minute hour day month "
            "weekday) or 5 (minute hour day month weekday)",
        ),
        ("pgjobs.schedule('t-echo', '@often')", "unknown cron alias @often"),
        (
            "pgjobs.schedule('t-echo', '* * * * * !')",
            "cron expression '* * * * * !' has a character cron does not",
        ),
        (
            "pgjobs.schedule('t-echo', '@daily', timezone => 'Mars/Base')",
            "unknown timezone 'Mars/Base' (an IANA name such as UTC or Europe/Paris)",
        ),
        (
            "pgjobs.schedule('t-echo', '@daily', name => 'default')",
            "the schedule named default is the job's own, from its code or profile",
        ),
        (
            "pgjobs.schedule('t-echo', '@daily', payload => '[1]')",
            "payload must be a JSON object or NULL, got array",
        ),
    ],
)
@pytest.mark.usefixtures("jobs")
def test_sql_schedule_refuses_a_bad_argument_clearly_and_stores_nothing(
    conn: Conn, dsn: str, call: str, message: str
) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        conn.execute(f"SELECT {call}")
    assert info.value.diag.message_primary is not None
    assert info.value.diag.message_primary.startswith(message)
    assert count(dsn) == 0


@pytest.mark.usefixtures("jobs")
def test_sql_alter_schedule_of_a_missing_schedule_is_refused(conn: Conn) -> None:
    with pytest.raises(psycopg.errors.UndefinedObject) as info:
        conn.execute("SELECT pgjobs.alter_schedule('t-echo', 'nightly', paused => true)")
    assert info.value.diag.message_primary == "job 't-echo' has no schedule named 'nightly'"
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="job's own"):
        conn.execute("SELECT pgjobs.alter_schedule('t-report', 'default', paused => true)")


@pytest.mark.usefixtures("jobs")
def test_sql_schedule_notifies_the_workers_on_commit_and_only_for_a_change(
    conn: Conn, dsn: str
) -> None:
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN pgjobs")
        with conn.transaction():
            conn.execute("SELECT pgjobs.schedule('t-echo', '@daily', name => 'd')")
            assert list(listener.notifies(timeout=0.3)) == [], "NOTIFY before the commit"
        received = list(listener.notifies(timeout=5, stop_after=1))
        assert [(n.channel, n.payload) for n in received] == [("pgjobs", "schedule")]

        conn.execute("SELECT pgjobs.alter_schedule('t-echo', 'd', paused => false)")
        assert list(listener.notifies(timeout=0.5)) == [], "nothing changed, nobody told"

        conn.execute("SELECT pgjobs.unschedule('t-echo', 'd')")
        received = list(listener.notifies(timeout=5, stop_after=1))
        assert [n.payload for n in received] == ["schedule"]


@pytest.mark.usefixtures("jobs")
def test_the_all_schedules_view_lists_the_jobs_own_schedule_as_default(conn: Conn) -> None:
    conn.execute("SELECT pgjobs.schedule('t-report', '@daily', name => 'daily')")
    found = conn.execute(
        "SELECT job, name, cron, origin, misfire FROM pgjobs.all_schedules ORDER BY name"
    ).fetchall()
    assert found == [
        ("t-report", "daily", "@daily", "runtime", "skip"),
        ("t-report", "default", "0 0 * * * *", "code", "skip"),
    ]


@pytest.mark.usefixtures("jobs")
def test_a_hand_edit_of_a_jobs_own_schedule_is_refused_with_what_to_do(conn: Conn) -> None:
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as info:
        conn.execute("UPDATE pgjobs.jobs SET schedule = '@daily' WHERE name = 't-report'")
    assert info.value.diag.message_primary == "the schedule of job 't-report' comes from its code"
    assert "SELECT pgjobs.schedule('t-report', '<cron>'" in (info.value.diag.message_hint or "")


@pytest.mark.usefixtures("jobs")
def test_the_database_refuses_what_the_workers_would_refuse(conn: Conn) -> None:
    """From SQL: the host's own zone aliases are not schedule timezones, an unknown job cannot
    be unscheduled or altered, and a long cron names its schedule by its first 100 characters."""
    for zone in ("localtime", "posixrules", "posix/Europe/Paris"):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="unknown timezone"):
            conn.execute("SELECT pgjobs.schedule('t-echo', '@daily', timezone => %s)", [zone])
        conn.rollback()
    for call in ("pgjobs.unschedule('t-ehco', 'x')", "pgjobs.alter_schedule('t-ehco', 'x')"):
        with pytest.raises(psycopg.errors.UndefinedObject, match="unknown job 't-ehco'"):
            conn.execute(f"SELECT {call}")
        conn.rollback()
    long_cron = "0 " + ",".join(str(m) for m in range(60)) + " * * * *"
    row = conn.execute("SELECT pgjobs.schedule('t-echo', %s)", [long_cron]).fetchone()
    assert row is not None and row[0] == long_cron[:100]


@pytest.mark.parametrize(
    ("timezone", "accepted"),
    [
        ("Europe/Paris", True),
        ("UTC", True),
        ("US/Eastern", True),  # a link of the IANA database
        ("Mars/Base", False),
        ("localtime", False),
        ("posixrules", False),
        ("posix/Europe/Paris", False),
        ("right/UTC", False),
        ("", False),
    ],
)
def test_the_sql_check_of_a_timezone_accepts_the_iana_names_only(
    conn: Conn, timezone: str, accepted: bool
) -> None:
    error = scalar_of(conn, "SELECT pgjobs.timezone_error(%s)", timezone)
    assert (error is None) is accepted, error


def test_a_zone_the_server_knows_but_the_names_table_lacks_is_still_accepted(conn: Conn) -> None:
    # A later tzdata release of the server may add zones that the table, filled when pgjobs was
    # migrated, does not list: those are looked up in pg_timezone_names.
    assert scalar_of(conn, "SELECT count(*) FROM pgjobs.timezone_names") > 300
    conn.execute("DELETE FROM pgjobs.timezone_names WHERE name = 'America/Ciudad_Juarez'")
    assert scalar_of(conn, "SELECT pgjobs.timezone_error('America/Ciudad_Juarez')") is None
    assert scalar_of(conn, "SELECT pgjobs.timezone_error('America/Nowhere')") == (
        "unknown timezone 'America/Nowhere' (an IANA name such as UTC or Europe/Paris)"
    )


def scalar_of(conn: Conn, query: str, *args: Any) -> Any:
    row = conn.execute(query, args or None).fetchone()
    assert row is not None
    return row[0]
