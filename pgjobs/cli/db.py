"""``pgjobs db``: migrate the pgjobs schema (upgrade, downgrade, current)."""

from __future__ import annotations

import click

from pgjobs import migrations
from pgjobs.cli.options import database_options
from pgjobs.db import resolve_schema
from pgjobs.errors import ConfigError


@click.group()
def db() -> None:
    """Create and migrate the pgjobs schema in a database."""


@db.command()
@database_options
@click.option(
    "--revision", default="head", show_default=True, help="Revision to migrate the schema to."
)
@click.option(
    "--sql", "as_sql", is_flag=True, help="Print the DDL instead of running it (no database)."
)
def upgrade(dsn: str, schema: str, revision: str, as_sql: bool) -> None:
    """Create the pgjobs schema or migrate it up. Running it twice changes nothing."""
    name = resolve_schema(schema)
    if as_sql:
        click.echo(migrations.upgrade(dsn, name, revision, sql=True), nl=False)
        return
    before = migrations.current(dsn, name)
    if migrations.is_up_to_date(before, revision):
        # Nothing to lock, create or write: this works for a role without DDL rights too.
        click.echo(f'schema "{name}" already at {before}: nothing to do')
        return
    migrations.upgrade(dsn, name, revision)
    after = migrations.current(dsn, name)
    if before == after:
        click.echo(f'schema "{name}" already at {after}: nothing to do')
    else:
        click.echo(f'schema "{name}" upgraded: {before or "none"} -> {after}')


@db.command()
@database_options
@click.argument("revision")
def downgrade(dsn: str, schema: str, revision: str) -> None:
    """Migrate the pgjobs schema down to REVISION; "base" removes every pgjobs object."""
    name = resolve_schema(schema)
    before = migrations.current(dsn, name)
    migrations.downgrade(dsn, revision, name)
    after = migrations.current(dsn, name)
    if before == after:
        click.echo(f'schema "{name}" already at {after or "base"}')
    else:
        click.echo(f'schema "{name}" downgraded: {before} -> {after or "base"}')


@db.command()
@database_options
def current(dsn: str, schema: str) -> None:
    """Print the revision of the pgjobs schema in the database."""
    name = resolve_schema(schema)
    click.echo(migrations.current(dsn, name) or f"none (run `{migrations.upgrade_command(name)}`)")


@db.command()
@database_options
@click.option("--role", help="The database role to grant to (it must exist).")
@click.option(
    "--as",
    "kind",
    metavar="|".join(migrations.ROLE_KINDS),
    help="migrator: owns the schema, runs `db upgrade`; worker: reads and writes rows, no DDL; "
    "reader: reads only (CLI read commands, dashboard pages, metrics).",
)
@click.option("--sql", "as_sql", is_flag=True, help="Print the statements instead of running them.")
def grant(dsn: str, schema: str, role: str | None, kind: str | None, as_sql: bool) -> None:
    """Grant a database role the rights of a pgjobs migrator, worker or reader.

    Run it as the schema's owner or a superuser. Grants cover the tables that exist and, through
    default privileges, those the owner creates later; running it again after `db upgrade`
    changes nothing and is always safe. See docs/security.md.
    """
    if not role:
        raise ConfigError("--role is required: the database role to grant to")
    if not kind:
        raise ConfigError(f"--as is required: one of {', '.join(migrations.ROLE_KINDS)}")
    name = resolve_schema(schema)
    migrations.validate_role(role)
    migrations.validate_kind(kind)
    if as_sql:
        click.echo(migrations.print_grant(dsn, name, role, kind).script(), nl=False)
        return
    done = migrations.apply_grant(dsn, name, role, kind)
    click.echo(f'granted {kind} rights on schema "{name}" to role "{done.role}"')
