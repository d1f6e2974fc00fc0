"""Least privilege: the migrator, worker and reader roles of ``pgjobs db grant``, each running the
commands it is for (and refused the others in one line) against the real database."""

from __future__ import annotations

import asyncio
import http.client
import itertools
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import generate_latest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgjobs.dashboard import DashboardSettings, make_server
from pgjobs.enqueue import enqueue_sync
from pgjobs.metrics import cluster_registry
from pgjobs.migrations import ROLE_KINDS, head
from pgjobs.named_queries import Queries
from pgjobs.store import WorkerStore
from tests.cli import add_job, add_run, add_worker, invoke, one_line_error, run_pgjobs
from tests.workers import scalar, wait_until, worker_pool

APP = ("--app", "tests.worker_apps.app:extension")
_ids = itertools.count(1)


@dataclass
class Roles:
    """Three login roles of one test, and a DSN of the test's database for each."""

    names: dict[str, str]
    dsns: dict[str, str]
    admin: str

    def has(self, kind: str, privilege: str, table: str = "pgjobs.runs") -> bool:
        return bool(
            scalar(
                self.admin,
                "SELECT has_table_privilege(%s, %s, %s)",
                self.names[kind],
                table,
                privilege,
            )
        )


def role_dsn(dsn: str, role: str) -> str:
    """The test database's DSN as ``role``, without a password (trust authentication). Built
    as key=value pairs: the embedded server's host is a socket directory, which a URL's host
    cannot hold."""
    info = conninfo_to_dict(dsn)
    info.pop("password", None)
    info["user"] = role
    return make_conninfo(**info)


@contextmanager
def new_roles(dsn: str) -> Iterator[Roles]:
    """Three new login roles with no pgjobs rights; the server is shared, so the names are
    unique to this process and test, and the roles are dropped afterwards."""
    tag = f"pgjobs_t{os.getpid()}_{next(_ids)}"
    names = {kind: f"{tag}_{kind}" for kind in ROLE_KINDS}
    with psycopg.connect(dsn, autocommit=True) as admin:
        for name in names.values():
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    try:
        yield Roles(names, {k: role_dsn(dsn, n) for k, n in names.items()}, dsn)
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            for name in reversed(names.values()):  # the migrator, the owner, last
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                    [name],
                )
                admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
                admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def bare_roles(dsn: str) -> Iterator[Roles]:
    with new_roles(dsn) as roles:
        yield roles


@pytest.fixture
def roles(bare_roles: Roles) -> Roles:
    """The roles with their rights: a superuser makes the migrator the owner, which grants the
    worker and the reader theirs (as a DBA would set them up)."""
    steps = [
        (bare_roles.admin, "migrator"),
        (bare_roles.dsns["migrator"], "worker"),
        (bare_roles.dsns["migrator"], "reader"),
    ]
    for dsn, kind in steps:
        result = invoke(dsn, "db", "grant", "--role", bare_roles.names[kind], "--as", kind)
        assert result.exit_code == 0, result.output
        assert result.output == (
            f'granted {kind} rights on schema "pgjobs" to role "{bare_roles.names[kind]}"\n'
        )
    return bare_roles


def pgjobs(dsn: str, *args: str, jobs: str = "t-sleep") -> tuple[int, str, str]:
    """``python -m pgjobs ARGS --dsn DSN`` as an operator runs it: exit code, stdout, stderr."""
    proc = run_pgjobs(None, *args, "--dsn", dsn, jobs=jobs)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout, proc.stderr


def refused(dsn: str, *args: str) -> str:
    """The one-line error of a command the role may not run."""
    proc = run_pgjobs(None, *args, "--dsn", dsn, jobs="t-sleep")
    assert proc.returncode != 0, proc.stdout
    return one_line_error(proc)


# -- db grant -----------------------------------------------------------------------------------


def test_db_grant_sql_prints_the_statements_and_grants_nothing(bare_roles: Roles) -> None:
    worker = bare_roles.names["worker"]
    result = invoke(bare_roles.admin, "db", "grant", "--role", worker, "--as", "worker", "--sql")

    assert result.exit_code == 0, result.output
    assert f'GRANT USAGE ON SCHEMA "pgjobs" TO "{worker}";' in result.output
    assert (
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "pgjobs" TO "{worker}";'
    ) in result.output
    assert 'ALTER DEFAULT PRIVILEGES FOR ROLE "postgres" IN SCHEMA "pgjobs"' in result.output
    assert not bare_roles.has("worker", "SELECT")


