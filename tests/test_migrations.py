"""Schema migrations on a real server: ``pgjobs db upgrade / downgrade / current`` and the API."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from click.testing import CliRunner

from pgjobs import migrations
from pgjobs.cli import main
from pgjobs.errors import ConfigError, DatabaseError, SchemaError

Snapshot = Callable[..., dict[str, list[tuple[Any, ...]]]]

HEAD = migrations.head()

# Every object a pgjobs database has, whatever the schema is called.
_DATABASE_OBJECTS = r"""
    SELECT 'schema', n.nspname, '' FROM pg_namespace n
    WHERE n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
    UNION ALL
    SELECT 'relation', n.nspname, c.relname FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
    UNION ALL
    SELECT 'function', n.nspname, p.proname FROM pg_proc p
    JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
    UNION ALL
    SELECT 'type', n.nspname, t.typname FROM pg_type t
    JOIN pg_namespace n ON n.oid = t.typnamespace
    WHERE n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
"""


def database_objects(dsn: str) -> set[tuple[str, str, str]]:
    """Every schema, relation, function and type outside the system catalogs."""
    with psycopg.connect(dsn) as conn:
        return {(kind, schema, name) for kind, schema, name in conn.execute(_DATABASE_OBJECTS)}


def snapshot_of(snapshot: Snapshot, dsn: str, schema: str = "pgjobs") -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return snapshot(conn, schema)


def relations(dsn: str, schema: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT c.relname, c.relkind::text FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'v')",
            [schema],
        ).fetchall()
    return {name: kind for name, kind in rows}


# -- upgrade, downgrade, up again ---------------------------------------------------------------


def test_upgrade_on_an_empty_database_creates_the_tables_and_views_of_the_spec(
    empty_dsn: str,
) -> None:
    assert migrations.current(empty_dsn) is None

    migrations.upgrade(empty_dsn)

    assert relations(empty_dsn, "pgjobs") == {
        "alembic_version": "r",
        "jobs": "r",
        "runs": "r",
        "run_dependencies": "r",
        "run_locks": "r",
        "workers": "r",
        "worker_jobs": "r",
        "queues": "r",
        "rate_buckets": "r",
        "schedules": "r",
        "timezone_names": "r",
        "job_status": "v",
        "run_history": "v",
        "run_waits": "v",
        "all_schedules": "v",
    }
    # pgjobs' version table is its own: the application's public schema stays empty.
    assert relations(empty_dsn, "public") == {}
    assert migrations.current(empty_dsn) == HEAD
    with psycopg.connect(empty_dsn) as conn:
        migrations.check_schema(conn)


def test_the_schema_enforces_what_the_spec_says(conn: psycopg.Connection[Any]) -> None:
    insert_run = (
        "INSERT INTO pgjobs.runs (job, trigger, scheduled_for, status) VALUES (%s, %s, %s, %s)"
    )
    tick = "2030-01-01 00:00:00+00"
    conn.execute(insert_run, ["ext.job", "schedule", tick, "queued"])
    # A tick can become a run once, whatever the number of workers...
    with pytest.raises(psycopg.errors.UniqueViolation, match="runs_schedule_tick_key"):
        conn.execute(insert_run, ["ext.job", "schedule", tick, "queued"])
    # ...but manual runs for the same instant are independent.
    conn.execute(insert_run, ["ext.job", "manual", tick, "queued"])
    conn.execute(insert_run, ["ext.job", "manual", tick, "queued"])
    with pytest.raises(psycopg.errors.CheckViolation, match="runs_status_check"):
        conn.execute(insert_run, ["ext.job", "manual", tick, "sleeping"])
    with pytest.raises(psycopg.errors.CheckViolation, match="runs_trigger_check"):
        conn.execute(insert_run, ["ext.job", "cron", tick, "queued"])

    indexes = dict(
        conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'pgjobs'"
        ).fetchall()
    )
    assert "WHERE (status = 'queued'::text)" in indexes["runs_claim_idx"]
    assert "(lease_expires_at) WHERE (status = 'running'::text)" in indexes["runs_lease_idx"]
    assert indexes["runs_schedule_tick_key"].startswith("CREATE UNIQUE INDEX")

    jobs = [row[0] for row in conn.execute("SELECT name FROM pgjobs.job_status")]
    history = [row[0] for row in conn.execute("SELECT job FROM pgjobs.run_history")]
    assert jobs == [] and history == ["ext.job"] * 3


def test_upgrade_twice_is_a_no_op(dsn: str, schema_snapshot: Snapshot) -> None:
    before = snapshot_of(schema_snapshot, dsn)

    assert migrations.upgrade(dsn) is None

    assert snapshot_of(schema_snapshot, dsn) == before
    assert migrations.current(dsn) == HEAD


def test_downgrade_to_base_leaves_nothing_behind_and_up_again_works(
    empty_dsn: str, schema_snapshot: Snapshot
) -> None:
    untouched = database_objects(empty_dsn)
    migrations.upgrade(empty_dsn)
    first = snapshot_of(schema_snapshot, empty_dsn)

    migrations.downgrade(empty_dsn, "base")

    assert database_objects(empty_dsn) == untouched
    assert migrations.current(empty_dsn) is None

    migrations.upgrade(empty_dsn)

    assert snapshot_of(schema_snapshot, empty_dsn) == first
    assert migrations.current(empty_dsn) == HEAD


def test_downgrade_keeps_a_schema_that_holds_objects_of_someone_else(empty_dsn: str) -> None:
    migrations.upgrade(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE pgjobs.notes (id int)")

    migrations.downgrade(empty_dsn, "base")

    assert relations(empty_dsn, "pgjobs") == {"notes": "r"}
    assert migrations.current(empty_dsn) is None


def test_slots_held_in_run_locks_move_onto_their_runs_and_back(empty_dsn: str) -> None:
    # Revision 0006 keeps the slots of limited jobs on the runs; a job that only forbids overlap
    # keeps its lock row. Running runs keep what they hold across the upgrade and the downgrade.
    migrations.upgrade(empty_dsn, revision="0005")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO pgjobs.jobs (name, extension, overlap, max_concurrency, concurrency_key)
            VALUES ('x.limited', 'x', 'allow', 3, NULL), ('x.keyed', 'x', 'allow', NULL, 'tenant'),
                   ('x.single', 'x', 'skip', NULL, NULL);
            INSERT INTO pgjobs.runs (id, job, trigger, status, worker_id, concurrency_key)
            OVERRIDING SYSTEM VALUE
            VALUES (1, 'x.limited', 'enqueue', 'running', 'w', NULL),
                   (2, 'x.keyed', 'enqueue', 'running', 'w', 'acme'),
                   (3, 'x.single', 'schedule', 'running', 'w', NULL);
            INSERT INTO pgjobs.run_locks (job, lock_key, slot, run_id, worker_id, lease_expires_at)
            VALUES ('x.limited', '', 2, 1, 'w', now() + interval '1 hour'),
                   ('x.keyed', 'acme', 1, 2, 'w', now() + interval '1 hour'),
                   ('x.single', '', 1, 3, 'w', now() + interval '1 hour');
            """
        )
    locks = "SELECT job, lock_key, slot, run_id FROM pgjobs.run_locks ORDER BY run_id"

    migrations.upgrade(empty_dsn)

    assert rows_of(empty_dsn, "SELECT id, slot FROM pgjobs.runs ORDER BY id") == [
        (1, 2),
        (2, 1),
        (3, None),
    ]
    assert rows_of(empty_dsn, locks) == [("x.single", "", 1, 3)]

    migrations.downgrade(empty_dsn, "0005")

    assert rows_of(empty_dsn, locks) == [
        ("x.limited", "", 2, 1),
        ("x.keyed", "acme", 1, 2),
        ("x.single", "", 1, 3),
    ]


