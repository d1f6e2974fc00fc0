"""Real PostgreSQL for the test suite: one server per run, one fresh database per test.

The server is found in this order:

1. ``PGJOBS_TEST_DSN``: an admin DSN of a running server (CI sets it);
2. a testcontainers Postgres, if a Docker engine answers within two seconds;
3. an embedded Postgres from the ``pgserver`` package, in a temporary directory.

The session migrates one template database to the head revision; each test that asks for ``dsn``
or ``conn`` gets its own clone of it (``CREATE DATABASE ... TEMPLATE``), dropped afterwards.
Database names carry the pid, so several runs can share one server.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgjobs import migrations

_PREFIX = f"pgjobs_test_{os.getpid()}"
_counter = itertools.count(1)


# -- finding a server ---------------------------------------------------------------------------


def _docker_answers(timeout: float = 2.0) -> bool:
    """True if a Docker engine answers within ``timeout`` seconds."""
    host = os.environ.get("DOCKER_HOST", "")
    sockets = [Path("/var/run/docker.sock"), Path.home() / ".docker/run/docker.sock"]
    if not host and not any(path.exists() for path in sockets):
        return False
    try:
        import docker

        client = docker.from_env(timeout=int(timeout))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _wait_until_ready(admin_dsn: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(admin_dsn, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """Admin DSN (may create and drop databases) of the PostgreSQL server of this test run."""
    configured = os.environ.get("PGJOBS_TEST_DSN")
    if configured:
        _wait_until_ready(configured)
        yield configured
        return

    if _docker_answers():
        try:
            from testcontainers.community.postgres import PostgresContainer
        except ImportError:  # testcontainers before the "community" layout
            from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            admin_dsn = container.get_connection_url()
            _wait_until_ready(admin_dsn)
            yield admin_dsn
        return

    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime directory it does not need here.
        warnings.simplefilter("ignore")
        import pgserver

        data_dir = tempfile.mkdtemp(prefix="pgjobs-pg-")
        server = pgserver.get_server(data_dir, cleanup_mode="delete")
    try:
        admin_dsn = server.get_uri()
        _wait_until_ready(admin_dsn)
        yield admin_dsn
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


# -- databases ----------------------------------------------------------------------------------


def database_dsn(admin_dsn: str, dbname: str) -> str:
    """The admin DSN pointed at another database of the same server."""
    return make_conninfo(admin_dsn, dbname=dbname)


def _admin(admin_dsn: str) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(admin_dsn, autocommit=True)


def _create_database(admin_dsn: str, name: str, template: str, attempts: int = 20) -> None:
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
        sql.Identifier(name), sql.Identifier(template)
    )
    with _admin(admin_dsn) as admin:
        for attempt in range(attempts):
            try:
                admin.execute(statement)
                return
            except psycopg.errors.ObjectInUse:
                # Someone is connected to the template (it only happens to template1 or a template
                # whose last migration connection is still closing): kick them out and retry.
                if attempt == attempts - 1:
                    raise
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    [template],
                )
                time.sleep(0.05 * (attempt + 1))


def _drop_database(admin_dsn: str, name: str) -> None:
    identifier = sql.Identifier(name)
    with _admin(admin_dsn) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists:
            # A template database cannot be dropped.
            admin.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(identifier))
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(identifier))


@pytest.fixture(scope="session")
def _databases(pg_admin_dsn: str) -> Iterator[set[str]]:
    """Names of the databases this run created; whatever is left is dropped at session end."""
    with _admin(pg_admin_dsn) as admin:
        # A previous run with the same pid that was killed before cleaning up.
        stale = admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", [f"{_PREFIX}\\_%"]
        ).fetchall()
    for (name,) in stale:
        _drop_database(pg_admin_dsn, name)
    created: set[str] = set()
    yield created
    for name in sorted(created):
        _drop_database(pg_admin_dsn, name)


def _new_database(admin_dsn: str, databases: set[str], template: str, kind: str) -> str:
    name = f"{_PREFIX}_{kind}_{next(_counter)}"
    databases.add(name)
    _create_database(admin_dsn, name, template)
    return name


@pytest.fixture(scope="session")
def migrated_template(pg_admin_dsn: str, _databases: set[str]) -> str:
    """Name of a database migrated to the head revision, used as TEMPLATE for ``dsn``.

    Nobody may connect to it (``ALLOW_CONNECTIONS false``): a connection would make cloning fail.
    """
    name = _new_database(pg_admin_dsn, _databases, "template0", "template")
    migrations.upgrade(database_dsn(pg_admin_dsn, name))
    with _admin(pg_admin_dsn) as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(
                sql.Identifier(name)
            )
        )
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name]
        )
    return name


@pytest.fixture(scope="session")
def fresh_database(
    pg_admin_dsn: str, migrated_template: str, _databases: set[str]
) -> Callable[[], AbstractContextManager[str]]:
    """A context manager giving the DSN of a fresh database, migrated to head, dropped on
    leaving it: ``dsn`` for one test, or for a fixture of a wider scope whose data costs much to
    load and which its tests only read."""

    @contextmanager
    def fresh() -> Iterator[str]:
        name = _new_database(pg_admin_dsn, _databases, migrated_template, "db")
        try:
            yield database_dsn(pg_admin_dsn, name)
        finally:
            _drop_database(pg_admin_dsn, name)
            _databases.discard(name)

    return fresh


@pytest.fixture
def dsn(fresh_database: Callable[[], AbstractContextManager[str]]) -> Iterator[str]:
    """DSN of a fresh database, migrated to head, dropped after the test."""
    with fresh_database() as name:
        yield name


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """An autocommit connection (tuple rows) to the test's fresh migrated database."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture
def empty_dsn(pg_admin_dsn: str, _databases: set[str]) -> Iterator[str]:
    """DSN of a fresh empty database (no pgjobs schema), dropped after the test."""
    name = _new_database(pg_admin_dsn, _databases, "template0", "empty")
    yield database_dsn(pg_admin_dsn, name)
    _drop_database(pg_admin_dsn, name)
    _databases.discard(name)


