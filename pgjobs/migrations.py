"""Schema migrations: alembic revisions that apply the plain SQL files under ``sql/``.

The SQL files are the one source of the DDL. Each alembic revision applies one pair of them
(``sql/<name>.up.sql`` / ``sql/<name>.down.sql``) with :func:`sql_revision`, after replacing the
``{schema}`` placeholder with the quoted schema name (so any other brace in a SQL file must be
doubled: ``{{`` and ``}}``). pgjobs keeps its alembic version table inside its own schema, so it
lives next to an application's own alembic history in the same database.

It also grants the schema's three database roles their rights (see ``docs/security.md``): the
``migrator`` owns the schema and runs the migrations; the ``worker`` reads and writes rows without
DDL; the ``reader`` only reads. Those statements are named queries of
``pgjobs/queries/grants.sql``, with the role, the owner and the database as quoted identifiers.
"""

from __future__ import annotations

import contextlib
import io
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import pq, sql
from psycopg.rows import dict_row, tuple_row

from pgjobs.db import connect, first_line, resolve_dsn, resolve_schema
from pgjobs.errors import ConfigError, DatabaseError, PgJobsError, SchemaError
from pgjobs.named_queries import Queries

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import Engine

# alembic and SQLAlchemy are imported only by the functions that migrate: a worker or a CLI
# command that merely checks the schema's revision stays light.

VERSION_TABLE = "alembic_version"
"""Name of pgjobs' alembic version table, which lives in the pgjobs schema."""

_PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """The directory of a resource shipped with pgjobs: ``"sql"`` or ``"alembic"``.

    A wheel ships them inside the package as ``pgjobs/_<name>``; a source checkout (or an editable
    install of one) has them at the repository root, next to ``pyproject.toml``.
    """
    packaged = _PACKAGE_DIR / f"_{name}"
    if packaged.is_dir():
        return packaged
    root = _PACKAGE_DIR.parent
    # Only trust the parent directory in a source checkout: in site-packages, "alembic" next to
    # the pgjobs package is the alembic library itself.
    if (root / "pyproject.toml").is_file() and (root / name).is_dir():
        return root / name
    raise PgJobsError(f"pgjobs is installed without its {name!r} directory; reinstall pgjobs")


def render_sql(text: str, schema: str) -> str:
    """SQL text with every ``{schema}`` placeholder replaced by the quoted schema identifier."""
    return sql.SQL(text).format(schema=sql.Identifier(resolve_schema(schema))).as_string(None)


def sql_file(filename: str, schema: str) -> str:
    """The text of ``sql/<filename>``, rendered for ``schema``."""
    return render_sql((resource_dir("sql") / filename).read_text(encoding="utf-8"), schema)