def test_jobs_watermarks_and_runs_upgrade_to_schedules_intact(empty_dsn: str) -> None:
    # Revision 0009 keys a tick by (job, schedule, tick). A database at 0008 with jobs, their
    # watermarks and ticks' runs upgrades with all of them as they were, and its ticks stay
    # unique: the job's own schedule is the schedule NULL.
    migrations.upgrade(empty_dsn, revision="0008")
    tick = "2030-01-01 00:00:00+00"
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pgjobs.jobs (name, extension, schedule, timezone, next_fire_at)"
            " VALUES ('x.nightly', 'x', '0 30 2 * * *', 'Europe/Paris', '2030-01-02 01:30+00')"
        )
        conn.execute(
            "INSERT INTO pgjobs.runs (id, job, trigger, scheduled_for, status)"
            " OVERRIDING SYSTEM VALUE VALUES (101, 'x.nightly', 'schedule', %(tick)s, 'succeeded'),"
            " (102, 'x.nightly', 'manual', %(tick)s, 'queued')",
            {"tick": tick},
        )
    jobs = "SELECT name, schedule, timezone, next_fire_at FROM pgjobs.jobs"
    runs = "SELECT id, job, trigger, scheduled_for, status FROM pgjobs.runs WHERE id > 100"
    before = (rows_of(empty_dsn, jobs), rows_of(empty_dsn, runs))

    migrations.upgrade(empty_dsn)

    assert (rows_of(empty_dsn, jobs), rows_of(empty_dsn, runs)) == before
    assert rows_of(empty_dsn, "SELECT schedule FROM pgjobs.runs WHERE id = 101") == [(None,)]
    insert_tick = (
        "INSERT INTO pgjobs.runs (job, trigger, schedule, scheduled_for) "
        "VALUES ('x.nightly', 'schedule', %s, %s)"
    )
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(insert_tick, ["extra", tick])  # another schedule, the same second
        with pytest.raises(psycopg.errors.UniqueViolation, match="runs_schedule_tick_key"):
            conn.execute(insert_tick, [None, tick])  # the job's own tick, made twice
        with pytest.raises(psycopg.errors.UniqueViolation, match="runs_schedule_tick_key"):
            conn.execute(insert_tick, ["extra", tick])

    migrations.downgrade(empty_dsn, "0008")

    # The runtime schedule's run stays, as a manual run; the job's own tick is unique again.
    assert rows_of(empty_dsn, "SELECT trigger FROM pgjobs.runs WHERE id < 100") == [("manual",)]
    assert (rows_of(empty_dsn, jobs), rows_of(empty_dsn, runs)) == before