def test_db_grant_refuses_bad_input_in_one_line(bare_roles: Roles) -> None:
    admin, worker = bare_roles.admin, bare_roles.names["worker"]
    cases = [
        (
            ("--role", worker, "--as", "owner"),
            "error: --as must be one of migrator, worker, reader",
        ),
        (("--as", "worker"), "error: --role is required"),
        (("--role", 'x"; DROP TABLE pgjobs.runs; --', "--as", "reader"), "error: invalid role"),
        (("--role", "public", "--as", "reader"), "error: invalid role name 'public'"),
        (
            ("--role", f"{worker}_missing", "--as", "reader"),
            f'error: role "{worker}_missing" does not exist',
        ),
    ]
    for args, start in cases:
        proc = run_pgjobs(None, "db", "grant", *args, "--dsn", admin)
        assert proc.returncode == 2, proc.stderr
        assert one_line_error(proc).startswith(start), args
    assert scalar(admin, "SELECT to_regclass('pgjobs.runs') IS NOT NULL")


def test_granting_twice_changes_nothing(roles: Roles) -> None:
    def acl() -> Any:
        return scalar(
            roles.admin,
            "SELECT array_agg(relname || ':' || relacl::text ORDER BY relname) FROM pg_class"
            " WHERE relnamespace = 'pgjobs'::regnamespace AND relkind IN ('r', 'v')",
        )

    before = acl()
    result = invoke(
        roles.dsns["migrator"], "db", "grant", "--role", roles.names["worker"], "--as", "worker"
    )
    assert result.exit_code == 0, result.output
    assert acl() == before


# -- the migrator -------------------------------------------------------------------------------


def test_the_migrator_owns_the_schema_and_migrates_it(roles: Roles) -> None:
    migrator = roles.names["migrator"]
    owners = scalar(
        roles.admin,
        "SELECT array_agg(DISTINCT r.rolname) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner"
        " WHERE c.relnamespace = 'pgjobs'::regnamespace",
    )
    assert owners == [migrator]
    assert (
        scalar(
            roles.admin, "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'pgjobs'"
        )
        == migrator
    )

    assert pgjobs(roles.dsns["migrator"], "db", "downgrade", "0003")[0] == 0
    code, out, _ = pgjobs(roles.dsns["migrator"], "db", "upgrade")
    assert (code, out) == (0, f'schema "pgjobs" upgraded: 0003 -> {head()}\n')


def test_a_migrator_with_create_on_the_database_builds_the_schema_it_owns(
    empty_dsn: str,
) -> None:
    with new_roles(empty_dsn) as roles:
        m, worker = roles.dsns["migrator"], roles.names["worker"]
        with psycopg.connect(empty_dsn, autocommit=True) as admin:
            database = admin.execute("SELECT current_database()").fetchone()
            assert database is not None
            admin.execute(
                sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                    sql.Identifier(database[0]), sql.Identifier(roles.names["migrator"])
                )
            )
        code, out, err = pgjobs(m, "db", "upgrade")
        assert (code, out) == (0, f'schema "pgjobs" upgraded: none -> {head()}\n'), err
        assert pgjobs(m, "db", "grant", "--role", worker, "--as", "worker")[0] == 0
        assert pgjobs(roles.dsns["worker"], "jobs", "list")[0] == 0
        assert roles.has("worker", "INSERT")
        assert not roles.has("reader", "SELECT")


def test_tables_a_later_migration_adds_are_covered_by_default_privileges(roles: Roles) -> None:
    with psycopg.connect(roles.dsns["migrator"], autocommit=True) as conn:
        conn.execute("CREATE TABLE pgjobs.later (id bigint GENERATED ALWAYS AS IDENTITY)")

    assert roles.has("worker", "SELECT, INSERT, UPDATE, DELETE", "pgjobs.later")
    assert roles.has("reader", "SELECT", "pgjobs.later")
    assert not roles.has("reader", "INSERT", "pgjobs.later")
    with psycopg.connect(roles.dsns["worker"], autocommit=True) as conn:
        conn.execute("INSERT INTO pgjobs.later DEFAULT VALUES")  # the identity's sequence too


# -- the worker ---------------------------------------------------------------------------------


