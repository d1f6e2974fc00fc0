"""``pgjobs queues`` and ``pgjobs runs waits``: pausing and resuming a queue (kept in Postgres,
idempotent), listing queues with what their runs wait for, and why each queued run waits."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.cli import add_job, add_run, add_worker, invoke, one_line_error, parse_json, run_pgjobs

Conn = psycopg.Connection[Any]


def waiting_for(conn: Conn) -> dict[int, str]:
    """run id -> what the run_waits view says it waits for."""
    return dict(conn.execute("SELECT id, waiting_for FROM pgjobs.run_waits").fetchall())


def queue_row(conn: Conn, name: str) -> tuple[Any, ...] | None:
    return conn.execute(
        "SELECT paused, paused_at IS NOT NULL FROM pgjobs.queues WHERE name = %s", [name]
    ).fetchone()


def hold_slots(conn: Conn, job: str, key: str, runs: int) -> None:
    """``runs`` running runs of ``job`` with concurrency key ``key``, each holding a slot."""
    for slot in range(1, runs + 1):
        add_run(conn, job, status="running", worker_id="w-1", concurrency_key=key, slot=slot)


def empty_bucket(conn: Conn, scope: str, name: str) -> None:
    """A rate bucket of one token a minute that a claim has just emptied."""
    conn.execute(
        "INSERT INTO pgjobs.rate_buckets (scope, name, rate, burst, tokens)"
        " VALUES (%s, %s, 1.0 / 60, 10, 0)",
        [scope, name],
    )


@pytest.fixture
def reports(conn: Conn) -> dict[str, int]:
    """Two jobs in queue ``reports``, one elsewhere; queued runs of every trigger, one running."""
    add_job(conn, "t-report", queue="reports", schedule="0 0 * * * *")
    add_job(conn, "t-export", queue="reports", overlap="allow")
    add_job(conn, "t-mail", queue="emails", overlap="allow")
    runs = {
        trigger: add_run(conn, "t-report", trigger=trigger, queue="reports")
        for trigger in ("schedule", "manual", "enqueue", "retry")
    }
    runs["export"] = add_run(conn, "t-export", queue="reports")
    runs["mail"] = add_run(conn, "t-mail", queue="emails")
    runs["running"] = add_run(conn, "t-export", queue="reports", status="running", worker_id="w")
    return runs


# -- pause and resume ---------------------------------------------------------------------------


def test_pausing_a_queue_holds_its_queued_runs_of_every_trigger_until_resumed(
    conn: Conn, dsn: str, reports: dict[str, int]
) -> None:
    paused = invoke(dsn, "queues", "pause", "reports")

    assert paused.exit_code == 0, paused.output
    assert paused.stdout.strip() == (
        "queue reports paused: its queued runs wait until `pgjobs queues resume reports`; "
        "running runs finish (5 queued, 1 running)"
    )
    assert queue_row(conn, "reports") == (True, True)
    waits = waiting_for(conn)
    held = [reports[k] for k in ("schedule", "manual", "enqueue", "retry", "export")]
    assert {waits[i] for i in held} == {"queue paused"}
    assert waits[reports["mail"]] == "worker"

    resumed = invoke(dsn, "queues", "resume", "reports")

    assert resumed.exit_code == 0, resumed.output
    assert resumed.stdout.strip() == "queue reports resumed: its 5 queued run(s) can start again"
    assert queue_row(conn, "reports") == (False, False)
    assert "queue paused" not in waiting_for(conn).values()


def test_pause_and_resume_are_idempotent(conn: Conn, dsn: str, reports: dict[str, int]) -> None:
    invoke(dsn, "queues", "pause", "reports")
    paused_at = conn.execute("SELECT paused_at FROM pgjobs.queues").fetchone()

    again = invoke(dsn, "queues", "pause", "reports")

    assert again.exit_code == 0, again.output
    assert again.stdout.startswith("queue reports was already paused, since ")
    assert conn.execute("SELECT paused_at FROM pgjobs.queues").fetchone() == paused_at

    assert invoke(dsn, "queues", "resume", "reports").exit_code == 0
    twice = invoke(dsn, "queues", "resume", "reports")
    assert twice.exit_code == 0, twice.output
    assert twice.stdout.strip() == "queue reports was not paused"
    never = invoke(dsn, "queues", "resume", "emails")
    assert never.stdout.strip() == "queue emails was not paused"
    assert queue_row(conn, "emails") is None


def test_resuming_a_queue_names_its_jobs_that_stay_paused(
    conn: Conn, dsn: str, reports: dict[str, int]
) -> None:
    invoke(dsn, "queues", "pause", "reports")
    assert invoke(dsn, "jobs", "pause", "t-export").exit_code == 0

    resumed = invoke(dsn, "queues", "resume", "reports")

    assert "these of its jobs are paused on their own: t-export" in resumed.stdout
    assert waiting_for(conn)[reports["export"]] == "job paused"
    assert waiting_for(conn)[reports["enqueue"]] == "worker"


def test_a_queue_nothing_uses_yet_may_be_paused_ahead(conn: Conn, dsn: str) -> None:
    add_job(conn, "t-report", queue="reports")

    paused = invoke(dsn, "queues", "pause", "reprots")

    assert paused.exit_code == 0, paused.output
    assert paused.stdout.strip().endswith(
        "; no job, run or worker uses it yet (did you mean: reports?)"
    )
    assert queue_row(conn, "reprots") == (True, True)
    # A run queued to it later waits like any other of a paused queue.
    run_id = add_run(conn, "t-report", queue="reprots")
    assert waiting_for(conn)[run_id] == "queue paused"


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("", "queue name must be a non-empty string, got ''"),
        ("   ", "queue name must be a non-empty string, got '   '"),
        ("q" * 201, "queue name must be at most 200 characters, got 201"),
    ],
)
def test_a_bad_queue_name_is_one_line_and_exit_2(dsn: str, name: str, says: str) -> None:
    for args in (("queues", "pause", name), ("queues", "resume", name), ("runs", "waits")):
        if args[0] == "runs":
            args = (*args, "--queue", name)
        proc = run_pgjobs(dsn, *args)
        assert proc.returncode == 2, args
        assert one_line_error(proc) == f"error: {says}", args


def test_a_queue_name_with_a_nul_is_refused(conn: Conn, dsn: str) -> None:
    result = invoke(dsn, "queues", "pause", "re\x00ports")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: queue name must not contain a NUL character"
    assert conn.execute("SELECT count(*) FROM pgjobs.queues").fetchone() == (0,)


def test_queues_list_of_an_unreachable_database_is_one_line_and_exit_3() -> None:
    proc = run_pgjobs("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1", "queues", "list")
    assert proc.returncode == 3
    assert one_line_error(proc).startswith("error: ")


# -- list ---------------------------------------------------------------------------------------


def test_queues_list_shows_state_runs_what_they_wait_for_and_the_workers(
    conn: Conn, dsn: str, reports: dict[str, int]
) -> None:
    add_worker(conn, "w-live", [])
    add_worker(conn, "w-dead", [], live=False)
    conn.execute("UPDATE pgjobs.workers SET queues = '{reports,emails}' WHERE id = 'w-live'")
    conn.execute("UPDATE pgjobs.workers SET queues = '{reports,ghost}' WHERE id = 'w-dead'")
    conn.execute("INSERT INTO pgjobs.queues (name, rate_limit) VALUES ('idle', '5/s')")
    add_run(conn, "t-mail", queue="emails", scheduled_for="2999-01-01T00:00:00Z")
    assert invoke(dsn, "queues", "pause", "reports").exit_code == 0

    listed = {q["name"]: q for q in parse_json(invoke(dsn, "queues", "list", "--json"))}

    # Every queue a job, a run, a live worker or a row names; not one only a dead worker names.
    assert set(listed) == {"emails", "idle", "reports"}
    report = listed["reports"]
    assert report["paused"] is True and report["paused_at"] is not None
    assert (report["queued"], report["due"], report["running"]) == (5, 5, 1)
    assert report["waiting"] == {
        "dependencies": 0,
        "scheduled": 0,
        "job paused": 0,
        "queue paused": 5,
        "concurrency": 0,
        "rate limit": 0,
        "worker": 0,
    }
    assert report["workers"] == ["w-live"]
    mail = listed["emails"]
    assert mail["paused"] is False and (mail["queued"], mail["delayed"]) == (2, 1)
    assert (mail["waiting"]["worker"], mail["waiting"]["scheduled"]) == (1, 1)
    assert listed["idle"]["rate_limit"] == "5/s" and listed["idle"]["queued"] == 0
    assert listed["idle"]["workers"] == [] and listed["idle"]["paused"] is False

    table = invoke(dsn, "queues", "list")
    assert table.exit_code == 0, table.output
    lines = {line.split()[0]: line for line in table.stdout.splitlines()[1:]}
    assert lines["reports"].split()[1] == "paused"
    assert "5 queue paused" in lines["reports"] and "w-live" in lines["reports"]
    assert "1 scheduled, 1 worker" in lines["emails"]
    assert "5/s" in lines["idle"] and lines["idle"].split()[1] == "active"
    assert lines["idle"].rstrip().endswith("none")


def test_queues_list_without_queues(dsn: str) -> None:
    result = invoke(dsn, "queues", "list")
    assert result.stdout.strip() == "no queues: no job, run or worker names one yet"
    assert parse_json(invoke(dsn, "queues", "list", "--json")) == []


# -- why runs wait ------------------------------------------------------------------------------


@pytest.fixture
def limited(conn: Conn) -> dict[str, int]:
    """A job at its concurrency limit for one key and out of rate tokens, and an idle job."""
    add_job(conn, "t-limited", max_concurrency=2, concurrency_key="tenant", rate_limit="1/m")
    add_job(conn, "t-free", overlap="allow")
    hold_slots(conn, "t-limited", "acme", 2)
    empty_bucket(conn, "job", "t-limited")
    return {
        "acme": add_run(conn, "t-limited", concurrency_key="acme"),
        "globex": add_run(conn, "t-limited", concurrency_key="globex"),
        "free": add_run(conn, "t-free"),
        "later": add_run(conn, "t-free", scheduled_for="2999-01-01T00:00:00Z"),
    }


def test_runs_waits_says_what_each_queued_run_waits_for(
    conn: Conn, dsn: str, limited: dict[str, int]
) -> None:
    waits = {w["id"]: w for w in parse_json(invoke(dsn, "runs", "waits", "--json"))}

    assert set(waits) == set(limited.values())
    acme, globex = waits[limited["acme"]], waits[limited["globex"]]
    assert (acme["waiting_for"], acme["detail"]) == ("concurrency", "2 of 2 running for key acme")
    assert acme["concurrency_key"] == "acme" and acme["queue"] == "default"
    assert globex["waiting_for"] == "rate limit"
    assert globex["detail"].startswith("job t-limited: next token in ")
    assert waits[limited["free"]]["waiting_for"] == "worker"
    assert waits[limited["later"]]["waiting_for"] == "scheduled"
    assert waits[limited["later"]]["waiting_seconds"] < 0
    assert waits[limited["free"]]["waiting_seconds"] >= 0

    table = invoke(dsn, "runs", "waits")
    assert table.exit_code == 0, table.output
    lines = {int(line.split()[0]): line for line in table.stdout.splitlines()[1:]}
    assert "concurrency  2 of 2 running for key acme" in lines[limited["acme"]]
    assert "due in " in lines[limited["later"]]


def test_runs_waits_filters_orders_and_limits(
    conn: Conn, dsn: str, limited: dict[str, int]
) -> None:
    def ids(*args: str) -> list[int]:
        return [w["id"] for w in parse_json(invoke(dsn, "runs", "waits", "--json", *args))]

    # The longest waiting first: the run not due yet comes last.
    assert ids()[-1] == limited["later"]
    assert ids("--newest")[0] == limited["later"]
    assert ids("--job", "t-free") == [limited["free"], limited["later"]]
    assert ids("--reason", "concurrency") == [limited["acme"]]
    assert ids("--queue", "default", "-n", "2") == ids()[:2]
    assert ids("--queue", "nowhere") == []
    assert invoke(dsn, "runs", "waits", "--queue", "nowhere").stdout.strip() == (
        "no queued runs match"
    )

    unknown = invoke(dsn, "runs", "waits", "--job", "t-limitd")
    assert unknown.exit_code == 2
    assert unknown.stderr.strip().endswith("did you mean: t-limited?")


def test_runs_show_and_list_say_why_a_queued_run_waits(
    conn: Conn, dsn: str, limited: dict[str, int]
) -> None:
    shown = invoke(dsn, "runs", "show", str(limited["acme"]))
    assert "waiting for    concurrency (2 of 2 running for key acme)" in shown.stdout
    as_json = parse_json(invoke(dsn, "runs", "show", str(limited["acme"]), "--json"))
    assert as_json["waiting_for"] == "concurrency"
    assert as_json["waiting_detail"] == "2 of 2 running for key acme"

    listed = invoke(dsn, "runs", "list", "--status", "queued")
    assert listed.stdout.rstrip().endswith("what the queued runs wait for: pgjobs runs waits")
    running = invoke(dsn, "runs", "list", "--status", "running")
    assert "runs waits" not in running.stdout
