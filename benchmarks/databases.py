"""One fresh database per measure (and per peer), created on the benchmark server and dropped after.

Names carry the benchmark process's pid, so runs sharing a server never touch each other's
databases; databases left behind by a run that was killed are dropped by the next run.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

PREFIX = "pgjobs_bench"
_counter = itertools.count(1)
_NAME = re.compile(rf"^{PREFIX}_(\d+)_")


def database_dsn(admin_dsn: str, dbname: str) -> str:
    """The admin DSN pointed at another database of the same server."""
    return make_conninfo(admin_dsn, dbname=dbname)


def admin(admin_dsn: str) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(admin_dsn, autocommit=True)


def scalar(dsn: str, query: str, params: Any = None) -> Any:
    """The first column of the first row of ``query``, on a connection of its own."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
        return None if row is None else row[0]


def drop_database(admin_dsn: str, name: str) -> None:
    with admin(admin_dsn) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def drop_stale_databases(admin_dsn: str) -> list[str]:
    """Drop benchmark databases whose run is no longer alive; return their names."""
    with admin(admin_dsn) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", [f"{PREFIX}\\_%"]
            )
        ]
    dropped = []
    for name in names:
        match = _NAME.match(name)
        if match and not _alive(int(match.group(1))):
            drop_database(admin_dsn, name)
            dropped.append(name)
    return dropped


@contextmanager
def fresh_database(admin_dsn: str, label: str, *, migrate: bool = True) -> Iterator[str]:
    """Create a database for one measure, migrated to pgjobs' head unless ``migrate`` is false;
    yield its DSN and drop it (with any connection still open to it) afterwards."""
    name = f"{PREFIX}_{os.getpid()}_{label}_{next(_counter)}"
    with admin(admin_dsn) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    try:
        dsn = database_dsn(admin_dsn, name)
        if migrate:
            from pgjobs import migrations

            migrations.upgrade(dsn)
        yield dsn
    finally:
        drop_database(admin_dsn, name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
