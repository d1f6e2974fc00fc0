"""Connecting to the database: DSN resolution, the schema identifier, the options of every
connection pgjobs opens (prepared statements, or none behind a transaction pooler), errors a person
can read."""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import unquote

import psycopg
from psycopg import sql

from pgjobs.errors import ConfigError, DatabaseError

DEFAULT_SCHEMA = "pgjobs"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

PREPARE_THRESHOLD_ENV = "PGJOBS_PREPARE_THRESHOLD"
"""The environment variable that says when pgjobs' connections prepare statements (see
:func:`prepare_threshold`)."""

DEFAULT_PREPARE_THRESHOLD = 5
"""psycopg's own default: a statement is prepared on the server once a connection has run it
this many times."""


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


def parse_prepare_threshold(text: str, source: str = PREPARE_THRESHOLD_ENV) -> int | None:
    """A prepare threshold as written by an operator: a whole number (0: prepare every statement
    at once), or ``off`` / ``none`` (never prepare). ``source`` names where it was written, for
    the one-line :class:`ConfigError` that anything else raises."""
    value = text.strip().lower()
    if value in ("off", "none"):
        return None
    if re.fullmatch(r"[0-9]{1,9}", value):
        return int(value)
    raise ConfigError(
        f"invalid {source} {text!r}: use a whole number of runs (0 or more) after which a "
        "statement is prepared, or off (behind a transaction pooler such as PgBouncer)"
    )


def prepare_threshold() -> int | None:
    """After how many runs on one connection psycopg prepares a statement on the server (None:
    never): ``PGJOBS_PREPARE_THRESHOLD``, else psycopg's default (5).

    A prepared statement lives in the server session. Behind a pooler that hands a session to
    another client between two transactions (PgBouncer before 1.21, or without
    ``max_prepared_statements``, in transaction pooling) it is missing or already there when the
    client uses it again, so there it must be ``off``. An unset or empty variable is the default;
    anything but a whole number or off/none raises a one-line :class:`ConfigError`.
    """
    text = os.environ.get(PREPARE_THRESHOLD_ENV, "")
    if not text.strip():
        return DEFAULT_PREPARE_THRESHOLD
    return parse_prepare_threshold(text)


def connection_options() -> dict[str, Any]:
    """The psycopg keyword arguments that every connection pgjobs opens takes, its pools' too:
    ``prepare_threshold`` (:func:`prepare_threshold`). A worker takes its own from its settings
    (``--prepare-threshold``, which reads the same variable)."""
    return {"prepare_threshold": prepare_threshold()}


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
    return DatabaseError(
        f"cannot connect to {describe_target(dsn)}: {redact(first_line(exc), dsn)}"
    )


def invalid_dsn_error(dsn: str, exc: BaseException) -> ConfigError:
    """A one-line :class:`ConfigError` for a DSN libpq cannot parse, without the password.

    libpq quotes the offending part of the DSN, sometimes the whole of it, in its message.
    """
    return ConfigError(f"invalid DSN: {redact(first_line(exc), dsn)}")


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message, else its type's name."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


# -- keeping the password out of messages -------------------------------------------------------
# By text, before any parser: the DSN to hide may be one libpq rejects.

# scheme://[userinfo@]rest: the userinfo ends at the last "@" (a password may hold "@" or "/").
_URI_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>.*)@", re.DOTALL)
# password=... in key/value form (quoted or not) and in a URI's query string.
_KEYWORD_PASSWORD = re.compile(
    r"(?P<key>(?:^|[\s?&])password\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'?|[^\s&]*)", re.IGNORECASE
)
REDACTED = "***"


def redact_dsn(dsn: str) -> str:
    """The DSN with its password replaced by ``***``, whether or not libpq can parse it."""
    redacted = _KEYWORD_PASSWORD.sub(lambda m: m.group("key") + REDACTED, dsn)
    uri = _URI_USERINFO.match(redacted)
    if uri and ":" in uri.group("userinfo"):
        user = uri.group("userinfo").split(":", 1)[0]
        redacted = f"{uri.group('scheme')}{user}:{REDACTED}@{redacted[uri.end() :]}"
    return redacted


def redact(text: str, dsn: str) -> str:
    """``text`` (a message about ``dsn``) with the DSN and every form of its password hidden."""
    if not dsn:
        return text
    text = text.replace(dsn, redact_dsn(dsn))
    for secret in sorted(_secrets(dsn), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def _secrets(dsn: str) -> set[str]:
    """Every spelling of the DSN's password(s) a message could quote: as written, unquoted,
    percent-decoded, and as libpq parsed it."""
    found: set[str] = set()
    uri = _URI_USERINFO.match(dsn)
    if uri and ":" in uri.group("userinfo"):
        found.add(uri.group("userinfo").split(":", 1)[1])
    for match in _KEYWORD_PASSWORD.finditer(dsn):
        value = match.group("value")
        found.add(value)
        if value.startswith("'"):
            found.add(value[1:].removesuffix("'"))
            found.add(re.sub(r"\\(.)", r"\1", value[1:].removesuffix("'")))
    found |= {unquote(secret) for secret in found}
    try:
        parsed = psycopg.conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:
        parsed = None
    if isinstance(parsed, str):
        found.add(parsed)
    return {secret for secret in found if secret}


def connect(dsn: str | None = None, *, autocommit: bool = True) -> psycopg.Connection[object]:
    """A sync connection, with connection failures turned into one-line :class:`DatabaseError`
    and an unparsable DSN into a one-line :class:`ConfigError`, neither showing the password."""
    target = resolve_dsn(dsn)
    options = connection_options()
    try:
        return psycopg.connect(target, autocommit=autocommit, connect_timeout=10, **options)
    except psycopg.ProgrammingError as exc:
        raise invalid_dsn_error(target, exc) from exc
    except psycopg.OperationalError as exc:
        raise connection_error(target, exc) from exc
