"""The three database roles of pgjobs and their privileges (see ``docs/security.md``).

- ``migrator``: owns the schema and everything in it; runs ``pgjobs db upgrade``.
- ``worker``: reads and writes rows (workers, enqueue, the CLI's commands that change state);
  no DDL.
- ``reader``: reads only (the CLI's read commands, the dashboard's pages, ``pgjobs metrics``).

The statements are named queries in ``pgjobs/queries/grants.sql``; this module fills in the role,
the schema's owner and the database, each a validated and quoted identifier.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from pgjobs.db import connect, first_line
from pgjobs.errors import ConfigError, DatabaseError
from pgjobs.migrations import check_schema
from pgjobs.store import Queries

ROLE_KINDS = ("migrator", "worker", "reader")
"""What ``--as`` accepts, from the most privileged to the least."""

# A role name as people write them (app_worker, svc-pgjobs, svc.pgjobs, user@tenant); it is quoted
# anyway. "pg_" names are the server's own, "public" is everyone.
_ROLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.@-]{0,62}$")
_RESERVED = {"public", "none", "current_user", "session_user", "current_role"}


def validate_role(name: str) -> str:
    """The role name if :func:`grant_sql` accepts it, else a one-line :class:`ConfigError`."""
    if not _ROLE.match(name) or name.lower() in _RESERVED or name.lower().startswith("pg_"):
        raise ConfigError(
            f"invalid role name {name!r}: use letters, digits and _ . @ - (max 63), "
            "not public or a pg_ name"
        )
    return name


def validate_kind(kind: str) -> str:
    """``kind`` if it is one of :data:`ROLE_KINDS`, else a one-line :class:`ConfigError`."""
    if kind not in ROLE_KINDS:
        raise ConfigError(f"--as must be one of {', '.join(ROLE_KINDS)}, got {kind!r}")
    return kind


@dataclass(frozen=True)
class Grant:
    """The statements that give ``role`` the rights of ``kind`` on ``schema``."""

    role: str
    kind: str
    schema: str
    owner: str
    database: str
    statements: str

    def script(self) -> str:
        """The statements with a header saying what they are for, as ``--sql`` prints them."""
        header = (
            f"-- pgjobs: {self.kind} rights for role {self.role} on schema {self.schema} "
            f"(owner {self.owner}, database {self.database})\n"
        )
        return f"{header}{self.statements.rstrip()}\n"


def grant_sql(conn: psycopg.Connection[Any], schema: str, role: str, kind: str) -> Grant:
    """The :class:`Grant` of ``kind`` for ``role``; reads the schema's owner, changes nothing.

    The schema must be migrated to the head (grants cover the tables that exist) and the role
    must exist (pgjobs does not create roles: their passwords and logins are the DBA's).
    """
    role, kind = validate_role(role), validate_kind(kind)
    queries = Queries(schema)
    check_schema(conn, queries.schema)
    with conn.cursor(row_factory=dict_row) as cur:
        target = cur.execute(
            queries["grant_target"], {"schema": queries.schema, "role": role}
        ).fetchone()
    assert target is not None and target["owner"] is not None  # check_schema found the schema
    if not target["role_exists"]:
        raise ConfigError(
            f'role "{role}" does not exist: create it first (CREATE ROLE "{role}" LOGIN)'
        )
    statements = (
        sql.SQL(queries[f"grant_{kind}"])
        .format(
            role=sql.Identifier(role),
            role_literal=sql.Literal(role),
            owner=sql.Identifier(target["owner"]),
            database=sql.Identifier(target["database"]),
        )
        .as_string(conn)
    )
    return Grant(role, kind, queries.schema, target["owner"], target["database"], statements)


def apply_grant(dsn: str, schema: str, role: str, kind: str) -> Grant:
    """Give ``role`` the rights of ``kind`` on ``schema``, in one transaction.

    Run it as the schema's owner or a superuser; running it twice changes nothing.
    """
    with connect(dsn) as conn:
        grant = grant_sql(conn, schema, role, kind)
        try:
            with conn.transaction():
                conn.execute(grant.statements)
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot grant {kind} rights to {role}: {first_line(exc)}") from exc
    return grant


def print_grant(dsn: str, schema: str, role: str, kind: str) -> Grant:
    """The :class:`Grant` of ``kind`` for ``role``, read from the database but not applied."""
    with connect(dsn) as conn:
        return grant_sql(conn, schema, role, kind)