def rows_of(dsn: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchall()


def test_replicas_that_upgrade_at_once_all_succeed(empty_dsn: str) -> None:
    replicas = [_start_pgjobs("upgrade", "--dsn", empty_dsn) for _ in range(4)]
    errors = [replica.communicate(timeout=60)[1] for replica in replicas]

    assert [replica.returncode for replica in replicas] == [0, 0, 0, 0], errors
    assert migrations.current(empty_dsn) == HEAD


# -- offline DDL, schema names ------------------------------------------------------------------


def test_sql_mode_prints_the_ddl_for_the_schema_without_a_database(
    empty_dsn: str, dsn: str, schema_snapshot: Snapshot
) -> None:
    ddl = migrations.upgrade("host=/nonexistent port=1", schema="tenant_a", sql=True)

    assert ddl is not None
    assert 'CREATE SCHEMA IF NOT EXISTS "tenant_a";' in ddl
    assert 'CREATE TABLE "tenant_a".runs (' in ddl
    assert 'CREATE VIEW "tenant_a".job_status AS' in ddl
    assert "INSERT INTO tenant_a.alembic_version (version_num) VALUES ('0001')" in ddl
    assert f"UPDATE tenant_a.alembic_version SET version_num='{HEAD}'" in ddl
    assert "{schema}" not in ddl and '"pgjobs"' not in ddl

    # What a DBA would apply with psql builds the same schema as `pgjobs db upgrade`.
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(ddl.encode())
    assert migrations.current(empty_dsn, "tenant_a") == HEAD
    assert snapshot_of(schema_snapshot, empty_dsn, "tenant_a") == snapshot_of(schema_snapshot, dsn)


def test_a_non_default_schema_lives_next_to_the_default_one(
    dsn: str, schema_snapshot: Snapshot
) -> None:
    migrations.upgrade(dsn, schema="tenant_a")

    assert migrations.current(dsn, "tenant_a") == HEAD
    assert snapshot_of(schema_snapshot, dsn, "tenant_a") == snapshot_of(schema_snapshot, dsn)

    migrations.downgrade(dsn, "base", schema="tenant_a")

    assert relations(dsn, "tenant_a") == {}
    assert migrations.current(dsn, "tenant_a") is None
    assert migrations.current(dsn) == HEAD


@pytest.mark.parametrize("schema", ['x"; DROP TABLE t; --', "Pgjobs", "1st", "a-b", "a" * 64])
def test_an_invalid_schema_name_is_refused(empty_dsn: str, schema: str) -> None:
    untouched = database_objects(empty_dsn)

    with pytest.raises(ConfigError, match="invalid schema name"):
        migrations.upgrade(empty_dsn, schema=schema)
    with pytest.raises(ConfigError, match="invalid schema name"):
        migrations.upgrade(empty_dsn, schema=schema, sql=True)
    with pytest.raises(ConfigError, match="invalid schema name"):
        migrations.current(empty_dsn, schema)

    assert database_objects(empty_dsn) == untouched


# -- the SQL files are the one source of the DDL ------------------------------------------------


def _declared_schema(dsn: str) -> None:
    """Apply every ``sql/*.up.sql`` file in order, without alembic."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for path in sorted(migrations.resource_dir("sql").glob("*.up.sql")):
            conn.execute(migrations.sql_file(path.name, "pgjobs").encode())


def test_the_migrated_schema_equals_the_declared_one_in_the_catalog(
    empty_dsn: str, dsn: str, schema_snapshot: Snapshot
) -> None:
    _declared_schema(empty_dsn)

    with psycopg.connect(empty_dsn) as declared, psycopg.connect(dsn) as migrated:
        assert schema_snapshot(migrated, exclude=("alembic_version",)) == schema_snapshot(declared)


def _pg_dump_major(binary: str) -> int:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out.split(")")[-1])
    return int(match.group(1)) if match else 0


def _pg_dump_for(dsn: str) -> str | None:
    """The newest pg_dump around; None if it is older than the server (it would refuse)."""
    candidates = {
        shutil.which("pg_dump"),
        *map(str, Path("/usr/lib/postgresql").glob("*/bin/pg_dump")),
    }
    embedded = importlib.util.find_spec("pgserver")
    if embedded and embedded.submodule_search_locations:
        bin_dir = Path(next(iter(embedded.submodule_search_locations))) / "pginstall/bin"
        candidates.add(str(bin_dir / "pg_dump"))
    found = sorted(
        ((_pg_dump_major(path), path) for path in candidates if path and Path(path).is_file()),
        reverse=True,
    )
    with psycopg.connect(dsn) as conn:
        server_major = conn.info.server_version // 10000
    return found[0][1] if found and found[0][0] >= server_major else None


def _dump(pg_dump: str, dsn: str) -> list[str]:
    out = subprocess.run(
        [
            pg_dump,
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            "--schema=pgjobs",
            "--exclude-table=pgjobs.alembic_version",
            f"--dbname={dsn}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # Comments name the dump's source; \restrict lines carry a random key; some server builds
    # stamp every new column with a per-creation option (pg_attver) that no DDL of ours sets.
    return [
        line
        for line in out.splitlines()
        if line.strip()
        and not line.startswith(("--", "\\restrict", "\\unrestrict"))
        and not _SERVER_COLUMN_STAMP.fullmatch(line)
    ]


_SERVER_COLUMN_STAMP = re.compile(r"ALTER TABLE ONLY \S+ ALTER COLUMN \S+ SET \(pg_attver=\d+\);")


def test_the_migrated_schema_equals_the_declared_one_in_pg_dump(empty_dsn: str, dsn: str) -> None:
    pg_dump = _pg_dump_for(dsn)
    if pg_dump is None:
        pytest.skip("no pg_dump as new as the server")
    _declared_schema(empty_dsn)

    migrated = _dump(pg_dump, dsn)

    assert "CREATE TABLE pgjobs.runs (" in migrated
    assert migrated == _dump(pg_dump, empty_dsn)


# -- an application's own alembic history -------------------------------------------------------

_APP_ENV = """
import psycopg
from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

dsn = context.config.attributes["dsn"]
engine = create_engine(
    "postgresql+psycopg://", creator=lambda: psycopg.connect(dsn), poolclass=NullPool
)
with engine.connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
"""

_APP_REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "app1"
down_revision = None


def upgrade():
    op.create_table("items", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("items")
"""


@pytest.fixture
def app_alembic(tmp_path: Path, empty_dsn: str) -> Config:
    """An application's own alembic environment, with its version table in ``public``."""
    (tmp_path / "app_migrations/versions").mkdir(parents=True)
    (tmp_path / "app_migrations/env.py").write_text(textwrap.dedent(_APP_ENV))
    (tmp_path / "app_migrations/versions/app1_items.py").write_text(_APP_REVISION)
    config = Config()
    config.set_main_option("script_location", str(tmp_path / "app_migrations"))
    config.attributes["dsn"] = empty_dsn
    return config


def app_revision(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [row[0] for row in conn.execute("SELECT version_num FROM public.alembic_version")]


def test_pgjobs_and_an_application_keep_independent_alembic_histories(
    empty_dsn: str, app_alembic: Config, schema_snapshot: Snapshot
) -> None:
    command.upgrade(app_alembic, "head")
    assert app_revision(empty_dsn) == ["app1"]

    result = CliRunner().invoke(main, ["db", "upgrade", "--dsn", empty_dsn])

    assert result.exit_code == 0, result.output
    assert app_revision(empty_dsn) == ["app1"]
    assert migrations.current(empty_dsn) == HEAD
    pgjobs_schema = snapshot_of(schema_snapshot, empty_dsn)

    # The application migrates down and up: pgjobs does not notice.
    command.downgrade(app_alembic, "base")
    assert app_revision(empty_dsn) == []
    assert relations(empty_dsn, "public") == {"alembic_version": "r"}
    assert snapshot_of(schema_snapshot, empty_dsn) == pgjobs_schema
    command.upgrade(app_alembic, "head")
    assert migrations.current(empty_dsn) == HEAD

    # pgjobs goes away: the application does not notice.
    migrations.downgrade(empty_dsn, "base")
    assert migrations.current(empty_dsn) is None
    assert app_revision(empty_dsn) == ["app1"]
    assert relations(empty_dsn, "public") == {"alembic_version": "r", "items": "r"}

    command.downgrade(app_alembic, "base")
    assert relations(empty_dsn, "public") == {"alembic_version": "r"}
    assert ("schema", "pgjobs", "") not in database_objects(empty_dsn)


# -- check_schema -------------------------------------------------------------------------------


def test_check_schema_says_the_schema_is_missing_and_how_to_fix_it(empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn) as conn:
        with pytest.raises(SchemaError) as missing:
            migrations.check_schema(conn)
        with pytest.raises(SchemaError) as missing_other:
            migrations.check_schema(conn, "tenant_a")
        # The caller's connection is left as it was, not in a transaction.
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE

    assert str(missing.value) == 'pgjobs schema "pgjobs" is missing: run `pgjobs db upgrade`'
    assert str(missing_other.value) == (
        'pgjobs schema "tenant_a" is missing: run `pgjobs db upgrade --schema tenant_a`'
    )


def test_check_schema_says_an_old_schema_needs_an_upgrade(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    migrations.downgrade(dsn, "0001")

    with pytest.raises(SchemaError) as old:
        migrations.check_schema(conn)

    assert str(old.value) == (
        f'pgjobs schema "pgjobs" is at revision 0001 but this pgjobs needs {HEAD}: '
        "run `pgjobs db upgrade`"
    )


def test_check_schema_says_a_schema_from_a_newer_pgjobs_needs_a_newer_pgjobs(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("UPDATE pgjobs.alembic_version SET version_num = '9999'")

    with pytest.raises(SchemaError, match=r"at revision 9999, .* upgrade pgjobs$"):
        migrations.check_schema(conn)


# -- the command line ---------------------------------------------------------------------------


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main, ["db", *args], env=env)


def test_db_commands_upgrade_show_and_downgrade_the_schema(empty_dsn: str) -> None:
    steps = [
        (["current"], "none (run `pgjobs db upgrade`)\n"),
        (["upgrade"], f'schema "pgjobs" upgraded: none -> {HEAD}\n'),
        (["upgrade"], f'schema "pgjobs" already at {HEAD}: nothing to do\n'),
        (["current"], f"{HEAD}\n"),
        (["downgrade", "base"], f'schema "pgjobs" downgraded: {HEAD} -> base\n'),
        (["current"], "none (run `pgjobs db upgrade`)\n"),
    ]
    for args, expected in steps:
        result = invoke(*args, "--dsn", empty_dsn)
        assert (result.exit_code, result.output) == (0, expected), args


def test_db_commands_read_the_dsn_and_schema_from_the_environment(empty_dsn: str) -> None:
    env = {"PGJOBS_DSN": empty_dsn, "PGJOBS_SCHEMA": "tenant_a"}

    assert invoke("upgrade", "--revision", HEAD, env=env).exit_code == 0

    assert invoke("current", env=env).output == f"{HEAD}\n"
    assert migrations.current(empty_dsn, "tenant_a") == HEAD
    assert migrations.current(empty_dsn) is None


def test_db_upgrade_sql_prints_the_ddl() -> None:
    result = invoke("upgrade", "--sql", "--schema", "tenant_b", env={"PGJOBS_DSN": "port=1"})

    assert result.exit_code == 0
    assert 'CREATE TABLE "tenant_b".jobs (' in result.output


def test_db_commands_refuse_bad_input_in_one_line(empty_dsn: str) -> None:
    bad_schema = invoke("upgrade", "--dsn", empty_dsn, "--schema", "No-Such")
    bad_revision = invoke("downgrade", "nope", "--dsn", empty_dsn)

    assert bad_schema.exit_code == ConfigError.exit_code
    assert bad_schema.output.startswith("error: invalid schema name 'No-Such'")
    assert bad_schema.output.count("\n") == 1
    assert bad_revision.exit_code == ConfigError.exit_code
    assert bad_revision.output.count("\n") == 1
    assert "nope" in bad_revision.output


def _start_pgjobs(*args: str) -> subprocess.Popen[str]:
    """``pgjobs db ARGS`` through the installed console script."""
    script = Path(sys.executable).parent / "pgjobs"
    return subprocess.Popen(
        [str(script), "db", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _pgjobs(*args: str) -> subprocess.CompletedProcess[str]:
    process = _start_pgjobs(*args)
    stdout, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_the_pgjobs_command_migrates_a_database(empty_dsn: str) -> None:
    upgraded = _pgjobs("upgrade", "--dsn", empty_dsn)
    current = _pgjobs("current", "--dsn", empty_dsn)
    downgraded = _pgjobs("downgrade", "base", "--dsn", empty_dsn)

    assert (upgraded.returncode, upgraded.stderr) == (0, "")
    assert (current.returncode, current.stdout) == (0, f"{HEAD}\n")
    assert (downgraded.returncode, downgraded.stderr) == (0, "")
    assert migrations.current(empty_dsn) is None


def test_an_unreachable_database_is_one_line_without_the_password() -> None:
    dsn = "postgresql://pgjobs:s3cret-pw@127.0.0.1:1/app"

    result = _pgjobs("upgrade", "--dsn", dsn)

    assert result.returncode == DatabaseError.exit_code
    assert result.stdout == ""
    assert result.stderr.startswith("error: cannot connect to 127.0.0.1:1/app")
    assert result.stderr.count("\n") == 1
    assert "s3cret-pw" not in result.stderr


def test_the_revision_files_form_the_linear_history_alembic_sees() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrations.alembic_config())
    history = [rev.revision for rev in reversed(list(script.walk_revisions()))]
    assert history == list(migrations._known_revisions())
    assert migrations.head() == script.get_current_head() == history[-1]
    assert [int(r) for r in history] == list(range(1, len(history) + 1))


@pytest.mark.parametrize(
    ("found", "revision", "expected"),
    [
        (HEAD, "head", True),
        (HEAD, "0002", True),  # an upgrade never goes down
        ("0003", "head", HEAD == "0003"),
        (None, "head", False),
        ("9999", "head", False),  # from a newer pgjobs: let alembic say what it thinks
        (HEAD, "+1", False),  # relative revisions are alembic's to resolve
    ],
)
def test_is_up_to_date_tells_when_an_upgrade_has_nothing_to_do(
    found: str | None, revision: str, expected: bool
) -> None:
    assert migrations.is_up_to_date(found, revision) is expected


def test_upgrade_of_a_current_schema_neither_locks_nor_writes(dsn: str) -> None:
    # Another session holds the migrations' lock: an upgrade that took it would wait.
    with psycopg.connect(dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(hashtext('pgjobs.migrations.pgjobs'))")
        before = holder.execute("SELECT xmin::text FROM pgjobs.alembic_version").fetchone()
        done = threading.Event()

        def upgrade() -> None:
            migrations.upgrade(dsn)
            migrations.upgrade(dsn, revision="0002")
            done.set()

        thread = threading.Thread(target=upgrade, daemon=True)
        thread.start()
        finished = done.wait(20)
        holder.execute("SELECT pg_advisory_unlock_all()")
        thread.join(20)
        assert finished, "upgrade of a current schema waited for the migrations' lock"
        after = holder.execute("SELECT xmin::text FROM pgjobs.alembic_version").fetchone()
    assert after == before
