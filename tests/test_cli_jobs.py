"""``pgjobs jobs``: listings from the database alone (and the code with --app), running jobs in
the CLI process or through real workers, the pause switch, and fire times in a job's zone."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.cli import APP, add_job, add_run, add_worker, invoke, parse_json, run_rows
from tests.test_cli_queues import empty_bucket, hold_slots
from tests.workers import Workers, scalar, wait_until, worker_pool

Conn = psycopg.Connection[Any]


@pytest.fixture
def workers(dsn: str, tmp_path: Path) -> Iterator[Workers]:
    with worker_pool(dsn, tmp_path) as pool:
        yield pool


def db_now(conn: Conn) -> datetime:
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


# -- list, show, next ---------------------------------------------------------------------------


def test_jobs_list_shows_schedule_state_worker_and_next_run(conn: Conn, dsn: str) -> None:
    next_fire = db_now(conn) + timedelta(minutes=4)
    add_job(conn, "t-report", schedule="0 */5 * * * *", tags=["nightly"], next_fire_at=next_fire)
    add_job(conn, "t-cleanup", schedule="0 30 2 * * *", paused=True, paused_at=db_now(conn))
    add_job(conn, "t-adhoc")
    add_worker(conn, "w-live", ["t-report", "t-adhoc"])

    table = invoke(dsn, "jobs", "list")
    assert table.exit_code == 0, table.output
    lines = {line.split()[0]: line for line in table.stdout.splitlines()[1:]}
    assert set(lines) == {"t-adhoc", "t-cleanup", "t-report"}
    assert "every 5 minutes" in lines["t-report"]
    assert "in 3m" in lines["t-report"] or "in 4m" in lines["t-report"]
    assert "yes" in lines["t-report"]
    assert "paused" in lines["t-cleanup"] and "no live worker" in lines["t-cleanup"]
    assert "on demand" in lines["t-adhoc"]

    listed = {job["name"]: job for job in parse_json(invoke(dsn, "jobs", "list", "--json"))}
    report = listed["t-report"]
    assert report["next_fire_at"] == next_fire.isoformat()
    assert report["registered"] is True and report["in_database"] is True
    assert report["schedule_description"] == "every 5 minutes"
    assert report["tags"] == ["nightly"]
    assert listed["t-cleanup"]["paused"] is True and listed["t-cleanup"]["next_fire_at"] is None
    assert listed["t-cleanup"]["registered"] is False

    tagged = parse_json(invoke(dsn, "jobs", "list", "--tag", "nightly", "--json"))
    assert [job["name"] for job in tagged] == ["t-report"]


def test_jobs_list_with_app_marks_jobs_no_worker_registered(conn: Conn, dsn: str) -> None:
    add_job(conn, "t-tick", schedule="* * * * * *")
    add_worker(conn, "w1", ["t-tick"])
    args = ("jobs", "list", "--app", APP)

    table = invoke(dsn, *args, jobs="t-tick,t-echo")
    echo_line = next(line for line in table.stdout.splitlines() if line.startswith("t-echo"))
    assert "code only" in echo_line

    listed = {j["name"]: j for j in parse_json(invoke(dsn, *args, "--json", jobs="t-tick,t-echo"))}
    assert listed["t-echo"]["in_database"] is False and listed["t-echo"]["registered"] is False
    assert listed["t-tick"]["in_database"] is True and listed["t-tick"]["registered"] is True


def test_jobs_show_says_where_the_schedule_came_from(conn: Conn, dsn: str, tmp_path: Path) -> None:
    add_job(
        conn,
        "t-tick",
        schedule="0 0 3 * * *",
        schedule_source="profile",
        overlap="allow",
        max_attempts=3,
        parameters={"region": "eu"},
    )
    profile = tmp_path / "profile.yaml"
    profile.write_text("scheduler:\n  jobs:\n    - job: t-tick\n      schedule: '0 0 3 * * *'\n")

    plain = invoke(dsn, "jobs", "show", "t-tick")
    assert plain.exit_code == 0, plain.output
    assert "0 0 3 * * * (daily at 03:00)" in plain.stdout
    assert "schedule from  profile" in plain.stdout
    assert '{"region": "eu"}' in plain.stdout
    assert plain.stdout.count(" 03:00:00 UTC") == 5

    with_code = invoke(
        dsn, "jobs", "show", "t-tick", "--app", APP, "--profile", str(profile), jobs="t-tick"
    )
    assert with_code.exit_code == 0, with_code.output
    assert "code says * * * * * *, the profile overrides" in with_code.stdout

    shown = parse_json(
        invoke(dsn, "jobs", "show", "t-tick", "--json", "--app", APP, "--profile", str(profile))
    )
    assert shown["schedule"] == "0 0 3 * * *" and shown["max_attempts"] == 3
    assert shown["code"]["schedule"] == "* * * * * *"
    assert shown["code"]["profile_overrides"] == ["schedule"]
    assert len(shown["next_fire_times"]) == 5


def test_jobs_show_of_an_unknown_job_suggests_the_nearest(conn: Conn, dsn: str) -> None:
    add_job(conn, "t-tick")
    add_job(conn, "t-report")
    result = invoke(dsn, "jobs", "show", "t-tik")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: unknown job 't-tik'; did you mean: t-tick?"


def test_jobs_next_lists_fire_times_in_the_jobs_timezone(conn: Conn, dsn: str) -> None:
    add_job(conn, "t-berlin", schedule="0 30 2 * * *", timezone="Europe/Berlin")

    table = invoke(dsn, "jobs", "next", "t-berlin", "-n", "3")
    assert table.exit_code == 0, table.output
    times = [line for line in table.stdout.splitlines() if line.startswith("  ")]
    assert len(times) == 3
    assert all(" 02:30:00 CE" in line for line in times), table.stdout

    fires = parse_json(invoke(dsn, "jobs", "next", "t-berlin", "-n", "3", "--json"))
    assert fires["timezone"] == "Europe/Berlin"
    for fire in fires["next_fire_times"]:
        local = datetime.fromisoformat(fire["local_iso"])
        utc = datetime.fromisoformat(fire["at"])
        assert (local.hour, local.minute) == (2, 30)
        assert local == utc
        assert utc.utcoffset() == timedelta(0)
        assert local.utcoffset() in (timedelta(hours=1), timedelta(hours=2))


# -- schedules: a job's own and those added at runtime -----------------------------------------


REFUSED = "minute field '99' is out of range 0-59"


def add_schedules(conn: Conn, job: str) -> None:
    """Runtime schedules of ``job`` in every state: ticking, paused, disabled, and one a worker
    refused (as a worker that could not use its cron writes it)."""
    conn.execute(f"SELECT pgjobs.schedule('{job}', '*/5 * * * * *', name => 'fast')")
    conn.execute(f"SELECT pgjobs.schedule('{job}', '0 0 6 * * *', name => 'morning')")
    conn.execute(f"SELECT pgjobs.alter_schedule('{job}', 'morning', paused => true)")
    conn.execute(f"SELECT pgjobs.schedule('{job}', '@daily', name => 'off', enabled => false)")
    conn.execute(
        "INSERT INTO pgjobs.schedules (job, name, cron, error) VALUES (%s, 'typo', %s, %s)",
        [job, "0 99 * * * *", REFUSED],
    )


def test_jobs_list_counts_more_schedules_and_flags_those_in_error(conn: Conn, dsn: str) -> None:
    add_job(conn, "t-report", schedule="0 0 * * * *")
    add_job(conn, "t-adhoc")
    add_job(conn, "t-plain", schedule="0 0 3 * * *")
    add_schedules(conn, "t-report")
    conn.execute("SELECT pgjobs.schedule('t-adhoc', '0 30 * * * *', name => 'half-past')")
    conn.execute(  # as a worker loading a profile that lists it writes it
        "INSERT INTO pgjobs.schedules (job, name, cron, origin)"
        " VALUES ('t-plain', 'weekly', '@weekly', 'profile')"
    )

    table = invoke(dsn, "jobs", "list")
    assert table.exit_code == 0, table.output
    lines = {line.split()[0]: line for line in table.stdout.splitlines()[1:]}
    assert "0 0 * * * * (every hour) +4 (1 in error)" in lines["t-report"]
    assert "on demand +1" in lines["t-adhoc"] and "error" not in lines["t-adhoc"]
    assert "0 0 3 * * * (daily at 03:00) +1" in lines["t-plain"]
    assert "error" not in lines["t-plain"]

    listed = {job["name"]: job for job in parse_json(invoke(dsn, "jobs", "list", "--json"))}
    assert listed["t-report"]["more_schedules"] == 4
    assert listed["t-report"]["schedules_in_error"] == 1
    assert listed["t-report"]["schedule"] == "0 0 * * * *"  # its own, as before
    assert listed["t-adhoc"]["more_schedules"] == 1
    assert listed["t-plain"]["more_schedules"] == 1
    assert listed["t-plain"]["schedules_in_error"] == 0
    add_job(conn, "t-lone", schedule="0 0 4 * * *")
    lone = next(
        j for j in parse_json(invoke(dsn, "jobs", "list", "--json")) if j["name"] == "t-lone"
    )
    assert lone["more_schedules"] == lone["schedules_in_error"] == 0


def test_jobs_show_lists_every_schedule_with_what_it_is_doing(conn: Conn, dsn: str) -> None:
    add_job(conn, "t-report", schedule="0 0 * * * *", schedule_source="profile")
    add_schedules(conn, "t-report")

    shown = invoke(dsn, "jobs", "show", "t-report")
    assert shown.exit_code == 0, shown.output
    part = shown.stdout[shown.stdout.index("Schedules") :].splitlines()
    rows = {line.split()[0]: " ".join(line.split()) for line in part[2:] if line.strip()}
    assert list(rows) == ["default", "fast", "morning", "off", "typo"]
    assert rows["default"].startswith("default 0 0 * * * * UTC profile ticking")
    assert rows["fast"].startswith("fast */5 * * * * * UTC runtime ticking")
    assert rows["morning"].startswith("morning 0 0 6 * * * UTC runtime paused")
    assert rows["off"].startswith("off @daily UTC runtime disabled")
    assert rows["typo"].startswith(f"typo 0 99 * * * * UTC runtime error: {REFUSED}")

    conn.execute("UPDATE pgjobs.jobs SET paused = true WHERE name = 't-report'")
    schedules = parse_json(invoke(dsn, "jobs", "show", "t-report", "--json"))["schedules"]
    states = {s["name"]: (s["origin"], s["state"]) for s in schedules}
    assert states == {
        "default": ("profile", "job paused"),
        "fast": ("runtime", "job paused"),
        "morning": ("runtime", "paused"),
        "off": ("runtime", "disabled"),
        "typo": ("runtime", "error"),
    }
    typo = next(s for s in schedules if s["name"] == "typo")
    assert typo["error"] == REFUSED and typo["cron"] == "0 99 * * * *"
    assert typo["next_fire_at"] is None


def test_a_hand_edit_of_a_jobs_own_schedule_is_refused_and_changes_nothing(conn: Conn) -> None:
    add_job(conn, "t-report", schedule="0 0 * * * *", timezone="UTC")
    for change in ("schedule = '*/5 * * * * *'", "timezone = 'Europe/Paris'"):
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as refused:
            conn.execute(f"UPDATE pgjobs.jobs SET {change} WHERE name = 't-report'")
        diag = refused.value.diag
        assert diag.message_primary == "the schedule of job 't-report' comes from its code"
        assert diag.message_hint == (
            "change it there, or add a schedule at runtime: "
            "SELECT pgjobs.schedule('t-report', '<cron>', name => '<name>')"
        )
    row = conn.execute(
        "SELECT schedule, timezone FROM pgjobs.jobs WHERE name = 't-report'"
    ).fetchone()
    assert row == ("0 0 * * * *", "UTC")
    # A runtime schedule edited by hand is adopted: its new cron is worked out again.
    conn.execute("SELECT pgjobs.schedule('t-report', '0 99 * * * *', name => 'typo')")
    conn.execute("UPDATE pgjobs.schedules SET error = 'refused' WHERE name = 'typo'")
    conn.execute("UPDATE pgjobs.schedules SET cron = '0 9 * * * *' WHERE name = 'typo'")
    adopted = conn.execute("SELECT error, next_fire_at FROM pgjobs.schedules WHERE name = 'typo'")
    assert adopted.fetchone() == (None, None)


# -- running jobs -------------------------------------------------------------------------------


def test_jobs_run_executes_in_process_as_a_manual_run_with_parameters_and_payload(
    conn: Conn, dsn: str
) -> None:
    result = invoke(
        dsn,
        "jobs", "run", "t-echo", "--app", APP,
        "-p", "region=eu", "-p", "dry=1", "--payload", '{"n": 3}',
        jobs="t-echo",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "t-echo: run 1 succeeded" in result.stdout

    [run] = run_rows(conn)
    assert run["trigger"] == "manual" and run["status"] == "succeeded"
    assert run["worker_id"].startswith("cli-")
    assert run["parameters"] == {"region": "eu", "dry": "1"}
    assert run["payload"] == {"n": 3}
    assert run["data"] == {
        "payload": {"n": 3},
        "parameters": {"region": "eu", "dry": "1"},
        "trigger": "manual",
    }
    assert run["lease_expires_at"] is None and run["duration_seconds"] is not None


def test_jobs_run_of_a_failing_job_exits_1_and_stores_the_failure(conn: Conn, dsn: str) -> None:
    result = invoke(dsn, "jobs", "run", "t-fail", "--app", APP, "--json", jobs="t-fail")
    assert result.exit_code == 1
    import json

    [reported] = json.loads(result.stdout)
    assert reported["status"] == "failed" and reported["error_type"] == "RuntimeError"
    [run] = run_rows(conn)  # a manual run is not retried by itself
    assert run["status"] == "failed" and run["trigger"] == "manual"
    assert run["error_message"] == "boom on attempt 1"
    assert "Traceback" in run["error_traceback"]


def test_jobs_run_refuses_while_another_run_holds_the_lock_unless_forced(
    conn: Conn, dsn: str
) -> None:
    args = ("jobs", "run", "t-sync-db", "--app", APP)
    free = invoke(dsn, *args, jobs="t-sync-db")  # a sync job, with a sync pool
    assert free.exit_code == 0, free.output
    assert scalar(dsn, "SELECT count(*) FROM pgjobs.run_locks") == 0

    holder = add_run(conn, "t-sync-db", status="running", worker_id="w-other")
    conn.execute(
        "INSERT INTO pgjobs.run_locks (job, run_id, worker_id, lease_expires_at)"
        " VALUES ('t-sync-db', %s, 'w-other', now() + interval '1 hour')",
        [holder],
    )
    refused = invoke(dsn, *args, jobs="t-sync-db")
    assert refused.exit_code == 1
    assert f"lock is held by run {holder} on worker w-other" in refused.stderr
    assert "--force" in refused.stderr
    assert len(run_rows(conn, "trigger = 'manual'")) == 1  # the refused run left no row

    forced = invoke(dsn, *args, "--force", jobs="t-sync-db")
    assert forced.exit_code == 0, forced.output
    assert [r["status"] for r in run_rows(conn, "trigger = 'manual'")] == ["succeeded"] * 2
    assert scalar(dsn, "SELECT run_id FROM pgjobs.run_locks") == holder


def test_jobs_run_of_a_limited_job_takes_a_free_slot_or_names_a_holder(
    conn: Conn, dsn: str
) -> None:
    args = ("jobs", "run", "c-one-short", "--app", "tests.worker_apps.controls:extension")
    add_job(conn, "c-one-short", max_concurrency=1)
    holder = add_run(conn, "c-one-short", status="running", worker_id="w-other", slot=1)

    refused = invoke(dsn, *args)
    assert refused.exit_code == 1
    assert f"has its 1 slot(s) taken, one by run {holder} on worker w-other" in refused.stderr
    assert len(run_rows(conn, "trigger = 'manual'")) == 0  # the refused run left no row

    conn.execute("UPDATE pgjobs.runs SET status = 'succeeded', finished_at = now()")
    ran = invoke(dsn, *args)
    assert ran.exit_code == 0, ran.output
    [run] = run_rows(conn, "trigger = 'manual'")
    assert (run["status"], run["slot"]) == ("succeeded", 1)


def test_jobs_run_several_names_all_and_tag(conn: Conn, dsn: str) -> None:
    both = invoke(dsn, "jobs", "run", "t-echo", "t-fail", "--app", APP, jobs="t-echo,t-fail")
    assert both.exit_code == 1  # one of them failed
    assert [r["job"] for r in run_rows(conn)] == ["t-echo", "t-fail"]

    every = invoke(dsn, "jobs", "run", "--all", "--app", APP, jobs="t-echo,t-async-db")
    assert every.exit_code == 0, every.output
    ran = {r["job"]: r["status"] for r in run_rows(conn)[2:]}
    assert ran["t-async-db"] == ran["t-echo"] == "succeeded"

    no_tag = invoke(dsn, "jobs", "run", "--tag", "nope", "--app", APP, jobs="t-echo")
    assert no_tag.exit_code == 2
    assert "no enabled job carries tag 'nope'" in no_tag.stderr

    unknown = invoke(dsn, "jobs", "run", "t-ecko", "--app", APP, jobs="t-echo")
    assert unknown.exit_code == 2
    assert "did you mean: t-echo?" in unknown.stderr


def test_jobs_run_queue_it_hands_the_run_to_the_workers(conn: Conn, dsn: str) -> None:
    add_job(conn, "t-echo", priority=5, queue="reports", max_attempts=2)
    result = invoke(dsn, "jobs", "run", "t-echo", "--queue-it", "-p", "k=v", "--json")
    [queued] = parse_json(result)
    [run] = run_rows(conn)
    assert queued == {"job": "t-echo", "run_id": run["id"], "status": "queued"}
    assert (run["status"], run["trigger"], run["worker_id"]) == ("queued", "manual", None)
    assert (run["priority"], run["queue"], run["max_attempts"]) == (5, "reports", 2)
    assert run["parameters"] == {"k": "v"}


def test_jobs_run_holds_payload_and_parameters_to_the_enqueue_limit(conn: Conn, dsn: str) -> None:
    add_job(conn, "t-echo")
    limit = {"PGJOBS_MAX_PAYLOAD_BYTES": "20"}
    big = '{"blob": "' + "x" * 20 + '"}'
    for args in (("--queue-it",), ()):
        refused = invoke(dsn, "jobs", "run", "t-echo", *args, "--payload", big, env=limit)
        assert refused.exit_code == 2
        assert refused.stderr.strip() == (
            "error: payload is 31 bytes of JSON, over the limit of 20 (PGJOBS_MAX_PAYLOAD_BYTES): "
            "store large data elsewhere and pass its key"
        )
    refused = invoke(dsn, "jobs", "run", "t-echo", "--queue-it", "-p", "k=" + "v" * 20, env=limit)
    assert refused.exit_code == 2
    assert refused.stderr.startswith("error: parameters are 29 bytes of JSON, over the limit")
    assert run_rows(conn) == []
    ok = invoke(dsn, "jobs", "run", "t-echo", "--queue-it", "--payload", '{"a": 1}', env=limit)
    assert ok.exit_code == 0, ok.output
    assert [run["payload"] for run in run_rows(conn)] == [{"a": 1}]


def test_jobs_run_wait_timeout_exits_124_and_leaves_the_run_queued(conn: Conn, dsn: str) -> None:
    add_job(conn, "t-echo")
    result = invoke(dsn, "jobs", "run", "t-echo", "--queue-it", "--wait", "--timeout", "0.3")
    assert result.exit_code == 124
    [run] = run_rows(conn)
    assert run["status"] == "queued"
    assert "t-echo: run 1 queued" in result.stdout
    assert result.stderr.strip() == (
        "error: run 1 is still queued: gave up waiting (--timeout); "
        "the run goes on, see `pgjobs runs show 1`"
    )
    misuse = invoke(dsn, "jobs", "run", "t-echo", "--queue-it", "--timeout", "5")
    assert misuse.exit_code == 2
    assert "--timeout limits --wait" in misuse.stderr
    assert (
        invoke(dsn, "jobs", "run", "t-echo", "--queue-it", "--wait", "--timeout", "0").exit_code
        == 2
    )


def test_jobs_run_queue_it_wait_follows_a_real_worker_to_the_end(
    conn: Conn, dsn: str, workers: Workers
) -> None:
    workers.wait_registered(workers.start(["t-echo", "t-fail"]))

    ok = invoke(dsn, "jobs", "run", "t-echo", "--queue-it", "--wait", "--payload", '{"a": 1}')
    assert ok.exit_code == 0, ok.output
    assert "t-echo: run 1 queued" in ok.stdout
    assert "t-echo: run 1 succeeded" in ok.stdout
    assert '"payload": {"a": 1}' in ok.stdout

    failed = invoke(dsn, "jobs", "run", "t-fail", "--queue-it", "--wait", "--timeout", "60")
    assert failed.exit_code == 1
    # Followed through the worker's retries to the last attempt.
    assert "retried as run" in failed.stdout
    attempts = run_rows(conn, "job = 't-fail'")
    assert [r["status"] for r in attempts] == ["failed"] * 3
    assert f"run {attempts[-1]['id']} failed" in failed.stdout


def test_pause_and_resume_switch_the_job_and_a_paused_job_does_not_tick(
    conn: Conn, dsn: str, workers: Workers
) -> None:
    workers.wait_registered(workers.start(["t-tick"]))

    def ticks() -> int:
        return int(scalar(dsn, "SELECT count(*) FROM pgjobs.runs WHERE job = 't-tick'"))

    wait_until(lambda: ticks() >= 1, 10, "a first tick")
    paused = invoke(dsn, "jobs", "pause", "t-tick")
    assert paused.exit_code == 0, paused.output
    assert "paused" in paused.stdout
    row = conn.execute("SELECT paused, paused_at FROM pgjobs.jobs WHERE name = 't-tick'").fetchone()
    assert row is not None and row[0] is True and row[1] is not None
    assert "already paused" in invoke(dsn, "jobs", "pause", "t-tick").stdout

    time.sleep(0.3)  # a tick materialised just before the pause committed may still land
    before = ticks()
    time.sleep(2.5)
    assert ticks() == before, "a paused job ticked"

    resumed = invoke(dsn, "jobs", "resume", "t-tick")
    assert resumed.exit_code == 0, resumed.output
    assert "misfire policy (coalesce)" in resumed.stdout
    row = conn.execute("SELECT paused, paused_at FROM pgjobs.jobs WHERE name = 't-tick'").fetchone()
    assert row == (False, None)
    wait_until(lambda: ticks() > before, 10, "ticks after the resume")


# -- limits and pauses --------------------------------------------------------------------------


def test_jobs_show_says_the_limits_what_runs_and_why_the_others_wait(conn: Conn, dsn: str) -> None:
    add_job(
        conn,
        "t-limited",
        queue="reports",
        max_concurrency=2,
        concurrency_key="tenant",
        rate_limit="1/m",
    )
    hold_slots(conn, "t-limited", "acme", 2)
    hold_slots(conn, "t-limited", "globex", 1)
    empty_bucket(conn, "job", "t-limited")
    for key in ("acme", "acme", "acme", "globex"):
        add_run(conn, "t-limited", queue="reports", concurrency_key=key)

    shown = invoke(dsn, "jobs", "show", "t-limited")

    assert shown.exit_code == 0, shown.output
    fields = dict(line.split("  ", 1) for line in shown.stdout.splitlines() if "  " in line.strip())
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    assert fields["concurrency"] == (
        "at most 2 run(s) at a time per concurrency key, across all workers"
    )
    assert fields["concurrency key"] == "the payload's field 'tenant'"
    assert fields["rate limit"] == "1/m (0 may start now)"
    assert fields["running"] == (
        "3 in 2 key(s), at most 2 per key; busiest: acme 2 of 2, globex 1 of 2"
    )
    assert fields["waiting"].startswith(
        "3 on concurrency (2 of 2 running for key acme), "
        "1 on rate limit (job t-limited: next token in "
    )
    assert fields["queue"] == "reports (priority 0)"

    as_json = parse_json(invoke(dsn, "jobs", "show", "t-limited", "--json"))
    assert (as_json["concurrency_limit"], as_json["running_now"]) == (2, 3)
    assert as_json["running_by_key"][0] == {"key": "acme", "running": 2}
    assert as_json["waiting"]["concurrency"] == 3 and as_json["waiting"]["rate limit"] == 1
    assert as_json["rate_limit"] == "1/m" and as_json["queue_paused"] is False

    assert invoke(dsn, "queues", "pause", "reports").exit_code == 0
    held = invoke(dsn, "jobs", "show", "t-limited").stdout
    assert "state            paused (queue)" in held
    assert "`pgjobs queues resume reports`" in held
    assert "waiting          4 on the queue's pause" in held


def test_jobs_show_of_a_job_without_limits(conn: Conn, dsn: str) -> None:
    add_job(conn, "t-skip")
    add_job(conn, "t-allow", overlap="allow")
    add_run(conn, "t-allow", status="running", worker_id="w-1")

    skip = invoke(dsn, "jobs", "show", "t-skip").stdout
    allow = invoke(dsn, "jobs", "show", "t-allow").stdout

    assert "concurrency    1 run at a time (overlap skip)" in skip
    assert "running        0 of 1 allowed" in skip and "waiting        none" in skip
    assert "concurrency    no limit (overlap allow)" in allow and "running        1\n" in allow
    assert "rate limit" not in skip + allow and "concurrency key" not in skip + allow

    # A key without a limit of its own is one run at a time per key, as the claim counts it.
    add_job(conn, "t-keyed", overlap="allow", concurrency_key="tenant")
    keyed = invoke(dsn, "jobs", "show", "t-keyed").stdout
    assert "at most 1 run(s) at a time per concurrency key" in keyed
    assert "max 1 per tenant" in invoke(dsn, "jobs", "list").stdout


def test_jobs_list_and_status_show_a_job_held_by_its_queue(conn: Conn, dsn: str) -> None:
    add_job(
        conn,
        "t-held",
        queue="reports",
        schedule="0 0 * * * *",
        next_fire_at=db_now(conn) + timedelta(minutes=5),
        max_concurrency=3,
        concurrency_key="callable:billing.tenant_of",
        rate_limit="100/m",
    )
    add_job(conn, "t-paused", paused=True, paused_at=db_now(conn))
    add_job(conn, "t-free", rate_limit="5/s")
    assert invoke(dsn, "queues", "pause", "reports").exit_code == 0

    table = invoke(dsn, "jobs", "list")
    assert table.exit_code == 0, table.output
    lines = {line.split()[0]: line for line in table.stdout.splitlines()[1:]}
    assert "paused (queue)" in lines["t-held"] and "in 4m" in lines["t-held"]
    assert lines["t-held"].rstrip().endswith("reports  max 3 per billing.tenant_of(), 100/m")
    assert lines["t-free"].rstrip().endswith("default  5/s")
    assert lines["t-paused"].rstrip().endswith("default  -")

    listed = {j["name"]: j for j in parse_json(invoke(dsn, "jobs", "list", "--json"))}
    assert listed["t-held"]["held"] == "queue paused" and listed["t-held"]["queue_paused"]
    assert listed["t-held"]["max_concurrency"] == 3 and listed["t-held"]["rate_limit"] == "100/m"
    assert listed["t-paused"]["held"] == "job paused" and listed["t-free"]["held"] is None

    status = invoke(dsn, "jobs", "status")
    rows = {line.split()[0]: line.split() for line in status.stdout.splitlines()[1:]}
    assert rows["t-held"][2:4] == ["paused", "(queue)"]
    assert rows["t-paused"][2] == "paused" and rows["t-paused"][3] != "(queue)"
    as_json = {s["name"]: s for s in parse_json(invoke(dsn, "jobs", "status", "--json"))}
    assert as_json["t-held"]["held"] == "queue paused" and as_json["t-held"]["queue"] == "reports"


def test_pausing_a_job_holds_its_queued_runs_of_every_trigger(conn: Conn, dsn: str) -> None:
    add_job(conn, "t-report", queue="reports", overlap="allow")
    triggers = ("schedule", "manual", "enqueue", "retry")
    runs = [add_run(conn, "t-report", trigger=t, queue="reports") for t in triggers]
    add_run(conn, "t-report", status="running", worker_id="w-1")

    def waits() -> set[str]:
        rows = conn.execute("SELECT id, waiting_for FROM pgjobs.run_waits").fetchall()
        assert sorted(r[0] for r in rows) == runs
        return {r[1] for r in rows}

    paused = invoke(dsn, "jobs", "pause", "t-report")
    assert paused.exit_code == 0, paused.output
    assert paused.stdout.strip() == (
        "job t-report paused: no ticks, and its queued runs of every trigger (schedule, manual, "
        "enqueue, retry) wait until `pgjobs jobs resume t-report`; running runs finish "
        "(4 queued, 1 running)"
    )
    assert waits() == {"job paused"}

    assert invoke(dsn, "queues", "pause", "reports").exit_code == 0
    resumed = invoke(dsn, "jobs", "resume", "t-report")
    assert resumed.stdout.strip() == (
        "job t-report resumed: 0 of its 4 queued run(s) can start again; 4 wait for the pause "
        "of queue reports: `pgjobs queues resume reports`"
    )
    assert waits() == {"queue paused"}

    assert invoke(dsn, "queues", "resume", "reports").exit_code == 0
    assert waits() == {"worker"}
    assert invoke(dsn, "jobs", "pause", "t-report").exit_code == 0
    again = invoke(dsn, "jobs", "resume", "t-report")
    assert again.stdout.strip() == "job t-report resumed: its 4 queued run(s) can start again"


# -- status and history -------------------------------------------------------------------------


def test_jobs_status_and_history_read_the_views(conn: Conn, dsn: str) -> None:
    add_job(conn, "t-report", schedule="0 0 * * * *", next_fire_at=db_now(conn))
    add_job(conn, "t-other")
    finished = "now() - interval '1 minute'"
    ids = []
    for status, seconds in (("succeeded", 1.0), ("failed", 3.0), ("succeeded", 2.0)):
        ids.append(add_run(conn, "t-report", status=status, duration_seconds=seconds))
    conn.execute(f"UPDATE pgjobs.runs SET finished_at = {finished}, message = 'm' || id")
    add_run(conn, "t-report", status="running", worker_id="w1")

    status = {s["name"]: s for s in parse_json(invoke(dsn, "jobs", "status", "--json"))}
    report = status["t-report"]
    assert (report["succeeded_24h"], report["failed_24h"], report["running_now"]) == (2, 1, 1)
    assert report["p50_seconds_24h"] == 2.0
    assert report["recent"] == ["succeeded", "failed", "succeeded"]
    assert report["last_run_id"] == ids[-1]

    table = invoke(dsn, "jobs", "status", "t-report")
    assert table.exit_code == 0, table.output
    line = next(li for li in table.stdout.splitlines() if li.startswith("t-report"))
    assert "succeeded 1m ago" in line and "ok fail ok" in line and "2.0s" in line
    assert f"last message: m{ids[-1]}" in table.stdout

    history = parse_json(invoke(dsn, "jobs", "history", "--job", "t-report", "-n", "3", "--json"))
    assert [h["id"] for h in history] == [ids[-1] + 1, ids[2], ids[1]]
    failed = parse_json(invoke(dsn, "jobs", "history", "--status", "failed", "--json"))
    assert [(h["id"], h["duration_seconds"]) for h in failed] == [(ids[1], 3.0)]
    assert invoke(dsn, "jobs", "history", "--job", "t-other").stdout.strip() == "no runs"