def test_the_worker_role_runs_the_commands_that_change_rows(roles: Roles) -> None:
    w = roles.dsns["worker"]
    with psycopg.connect(roles.admin, autocommit=True) as admin:
        add_job(admin, "t-sleep")
        finished = add_run(admin, "t-sleep", status="succeeded", created_at="2000-01-01")

    assert pgjobs(w, "db", "upgrade")[1] == f'schema "pgjobs" already at {head()}: nothing to do\n'
    code, out, err = pgjobs(w, "jobs", "run", "t-sleep", "--queue-it", *APP)
    assert code == 0, err
    queued = int(re.findall(r"\d+", out)[0])
    assert pgjobs(w, "runs", "cancel", str(queued))[0] == 0
    code, out, err = pgjobs(w, "runs", "retry", str(queued))
    assert code == 0, err
    retried = int(re.findall(r"as run (\d+)", out)[0])
    assert pgjobs(w, "runs", "cancel", str(retried))[0] == 0
    assert pgjobs(w, "jobs", "pause", "t-sleep")[0] == 0
    assert pgjobs(w, "jobs", "resume", "t-sleep")[0] == 0
    assert pgjobs(w, "runs", "prune", "--older-than", "1d")[0] == 0
    with psycopg.connect(w, autocommit=True) as conn:
        enqueued = enqueue_sync(conn, "t-sleep", {"seconds": 0})

    statuses = dict(
        psycopg.connect(roles.admin, autocommit=True)
        .execute("SELECT id, status FROM pgjobs.runs")
        .fetchall()
    )
    assert statuses == {queued: "cancelled", retried: "cancelled", enqueued: "queued"}
    assert finished not in statuses  # pruned


def test_the_worker_role_may_enqueue_from_sql_and_the_reader_may_not(roles: Roles) -> None:
    with psycopg.connect(roles.admin, autocommit=True) as admin:
        add_job(admin, "t-sleep")
    with psycopg.connect(roles.dsns["worker"], autocommit=True) as conn:
        row = conn.execute("SELECT pgjobs.enqueue('t-sleep', '{\"seconds\": 0}')").fetchone()
    with (
        psycopg.connect(roles.dsns["reader"], autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="function enqueue"),
    ):
        conn.execute("SELECT pgjobs.enqueue('t-sleep')")
    assert row is not None
    assert scalar(roles.admin, "SELECT id FROM pgjobs.runs WHERE trigger = 'enqueue'") == row[0]


def test_the_worker_role_is_refused_ddl_in_one_line(roles: Roles) -> None:
    w, reader = roles.dsns["worker"], roles.names["reader"]
    assert "permission denied" in refused(w, "db", "downgrade", "0003")
    assert refused(w, "db", "grant", "--role", reader, "--as", "worker").startswith(
        f"error: cannot grant worker rights to {reader}:"
    )
    # A schema behind the code: upgrading it is DDL, which the worker may not run.
    assert invoke(roles.dsns["migrator"], "db", "downgrade", "0003").exit_code == 0
    assert "permission denied" in refused(w, "db", "upgrade")
    assert scalar(roles.admin, "SELECT version_num FROM pgjobs.alembic_version") == "0003"


def test_a_worker_process_as_the_worker_role_claims_and_finishes_a_run(
    roles: Roles, tmp_path: Path
) -> None:
    w = roles.dsns["worker"]
    with worker_pool(w, tmp_path) as pool:
        proc = pool.start(["t-sleep"], "--log-level", "debug")
        pool.wait_registered(proc)
        with psycopg.connect(w, autocommit=True) as conn:
            run_id = enqueue_sync(conn, "t-sleep", {"seconds": 0.1})
        wait_until(
            lambda: (
                scalar(w, "SELECT status FROM pgjobs.runs WHERE id = %s", run_id) == "succeeded"
            ),
            30,
            "the run to succeed",
        )
        assert proc.stop() == 0, proc.log()
    assert scalar(w, "SELECT worker_id FROM pgjobs.runs WHERE id = %s", run_id) == proc.id
    assert "only table or database owner can analyze" not in proc.log()
    assert "refreshed the planner statistics" not in proc.log()


