"""``pgjobs schedules``: listing every schedule (a job's own as ``default``), showing one, adding,
replacing, pausing, resuming and removing runtime schedules, and one clear line with exit code
2 for bad input."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.cli import add_job, invoke, one_line_error, parse_json, run_pgjobs

Conn = psycopg.Connection[Any]


@pytest.fixture
def report(conn: Conn) -> None:
    """t-report with a schedule of its own and one added at runtime; t-echo with none."""
    add_job(conn, "t-report", schedule="0 0 * * * *", misfire="skip")
    add_job(conn, "t-echo")
    conn.execute(
        "SELECT pgjobs.schedule('t-report', '0 0 7 * * 1-5', name => 'weekday mornings',"
        " timezone => 'Europe/Paris', payload => '{\"window\": \"1d\"}',"
        ' parameters => \'{"region": "eu"}\')'
    )


def schedule_row(conn: Conn, job: str, name: str) -> tuple[Any, ...] | None:
    return conn.execute(
        "SELECT cron, timezone, payload, parameters, misfire, enabled, paused"
        " FROM pgjobs.schedules WHERE job = %s AND name = %s",
        [job, name],
    ).fetchone()


# -- list and show ------------------------------------------------------------------------------


@pytest.mark.usefixtures("report")
def test_list_shows_each_jobs_own_schedule_as_default_and_the_runtime_ones(
    conn: Conn, dsn: str
) -> None:
    conn.execute("UPDATE pgjobs.schedules SET error = 'minute field 61 is out of range'")
    conn.execute("SELECT pgjobs.schedule('t-echo', '@hourly', enabled => false)")

    result = invoke(dsn, "schedules", "list")

    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.stdout.strip().splitlines()]
    assert lines[0] == [
        "JOB", "SCHEDULE", "CRON", "TIMEZONE", "ORIGIN", "STATE", "NEXT", "FIRE", "LAST", "TICK",
        "ERROR",
    ]  # fmt: skip
    assert [line[:2] for line in lines[1:]] == [
        ["t-echo", "@hourly"],
        ["t-report", "default"],
        ["t-report", "weekday"],
    ]
    assert "disabled" in lines[1]
    assert lines[2][2:9] == ["0", "0", "*", "*", "*", "*", "UTC"]
    assert "code" in lines[2] and "ticking" in lines[2]
    assert "runtime" in lines[3] and "error" in lines[3]
    assert result.stdout.strip().endswith("minute field 61 is out of range")


@pytest.mark.usefixtures("report")
def test_list_as_json_filtered_by_job(conn: Conn, dsn: str) -> None:
    conn.execute("UPDATE pgjobs.jobs SET paused = true WHERE name = 't-report'")

    found = parse_json(invoke(dsn, "schedules", "list", "--job", "t-report", "--json"))

    assert [(s["name"], s["origin"], s["state"], s["misfire"]) for s in found] == [
        ("default", "code", "job paused", "skip"),
        ("weekday mornings", "runtime", "job paused", "skip"),
    ]
    assert found[1]["payload"] == {"window": "1d"}
    assert found[1]["timezone"] == "Europe/Paris"
    assert parse_json(invoke(dsn, "schedules", "list", "--job", "t-echo", "--json")) == []
    empty = invoke(dsn, "schedules", "list", "--job", "t-echo")
    assert empty.stdout.strip() == (
        "no schedules for job t-echo: `pgjobs schedules add JOB CRON` adds one"
    )


@pytest.mark.usefixtures("report")
def test_show_prints_every_field_of_one_schedule(dsn: str) -> None:
    result = invoke(dsn, "schedules", "show", "t-report", "weekday mornings")

    assert result.exit_code == 0, result.output
    fields = dict(line.split(None, 1) for line in result.stdout.strip().splitlines())
    assert fields["job"] == "t-report"
    assert fields["schedule"] == "weekday mornings"
    assert fields["cron"].startswith("0 0 7 * * 1-5 (")
    assert fields["timezone"] == "Europe/Paris"
    assert fields["origin"] == "runtime"
    assert fields["state"] == "ticking"
    assert fields["payload"] == '{"window": "1d"}'
    assert fields["parameters"] == '{"region": "eu"}'
    shown = parse_json(invoke(dsn, "schedules", "show", "t-report", "default", "--json"))
    assert (shown["name"], shown["cron"], shown["origin"]) == ("default", "0 0 * * * *", "code")


# -- add ----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("report")
def test_add_stores_a_schedule_with_every_option(conn: Conn, dsn: str) -> None:
    result = invoke(
        dsn, "schedules", "add", "t-echo", "*/5 * * * *", "--timezone", "Asia/Tokyo",
        "--payload", '{"n": 1}', "-p", "a=1", "--param", "b=2", "--misfire", "backfill",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        "schedule '*/5 * * * *' of job t-echo added: */5 * * * * (every 5 minutes (Asia/Tokyo));"
        " first tick at "
    )
    assert schedule_row(conn, "t-echo", "*/5 * * * *") == (
        "*/5 * * * *", "Asia/Tokyo", {"n": 1}, {"a": "1", "b": "2"}, "backfill", True, False,
    )  # fmt: skip


@pytest.mark.usefixtures("report")
def test_add_with_an_existing_name_replaces_it(conn: Conn, dsn: str) -> None:
    result = invoke(
        dsn, "schedules", "add", "t-report", "@daily", "--name", "weekday mornings", "--disabled"
    )

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "schedule 'weekday mornings' of job t-report replaced: @daily (daily at 00:00); "
        "disabled: it does not tick until added again without --disabled"
    )
    assert schedule_row(conn, "t-report", "weekday mornings") == (
        "@daily", "UTC", None, None, None, False, False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["t-echo", "0 61 * * * *"],
            "error: invalid cron '0 61 * * * *': minute field '61' is out of range 0-59",
        ),
        (["t-echo", "@often"], "error: invalid cron '@often'"),
        (["t-echo", "@daily", "--timezone", "Mars/Base"], "error: unknown timezone 'Mars/Base'"),
        (["t-ehco", "@daily"], "error: unknown job 't-ehco'; did you mean: t-echo?"),
        (
            ["t-echo", "@daily", "--name", "default"],
            "error: the schedule named default is the job's own, from its code or profile; "
            "give the schedule another name",
        ),
        (["t-echo", "@daily", "--payload", "[1]"], "error: --payload must be a JSON object"),
        (["t-echo", "@daily", "-p", "novalue"], "error: invalid parameter 'novalue'"),
    ],
)
@pytest.mark.usefixtures("report")
def test_add_refuses_bad_input_with_one_line_and_exit_2(
    conn: Conn, dsn: str, args: list[str], message: str
) -> None:
    result = invoke(dsn, "schedules", "add", *args)

    assert result.exit_code == 2, result.output
    assert result.stderr.strip().startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1
    assert conn.execute("SELECT count(*) FROM pgjobs.schedules").fetchone() == (1,)


@pytest.mark.usefixtures("report")
def test_a_bad_cron_from_the_real_entry_point_is_one_line_without_a_traceback(dsn: str) -> None:
    proc = run_pgjobs(dsn, "schedules", "add", "t-echo", "0 0 25 * * *")

    assert proc.returncode == 2
    assert one_line_error(proc).startswith("error: invalid cron '0 0 25 * * *': hour field")


# -- pause, resume, rm --------------------------------------------------------------------------


@pytest.mark.usefixtures("report")
def test_pause_and_resume_a_schedule_idempotently(conn: Conn, dsn: str) -> None:
    paused = invoke(dsn, "schedules", "pause", "t-report", "weekday mornings")

    assert paused.exit_code == 0, paused.output
    assert paused.stdout.strip() == (
        "schedule 'weekday mornings' of job t-report paused: no ticks until "
        "`pgjobs schedules resume t-report 'weekday mornings'`"
    )
    assert schedule_row(conn, "t-report", "weekday mornings")[-1] is True  # type: ignore[index]
    again = invoke(dsn, "schedules", "pause", "t-report", "weekday mornings")
    assert again.stdout.strip() == "schedule 'weekday mornings' of job t-report was already paused"

    conn.execute("UPDATE pgjobs.jobs SET paused = true WHERE name = 't-report'")
    resumed = invoke(dsn, "schedules", "resume", "t-report", "weekday mornings")

    assert resumed.exit_code == 0, resumed.output
    assert resumed.stdout.strip() == (
        "schedule 'weekday mornings' of job t-report resumed: it ticks again; its job is paused: "
        "no ticks until `pgjobs jobs resume t-report`"
    )
    assert schedule_row(conn, "t-report", "weekday mornings")[-1] is False  # type: ignore[index]
    twice = invoke(dsn, "schedules", "resume", "t-report", "weekday mornings")
    assert twice.stdout.strip() == "schedule 'weekday mornings' of job t-report was not paused"


@pytest.mark.usefixtures("report")
def test_rm_removes_a_schedule(conn: Conn, dsn: str) -> None:
    result = invoke(dsn, "schedules", "rm", "t-report", "weekday mornings")

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "schedule 'weekday mornings' of job t-report removed: it ticks no more "
        "(runs it already queued stay)"
    )
    assert schedule_row(conn, "t-report", "weekday mornings") is None


@pytest.mark.usefixtures("report")
def test_a_schedule_from_the_profile_is_paused_here_but_not_removed(conn: Conn, dsn: str) -> None:
    conn.execute(
        "INSERT INTO pgjobs.schedules (job, name, cron, origin)"
        " VALUES ('t-report', 'nightly', '0 0 2 * * *', 'profile')"
    )

    assert invoke(dsn, "schedules", "pause", "t-report", "nightly").exit_code == 0
    removed = invoke(dsn, "schedules", "rm", "t-report", "nightly")

    assert removed.exit_code == 2
    assert removed.stderr.strip() == (
        "error: schedule 'nightly' of job 't-report' comes from the profile; "
        "remove it from the profile, or pause it"
    )
    assert schedule_row(conn, "t-report", "nightly") == (
        "0 0 2 * * *", "UTC", None, None, None, True, True,
    )  # fmt: skip


@pytest.mark.parametrize("command", ["rm", "pause", "resume"])
@pytest.mark.usefixtures("report")
def test_the_default_schedule_is_not_removed_or_paused_here(dsn: str, command: str) -> None:
    result = invoke(dsn, "schedules", command, "t-report", "default")

    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: the schedule named default is job t-report's own, from its code or profile: "
        "change it there, or pause the job with `pgjobs jobs pause t-report`"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["rm", "t-report", "weekday morning"],
            "error: job t-report has no schedule named 'weekday morning'; "
            "did you mean: weekday mornings?",
        ),
        (
            ["pause", "t-echo", "nightly"],
            "error: job t-echo has no schedules: `pgjobs schedules add t-echo CRON` adds one",
        ),
        (["resume", "t-repotr", "x"], "error: unknown job 't-repotr'; did you mean: t-report?"),
        (
            ["show", "t-report", "nightly"],
            "error: job t-report has no schedule named nightly; "
            "known schedules: default, weekday mornings",
        ),
        (["list", "--job", "t-nope"], "error: unknown job 't-nope'"),
    ],
)
@pytest.mark.usefixtures("report")
def test_a_schedule_or_job_that_does_not_exist_is_one_line_and_exit_2(
    dsn: str, args: list[str], message: str
) -> None:
    result = invoke(dsn, "schedules", *args)

    assert result.exit_code == 2, result.output
    assert result.stderr.strip().startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1
