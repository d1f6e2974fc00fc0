"""Connecting to the database: DSN resolution, the schema identifier, errors a person can read."""

from __future__ import annotations

import os
import re

import psycopg
from psycopg import sql

from pgjobs.errors import ConfigError, DatabaseError

DEFAULT_SCHEMA = "pgjobs"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def resolve_dsn(dsn: str | None = None) -> str:
    """The DSN to use: the argument, else ``PGJOBS_DSN``, else "" (libpq's ``PG*`` variables)."""
    if dsn:
        return dsn
    return os.environ.get("PGJOBS_DSN", "")


def resolve_schema(schema: str | None = None) -> str:
    """The validated schema name: the argument, else ``PGJOBS_SCHEMA``, else ``pgjobs``."""
    name = schema or os.environ.get("PGJOBS_SCHEMA") or DEFAULT_SCHEMA
    if not _IDENTIFIER.match(name):
        raise ConfigError(
            f"invalid schema name {name!r}: use lower-case letters, digits and _ (max 63)"
        )
    return name


def schema_identifier(schema: str) -> sql.Identifier:
    """The quoted identifier of a validated schema name."""
    return sql.Identifier(resolve_schema(schema))


def describe_target(dsn: str) -> str:
    """Host, port and database of a DSN, never its password."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "the database (unparsable DSN)"
    host = info.get("host") or os.environ.get("PGHOST") or "localhost"
    port = info.get("port") or os.environ.get("PGPORT") or "5432"
    dbname = info.get("dbname") or os.environ.get("PGDATABASE") or ""
    return f"{host}:{port}/{dbname}" if dbname else f"{host}:{port}"


def connection_error(dsn: str, exc: BaseException) -> DatabaseError:
    """A one-line :class:`DatabaseError` for a failed connection, without the password."""
    reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    password = _password(dsn)
    if password:
        reason = reason.replace(password, "***")
    return DatabaseError(f"cannot connect to {describe_target(dsn)}: {reason}")


def _password(dsn: str) -> str | None:
    try:
        return psycopg.conninfo.conninfo_to_dict(dsn).get("password")  # type: ignore[return-value]
    except psycopg.ProgrammingError:
        return None


def connect(dsn: str | None = None, *, autocommit: bool = True) -> psycopg.Connection[object]:
    """A sync connection, with connection failures turned into one-line :class:`DatabaseError`."""
    target = resolve_dsn(dsn)
    try:
        return psycopg.connect(target, autocommit=autocommit, connect_timeout=10)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"invalid DSN: {exc}") from exc
    except psycopg.OperationalError as exc:
        raise connection_error(target, exc) from exc
