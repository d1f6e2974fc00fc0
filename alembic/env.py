"""Alembic environment of pgjobs.

Run through :mod:`pgjobs.migrations` (or ``pgjobs db``), which passes the DSN and the schema name in
``config.attributes``. Plain ``alembic`` works too: ``-x dsn=... -x schema=...``, else
``PGJOBS_DSN`` / ``PGJOBS_SCHEMA`` and libpq's ``PG*`` variables.

The version table lives inside the pgjobs schema, so an application's own alembic history in the
same database (``public.alembic_version``) is never touched.
"""

from __future__ import annotations

import sqlalchemy.exc
from alembic import context
from psycopg import errors, sql

from pgjobs.db import resolve_dsn, resolve_schema
from pgjobs.migrations import VERSION_TABLE, engine_for, execute_sql

config = context.config
x_arguments = context.get_x_argument(as_dictionary=True)
schema = resolve_schema(config.attributes.get("schema") or x_arguments.get("schema"))
config.attributes["schema"] = schema
dsn = resolve_dsn(config.attributes.get("dsn") or x_arguments.get("dsn"))

create_schema = sql.SQL("CREATE SCHEMA IF NOT EXISTS {};").format(sql.Identifier(schema))
# Replicas that start at the same time and all run the migrations take turns, per schema.
lock_schema = sql.SQL("SELECT pg_advisory_xact_lock(hashtext({}));").format(
    sql.Literal(f"pgjobs.migrations.{schema}")
)


def run_offline() -> None:
    """Print the DDL: the schema (for the version table), then each revision's SQL file."""
    context.configure(
        dialect_name="postgresql",
        version_table=VERSION_TABLE,
        version_table_schema=schema,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        execute_sql(context.get_context(), create_schema.as_string(None))
        context.run_migrations()


def run_online() -> None:
    """Migrate in one transaction; at base, remove the version table and the then-empty schema."""
    with engine_for(dsn).connect() as connection:
        context.configure(
            connection=connection,
            version_table=VERSION_TABLE,
            version_table_schema=schema,
            transactional_ddl=True,
        )
        with context.begin_transaction():
            migration = context.get_context()
            execute_sql(migration, lock_schema.as_string(None))
            execute_sql(migration, create_schema.as_string(None))
            context.run_migrations()
            if not migration.get_current_heads():
                drop_version_table = sql.SQL("DROP TABLE IF EXISTS {};").format(
                    sql.Identifier(schema, VERSION_TABLE)
                )
                execute_sql(migration, drop_version_table.as_string(None))
                try:
                    with connection.begin_nested():
                        drop_schema = sql.SQL("DROP SCHEMA {};").format(sql.Identifier(schema))
                        execute_sql(migration, drop_schema.as_string(None))
                except sqlalchemy.exc.DBAPIError as exc:
                    # Something that is not pgjobs' lives in the schema: keep the schema.
                    if not isinstance(exc.orig, errors.DependentObjectsStillExist):
                        raise


if context.is_offline_mode():
    run_offline()
else:
    run_online()