def sql_revision(name: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """The ``upgrade`` and ``downgrade`` functions of a revision that applies ``sql/<name>.*.sql``.

    A revision module is then one line: ``upgrade, downgrade = sql_revision("0002_something")``.
    """

    def upgrade() -> None:
        _apply(f"{name}.up.sql")

    def downgrade() -> None:
        _apply(f"{name}.down.sql")

    return upgrade, downgrade


def _apply(filename: str) -> None:
    from alembic import op

    context = op.get_context()
    assert context.config is not None
    execute_sql(context, sql_file(filename, context.config.attributes["schema"]))


def execute_sql(context: MigrationContext, text: str) -> None:
    """Run SQL text in a migration, or print it as is in ``--sql`` (offline) mode."""
    if context.as_sql:
        context.impl.static_output(text)
        return
    # Without parameters psycopg sends the text as one simple (multi-statement) query, and neither
    # SQLAlchemy nor psycopg look for placeholders in it.
    assert context.connection is not None
    context.connection.exec_driver_sql(text, execution_options={"no_parameters": True})


def engine_for(dsn: str) -> Engine:
    """A SQLAlchemy engine (psycopg 3 driver) for any libpq DSN: URL, key=value or ""."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    target = resolve_dsn(dsn)

    def creator() -> psycopg.Connection[object]:
        return connect(target, autocommit=False)

    # NullPool: a migration must leave no idle connection behind (a template database with an
    # open connection cannot be cloned, a database with one cannot be dropped).
    return create_engine("postgresql+psycopg://", creator=creator, poolclass=NullPool)


def alembic_config(
    dsn: str = "", schema: str = "pgjobs", *, output: io.StringIO | None = None
) -> Config:
    """The alembic configuration of pgjobs' migrations for one database and schema."""
    from alembic.config import Config

    config = Config(output_buffer=output)
    config.set_main_option("script_location", str(resource_dir("alembic")).replace("%", "%%"))
    config.attributes["dsn"] = dsn
    config.attributes["schema"] = resolve_schema(schema)
    return config


_REVISION_FILE = re.compile(r"^(\d{4})_\w+\.py$")


@cache
def _known_revisions() -> tuple[str, ...]:
    """The revisions pgjobs ships, in order: ``alembic/versions/NNNN_name.py`` files, each
    revision ``NNNN`` following ``NNNN - 1`` (a linear history, checked by the tests)."""
    found = (_REVISION_FILE.match(p.name) for p in (resource_dir("alembic") / "versions").iterdir())
    return tuple(sorted(m.group(1) for m in found if m))


def head() -> str:
    """The revision the installed pgjobs code needs (the head of its migrations)."""
    revisions = _known_revisions()
    if not revisions:  # pragma: no cover - the package always ships revisions
        raise PgJobsError("pgjobs is installed without migrations; reinstall pgjobs")
    return revisions[-1]


def upgrade(
    dsn: str, schema: str = "pgjobs", revision: str = "head", *, sql: bool = False
) -> str | None:
    """Migrate the pgjobs schema up to ``revision`` (default: the head). Upgrading twice is a no-op.

    With ``sql=True`` nothing connects to a database (``dsn`` is ignored): the DDL of the
    migrations from base to ``revision``, rendered for ``schema``, is returned as text (for a DBA
    to review or apply with ``psql``).

    A schema already at ``revision`` or past it is left alone before alembic runs: the check only
    reads the version table, so a role without DDL rights (a worker's) may call this at start-up.
    """
    if not sql and is_up_to_date(current(dsn, schema), revision):
        return None
    from alembic import command

    output = io.StringIO() if sql else None
    config = alembic_config(dsn, schema, output=output)
    with _alembic_command():
        command.upgrade(config, revision, sql=sql)
    return output.getvalue() if output is not None else None


def is_up_to_date(found: str | None, revision: str = "head") -> bool:
    """True if a schema at revision ``found`` needs no upgrade to reach ``revision``: it is
    there already, or past it (an upgrade never goes down)."""
    known = _known_revisions()
    target = head() if revision == "head" else revision
    if found is None or found not in known or target not in known:
        return False
    return known.index(target) <= known.index(found)


def downgrade(dsn: str, revision: str, schema: str = "pgjobs") -> None:
    """Migrate the pgjobs schema down to ``revision``.

    ``"base"`` removes every pgjobs object, pgjobs' version table, and the schema itself if nothing
    else is left in it.
    """
    from alembic import command

    config = alembic_config(dsn, schema)
    with _alembic_command():
        command.downgrade(config, revision)


def current(dsn: str, schema: str = "pgjobs") -> str | None:
    """The revision of the pgjobs schema in the database, or None if it was never migrated."""
    name = resolve_schema(schema)
    with connect(dsn) as conn:
        return _read_revision(conn, name)


def check_schema(conn: psycopg.Connection[Any], schema: str = "pgjobs") -> None:
    """Raise :class:`SchemaError` unless the schema is migrated to exactly :func:`head`.

    The message is one line that says what is wrong and which command fixes it.
    """
    name = resolve_schema(schema)
    found = _read_revision(conn, name)
    needed = head()
    fix = upgrade_command(name)
    if found is None:
        raise SchemaError(f'pgjobs schema "{name}" is missing: run `{fix}`')
    if found == needed:
        return
    if found in _known_revisions():
        raise SchemaError(
            f'pgjobs schema "{name}" is at revision {found} but this pgjobs needs {needed}: '
            f"run `{fix}`"
        )
    raise SchemaError(
        f'pgjobs schema "{name}" is at revision {found}, which this pgjobs (needs {needed}) does '
        "not know: a newer pgjobs migrated it; upgrade pgjobs"
    )


def upgrade_command(schema: str = "pgjobs") -> str:
    """The command line that creates or migrates the pgjobs schema ``schema``."""
    name = resolve_schema(schema)
    return "pgjobs db upgrade" if name == "pgjobs" else f"pgjobs db upgrade --schema {name}"


def _read_revision(conn: psycopg.Connection[Any], schema: str) -> str | None:
    table = sql.Identifier(schema, VERSION_TABLE)
    # Leave the caller's connection as it was: in a transaction of its own (or a savepoint of
    # the caller's). An autocommit connection outside a transaction (every CLI command's) needs
    # none for two reads, and saves the round trips of BEGIN and COMMIT.
    idle = conn.autocommit and conn.info.transaction_status == pq.TransactionStatus.IDLE
    block = contextlib.nullcontext() if idle else conn.transaction()
    with block, conn.cursor(row_factory=tuple_row) as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", [table.as_string(conn)])
        exists = cur.fetchone()
        if not exists or not exists[0]:
            return None
        cur.execute(sql.SQL("SELECT version_num FROM {} ORDER BY 1").format(table))
        return ",".join(str(row[0]) for row in cur.fetchall()) or None


# alembic's `context` and `op` are module-level proxies: one migration at a time per process.
# (Processes take turns through an advisory lock in env.py.)
_ALEMBIC = threading.Lock()


@contextmanager
def _alembic_command() -> Iterator[None]:
    """Run one alembic command; turn its failures into one-line :class:`PgJobsError`.

    Connection failures are already one-line errors (see :func:`pgjobs.db.connect`), raised by the
    engine's connection factory and passed through unchanged by SQLAlchemy.
    """
    import sqlalchemy.exc
    from alembic.util import CommandError

    try:
        with _ALEMBIC:
            yield
    except PgJobsError:
        raise
    except CommandError as exc:
        raise ConfigError(first_line(exc)) from exc
    except sqlalchemy.exc.DBAPIError as exc:
        raise DatabaseError(f"migration failed: {first_line(exc.orig or exc)}") from exc
    except psycopg.Error as exc:
        raise DatabaseError(f"migration failed: {first_line(exc)}") from exc


# -- the roles' grants ---------------------------------------------------------------------------

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
