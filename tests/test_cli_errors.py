"""The real entry point (``python -m pgjobs``) in a subprocess: exit codes, and every error as
one line on stderr without a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from tests.cli import APP, add_job, add_run, add_worker, invoke, one_line_error, run_pgjobs

Conn = psycopg.Connection[Any]


def test_jobs_run_exits_0_on_success_and_1_on_failure(dsn: str) -> None:
    ok = run_pgjobs(dsn, "jobs", "run", "t-echo", "--app", APP, jobs="t-echo,t-fail")
    assert ok.returncode == 0, ok.stderr
    assert "succeeded" in ok.stdout and "Traceback" not in ok.stderr

    failed = run_pgjobs(dsn, "jobs", "run", "t-fail", "--app", APP, jobs="t-echo,t-fail")
    assert failed.returncode == 1
    assert "run 2 failed" in failed.stdout and "boom on attempt 1" in failed.stdout
    assert "Traceback" not in failed.stderr + failed.stdout


def test_a_held_lock_is_one_line_and_exit_1(conn: Conn, dsn: str) -> None:
    holder = add_run(conn, "t-sync-db", status="running", worker_id="w-other")
    conn.execute(
        "INSERT INTO pgjobs.run_locks (job, run_id, worker_id, lease_expires_at)"
        " VALUES ('t-sync-db', %s, 'w-other', now() + interval '1 hour')",
        [holder],
    )
    proc = run_pgjobs(dsn, "jobs", "run", "t-sync-db", "--app", APP, jobs="t-sync-db")
    assert proc.returncode == 1
    assert f"held by run {holder} on worker w-other" in one_line_error(proc)


def test_an_unknown_job_suggests_the_nearest_names(conn: Conn, dsn: str) -> None:
    add_job(conn, "t-cleanup")
    add_job(conn, "t-report")
    proc = run_pgjobs(dsn, "jobs", "pause", "t-cleanpu")
    assert proc.returncode == 2
    assert one_line_error(proc).endswith("did you mean: t-cleanup?")


def test_a_bad_duration_is_one_line_and_exit_2(dsn: str) -> None:
    proc = run_pgjobs(dsn, "runs", "list", "--since", "1x")
    assert proc.returncode == 2
    assert one_line_error(proc).startswith("error: --since: invalid duration '1x'")


def test_a_malformed_payload_is_one_line_and_exit_2(dsn: str) -> None:
    for payload, says in (("{oops", "--payload is not valid JSON"), ("[1, 2]", "a JSON object")):
        proc = run_pgjobs(dsn, "jobs", "run", "t-echo", "--queue-it", "--payload", payload)
        assert proc.returncode == 2
        assert says in one_line_error(proc)


def test_click_usage_errors_keep_exit_code_2() -> None:
    result = invoke("", "jobs", "run", "--queue-it")
    assert result.exit_code == 2
    assert "name the jobs to run, or pass --all or --tag" in result.stderr
    assert invoke("", "runs", "show", "not-a-number").exit_code == 2


def test_an_unmigrated_database_says_which_command_fixes_it(empty_dsn: str) -> None:
    proc = run_pgjobs(empty_dsn, "jobs", "list")
    assert proc.returncode == 3
    assert (
        one_line_error(proc) == 'error: pgjobs schema "pgjobs" is missing: run `pgjobs db upgrade`'
    )


def test_an_unreachable_database_names_host_and_port_but_never_the_password() -> None:
    dsn = "postgresql://operator:s3cret-pw@127.0.0.1:1/jobs"
    proc = run_pgjobs(dsn, "workers", "list")
    assert proc.returncode == 3
    line = one_line_error(proc)
    assert line.startswith("error: cannot connect to 127.0.0.1:1/jobs:")
    assert "s3cret-pw" not in proc.stderr + proc.stdout


def test_jobs_run_without_the_code_says_how_to_give_it(dsn: str) -> None:
    proc = run_pgjobs(dsn, "jobs", "run", "t-echo")
    assert proc.returncode == 2
    assert "pass --app module:attr or set PGJOBS_APP" in one_line_error(proc)


def test_check_reports_every_problem_and_exits_1(dsn: str, empty_dsn: str, tmp_path: Path) -> None:
    good = run_pgjobs(dsn, "check", "--app", APP, jobs="t-tick,t-echo")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "all checks passed" in good.stdout
    assert 'schema: "pgjobs" at revision' in good.stdout

    profile = tmp_path / "profile.yaml"
    profile.write_text("scheduler:\n  jobs:\n    - job: t-tick\n      schedule: '61 * * * * *'\n")
    bad = run_pgjobs(empty_dsn, "check", "--app", APP, "--profile", str(profile), jobs="t-tick")
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr + bad.stdout
    problems = [line for line in bad.stdout.splitlines() if line.startswith("ERR")]
    assert len(problems) == 2, bad.stdout
    assert f"{profile}:4" in problems[0] and "second" in problems[0]
    assert "pgjobs db upgrade" in problems[1]


def test_check_warns_of_further_schedules_that_do_not_tick_and_still_exits_0(
    conn: Conn, dsn: str
) -> None:
    add_job(conn, "t-tick", schedule="* * * * * *")
    add_job(conn, "t-echo")
    add_worker(conn, "w-live", ["t-tick"])
    conn.execute("SELECT pgjobs.schedule('t-tick', '0 */5 * * * *', name => 'fine')")
    conn.execute("SELECT pgjobs.schedule('t-tick', '0 0 25 * * *', name => 'untried')")
    conn.execute(
        "INSERT INTO pgjobs.schedules (job, name, cron, error)"
        " VALUES ('t-tick', 'refused', '0 99 * * * *', 'minute field ''99'' is out of range')"
    )
    conn.execute("SELECT pgjobs.schedule('t-echo', '@hourly', name => 'orphan')")
    conn.execute("SELECT pgjobs.schedule('t-echo', '@daily', name => 'off', enabled => false)")

    proc = run_pgjobs(dsn, "check", "--app", APP, jobs="t-tick,t-echo")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    warnings = [line for line in proc.stdout.splitlines() if line.startswith("WRN")]
    assert warnings == [
        "WRN  schedule t-echo/orphan: no live worker registers job t-echo: it does not tick",
        "WRN  schedule t-tick/refused: workers refused it: minute field '99' is out of range;"
        " it does not tick until its cron or timezone is changed",
        "WRN  schedule t-tick/untried: invalid cron '0 0 25 * * *': hour field '25' is out of"
        " range 0-23: workers will refuse it",
    ]
    assert proc.stdout.rstrip().endswith("all checks passed, 3 warning(s)")

    conn.execute("DELETE FROM pgjobs.schedules WHERE name IN ('orphan', 'refused', 'untried')")
    quiet = run_pgjobs(dsn, "check", "--app", APP, jobs="t-tick,t-echo")
    assert "ok   further schedules: 2 (1 disabled, 1 ticking)" in quiet.stdout
    assert quiet.stdout.rstrip().endswith("all checks passed")
