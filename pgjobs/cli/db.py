"""``pgjobs db``: migrate the pgjobs schema (upgrade, downgrade, current)."""

from __future__ import annotations

import click

from pgjobs import migrations
from pgjobs.cli.options import database_options
from pgjobs.db import resolve_schema


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
    migrations.upgrade(dsn, name, revision)
    after = migrations.current(dsn, name)
    if before == after:
        click.echo(f'schema "{name}" already at {after}')
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