def test_a_worker_process_as_the_worker_role_claims_runs_under_limits(
    roles: Roles, tmp_path: Path
) -> None:
    # A rate bucket to sync and debit, slots to take under advisory locks and check again
    # (unheld_slots): the limited claim's path.
    w = roles.dsns["worker"]
    with worker_pool(w, tmp_path) as pool:
        proc = pool.start(["c-rated-fast"], app="tests.worker_apps.controls:extension")
        pool.wait_registered(proc)
        with psycopg.connect(w, autocommit=True) as conn:
            for _ in range(20):
                enqueue_sync(conn, "c-rated-fast")
        wait_until(
            lambda: scalar(w, "SELECT count(*) FROM pgjobs.runs WHERE status = 'succeeded'") == 20,
            30,
            "the runs to succeed",
        )
        assert proc.stop() == 0, proc.log()
    assert scalar(w, "SELECT count(*) FROM pgjobs.runs WHERE worker_id <> %s", proc.id) == 0
    assert scalar(w, "SELECT count(*) FROM pgjobs.runs WHERE slot IS NULL") == 0
    debited = "SELECT max(granted) FROM pgjobs.rate_buckets WHERE name = 'c-rated-fast'"
    assert scalar(w, debited) > 0


def test_only_a_role_that_may_analyze_runs_says_it_refreshed_the_statistics(
    roles: Roles,
) -> None:
    def analyze(dsn: str) -> bool:
        async def go() -> bool:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                return await WorkerStore(conn, Queries(), "w").analyze_runs()

        return asyncio.run(go())

    def reltuples() -> float:
        return float(
            scalar(
                roles.admin, "SELECT reltuples FROM pg_class WHERE oid = 'pgjobs.runs'::regclass"
            )
        )

    with psycopg.connect(roles.admin, autocommit=True) as admin:
        admin.execute(
            "INSERT INTO pgjobs.runs (job, trigger) SELECT 'j', 'enqueue' FROM"
            " generate_series(1, 100)"
        )
    assert reltuples() == -1  # never analyzed

    assert analyze(roles.dsns["worker"]) is False
    assert reltuples() == -1
    assert analyze(roles.dsns["migrator"]) is True
    assert reltuples() == 100


# -- the reader ---------------------------------------------------------------------------------


@pytest.fixture
def seeded(roles: Roles) -> tuple[Roles, int]:
    with psycopg.connect(roles.admin, autocommit=True) as admin:
        add_job(admin, "t-sleep")
        add_worker(admin, "w-1", ["t-sleep"])
        run_id = add_run(admin, "t-sleep")
    return roles, run_id


def test_the_reader_role_runs_every_read_command(seeded: tuple[Roles, int]) -> None:
    roles, run_id = seeded
    r = roles.dsns["reader"]
    for args in [
        ("jobs", "list"),
        ("jobs", "show", "t-sleep"),
        ("jobs", "status"),
        ("jobs", "status", "t-sleep"),
        ("jobs", "history", "--job", "t-sleep"),
        ("jobs", "next", "t-sleep", *APP),
        ("check", *APP),
        ("runs", "list"),
        ("runs", "show", str(run_id)),
        ("workers", "list"),
        ("db", "current"),
    ]:
        code, out, err = pgjobs(r, *args)
        assert (code, err) == (0, ""), args
        assert out, args
    code, out, _ = pgjobs(r, "db", "upgrade")
    assert (code, out) == (0, f'schema "pgjobs" already at {head()}: nothing to do\n')


def test_the_reader_role_is_refused_every_change_in_one_line(seeded: tuple[Roles, int]) -> None:
    roles, run_id = seeded
    r = roles.dsns["reader"]
    for args in [
        ("runs", "cancel", str(run_id)),
        ("jobs", "pause", "t-sleep"),
        ("runs", "prune", "--older-than", "1s", "--yes"),
        ("jobs", "run", "t-sleep", "--queue-it", *APP),
    ]:
        line = refused(r, *args)
        assert line.startswith("error: database error: permission denied for table"), args

    assert scalar(roles.admin, "SELECT status FROM pgjobs.runs WHERE id = %s", run_id) == "queued"
    assert scalar(roles.admin, "SELECT paused FROM pgjobs.jobs WHERE name = 't-sleep'") is False
    assert scalar(roles.admin, "SELECT count(*) FROM pgjobs.runs") == 1


def test_the_reader_role_serves_the_metrics_and_the_dashboard_pages(
    seeded: tuple[Roles, int],
) -> None:
    roles, _ = seeded
    r = roles.dsns["reader"]
    scraped = generate_latest(cluster_registry(r, "pgjobs")).decode()
    assert "pgjobs_up 1.0" in scraped

    server = make_server(DashboardSettings(dsn=r, port=0, refresh=0))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        for path in ("/", "/timeline", "/runs", "/workers", "/queues"):
            conn = http.client.HTTPConnection(str(host), int(port), timeout=10)
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read().decode()
            conn.close()
            assert response.status == 200, (path, body[:500])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
