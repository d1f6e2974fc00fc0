"""Throwaway databases for tests: a migrated template, copied for each test.

Copying a template (``CREATE DATABASE ... TEMPLATE``) gives a migrated database in milliseconds,
where migrating each would take seconds. The server is one the caller names, else an embedded
one started in a temporary folder.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgjobs.db import connection_error, first_line, resolve_schema
from pgjobs.errors import DatabaseError, PgJobsError
from pgjobs.named_queries import Queries

TEST_DSN_ENV = "PGJOBS_TEST_DSN"
"""The environment variable that names the server for tests (an admin DSN: it creates and drops
databases)."""


class Databases:
    """A PostgreSQL server for tests, and throwaway migrated databases on it.

    ``admin_dsn`` must be allowed to create databases. Without it, an embedded server (the
    ``pgserver`` package, ``pip install 'pgjobs[embedded]'``) is started in a temporary folder
    on first use and removed by :meth:`close`. Database names carry the process id, so test runs
    (and pytest-xdist workers) can share one server.
    """

    def __init__(self, admin_dsn: str | None = None, *, schema: str | None = None) -> None:
        self.schema = resolve_schema(schema)
        self._admin_dsn = admin_dsn or None
        self._embedded: Any = None
        self._embedded_dir: str | None = None
        self._template: str | None = None
        self._prefix = f"pgjobs_testing_{os.getpid()}"
        self._counter = itertools.count(1)
        self._queries = Queries(self.schema)

    @property
    def admin_dsn(self) -> str:
        """The server's admin DSN; starts the embedded server when none was given."""
        if self._admin_dsn is None:
            from pgjobs.embedded import INSTALL_HINT, EmbeddedPostgres

            if importlib.util.find_spec("pgserver") is None:
                raise PgJobsError(
                    f"no PostgreSQL server for the tests: set {TEST_DSN_ENV} to an admin DSN, "
                    f"or {INSTALL_HINT} for an embedded one"
                )
            self._embedded_dir = tempfile.mkdtemp(prefix="pgjobs-testing-")
            self._embedded = EmbeddedPostgres(Path(self._embedded_dir) / "pgdata")
            self._admin_dsn = self._embedded.start()
        return self._admin_dsn

    @contextmanager
    def database(self) -> Iterator[str]:
        """The DSN of a new database migrated to the head revision, dropped on leaving."""
        name = self._new_name("db")
        self._create(name, self._migrated_template())
        try:
            yield make_conninfo(self.admin_dsn, dbname=name)
        finally:
            self._drop(name)

    def close(self) -> None:
        """Drop the template (and anything a killed run left), stop the embedded server."""
        try:
            if self._template is not None:
                for name in self._leftovers():
                    self._drop(name)
        finally:
            self._template = None
            if self._embedded is not None:
                self._embedded.stop()
                self._embedded = None
                self._admin_dsn = None
            if self._embedded_dir is not None:
                shutil.rmtree(self._embedded_dir, ignore_errors=True)
                self._embedded_dir = None

    def _migrated_template(self) -> str:
        if self._template is not None:
            return self._template
        from pgjobs import migrations

        for name in self._leftovers():  # of an earlier run, killed, that had this pid
            self._drop(name)
        name = self._new_name("template")
        self._create(name, "template0")
        try:
            migrations.upgrade(make_conninfo(self.admin_dsn, dbname=name), self.schema)
            with self._admin() as admin:
                admin.execute(self._statement("testing_seal_template", database=name))
                admin.execute(self._queries["testing_end_sessions"], {"database": name})
        except BaseException:
            self._drop(name)
            raise
        self._template = name
        return name

    def _new_name(self, kind: str) -> str:
        return f"{self._prefix}_{kind}_{next(self._counter)}"

    def _leftovers(self) -> list[str]:
        pattern = self._prefix.replace("_", "\\_") + "\\_%"
        with self._admin() as admin:
            rows = admin.execute(self._queries["testing_databases_like"], {"pattern": pattern})
            return [name for (name,) in rows]

    def _create(self, name: str, template: str, attempts: int = 20) -> None:
        statement = self._statement("testing_create_database", database=name, template=template)
        with self._admin() as admin:
            for attempt in range(attempts):
                try:
                    admin.execute(statement)
                    return
                except psycopg.errors.ObjectInUse:
                    # template0 or the template's last migration session is still closing.
                    if attempt == attempts - 1:
                        raise
                    admin.execute(self._queries["testing_end_sessions"], {"database": template})
                    time.sleep(0.05 * (attempt + 1))
                except psycopg.errors.InsufficientPrivilege as exc:
                    raise DatabaseError(
                        f"cannot create a test database: {first_line(exc)} "
                        f"(the DSN of {TEST_DSN_ENV} needs the CREATEDB right)"
                    ) from exc

    def _drop(self, name: str) -> None:
        with self._admin() as admin:
            try:
                admin.execute(self._statement("testing_unseal_template", database=name))
            except psycopg.errors.InvalidCatalogName:
                return  # never made, or dropped already
            admin.execute(self._statement("testing_drop_database", database=name))

    def _statement(self, query: str, **identifiers: str) -> sql.Composed:
        names = {key: sql.Identifier(value) for key, value in identifiers.items()}
        return sql.SQL(self._queries[query]).format(**names)

    @contextmanager
    def _admin(self) -> Iterator[psycopg.Connection[Any]]:
        dsn = self.admin_dsn
        try:
            conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise connection_error(dsn, exc) from exc
        with conn:
            yield conn