# -- looking at a schema ------------------------------------------------------------------------

# Each query gives the name of the relation an object belongs to first, for ``exclude``.
_SNAPSHOT_QUERIES = {
    "relations": """
        SELECT coalesce(t.relname, c.relname), c.relname, c.relkind::text,
               coalesce(c.reloptions, '{}')
        FROM pg_class c
        LEFT JOIN pg_index i ON i.indexrelid = c.oid
        LEFT JOIN pg_class t ON t.oid = i.indrelid
        WHERE c.relnamespace = %(schema)s::regnamespace
    """,
    "columns": """
        SELECT c.relname, row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum), a.attname,
               format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = %(schema)s::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND a.attnum > 0 AND NOT a.attisdropped
    """,
    "constraints": """
        SELECT c.relname, k.conname, k.contype::text, pg_get_constraintdef(k.oid)
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
        WHERE k.connamespace = %(schema)s::regnamespace
    """,
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = %(schema)s
    """,
    "views": """
        SELECT viewname, definition FROM pg_views WHERE schemaname = %(schema)s
    """,
    "functions": """
        SELECT p.proname, pg_get_functiondef(p.oid)
        FROM pg_proc p WHERE p.pronamespace = %(schema)s::regnamespace
    """,
    "triggers": """
        SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE c.relnamespace = %(schema)s::regnamespace AND NOT t.tgisinternal
    """,
}


def catalog_snapshot(
    conn: psycopg.Connection[Any], schema: str = "pgjobs", *, exclude: tuple[str, ...] = ()
) -> dict[str, list[tuple[Any, ...]]]:
    """Everything Postgres knows about the objects of ``schema``, sorted and schema-name neutral.

    Two schemas built the same way give equal snapshots, whatever their names. Objects of the
    relations named in ``exclude`` are left out. An absent schema gives an empty snapshot.
    """
    exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema]).fetchone()
    if not exists:
        return {kind: [] for kind in _SNAPSHOT_QUERIES}
    prefixes = (f"{sql.Identifier(schema).as_string(conn)}.", f"{schema}.")
    names = [
        name
        for (name,) in conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = %(s)s::regnamespace"
            " UNION SELECT proname FROM pg_proc WHERE pronamespace = %(s)s::regnamespace"
            " UNION SELECT typname FROM pg_type WHERE typnamespace = %(s)s::regnamespace",
            {"s": schema},
        )
    ]
    # The schema's name where it qualifies one of its objects, not in other text that starts
    # alike (the name of a setting, pgjobs.max_payload_bytes).
    qualified = re.compile(
        f"(?:{'|'.join(map(re.escape, prefixes))})"
        f"(?=(?:{'|'.join(map(re.escape, sorted(names, key=len, reverse=True)))})\\b)"
    )

    def neutral(value: Any) -> Any:
        if isinstance(value, str):
            value = qualified.sub("<schema>.", value)
        return value

    snapshot: dict[str, list[tuple[Any, ...]]] = {}
    with conn.cursor(row_factory=psycopg.rows.tuple_row) as cur:
        for kind, query in _SNAPSHOT_QUERIES.items():
            cur.execute(query, {"schema": schema})
            rows = [tuple(map(neutral, row)) for row in cur.fetchall() if row[0] not in exclude]
            snapshot[kind] = sorted(rows, key=repr)
    return snapshot


@pytest.fixture
def schema_snapshot() -> Callable[..., dict[str, list[tuple[Any, ...]]]]:
    """:func:`catalog_snapshot`, for tests that compare schemas."""
    return catalog_snapshot
