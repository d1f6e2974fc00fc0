"""``pgjobs.tables`` mirrors the migrated schema exactly, so the SQL files stay the one source."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, inspect, select
from sqlalchemy.dialects import postgresql

from pgjobs import migrations, tables

Snapshot = Callable[..., dict[str, list[tuple[Any, ...]]]]


def differences(dsn: str, metadata: MetaData, schema: str) -> list[Any]:
    """What alembic's autogenerate would change to make the database match ``metadata``."""

    def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
        return type_ != "schema" or name == schema

    def include_object(obj: Any, name: str | None, type_: str, reflected: bool, other: Any) -> bool:
        return not (type_ == "table" and name == migrations.VERSION_TABLE)

    with migrations.engine_for(dsn).connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "include_schemas": True,
                "include_name": include_name,
                "include_object": include_object,
            },
        )
        return list(compare_metadata(context, metadata))


def test_the_tables_match_the_migrated_database(dsn: str) -> None:
    assert differences(dsn, tables.metadata, "pgjobs") == []


def test_the_tables_of_another_schema_match_that_schema(dsn: str) -> None:
    migrations.upgrade(dsn, schema="tenant_a")

    assert differences(dsn, tables.metadata_for("tenant_a"), "tenant_a") == []


def test_a_difference_would_be_found(dsn: str) -> None:
    metadata = tables.metadata_for()
    metadata.tables["pgjobs.workers"].c.pid.type = postgresql.BIGINT()

    assert [diff[0][0] for diff in differences(dsn, metadata, "pgjobs")] == ["modify_type"]


def test_indexes_and_check_constraints_match_the_migrated_database(
    dsn: str, conn: psycopg.Connection[Any], schema_snapshot: Snapshot
) -> None:
    """What alembic does not compare (partial index predicates, CHECKs): created by SQLAlchemy
    in a scratch schema, the tables give the same catalog as the migrations."""
    with migrations.engine_for(dsn).begin() as connection:
        connection.exec_driver_sql("CREATE SCHEMA from_tables")
        tables.metadata_for("from_tables").create_all(connection)

    declared = schema_snapshot(conn, "from_tables")
    migrated = schema_snapshot(
        conn,
        exclude=("alembic_version", "job_status", "run_history", "run_waits", "all_schedules"),
    )
    for kind in ("columns", "constraints", "indexes"):
        assert declared[kind] == migrated[kind], kind
    # Storage parameters (autovacuum settings) are the one thing the tables leave to the SQL.
    relation_names = [row[:3] for row in declared["relations"]]
    assert relation_names == [row[:3] for row in migrated["relations"]]


@pytest.mark.parametrize("view", ["job_status", "run_history", "run_waits", "all_schedules"])
def test_the_views_match_the_migrated_database(dsn: str, view: str) -> None:
    declared = tables.views.tables[f"pgjobs.{view}"]
    with migrations.engine_for(dsn).connect() as connection:
        reflected = inspect(connection).get_columns(view, schema="pgjobs")

    def described(name: str, type_: Any) -> tuple[str, str]:
        return name, str(type_.compile(dialect=postgresql.dialect()))

    assert [described(c["name"], c["type"]) for c in reflected] == [
        described(c.name, c.type) for c in declared.columns
    ]


def test_the_tables_query_the_database(dsn: str, conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "INSERT INTO pgjobs.runs (job, trigger, status) VALUES ('ext.a', 'manual', 'failed')"
    )
    query = select(tables.runs.c.job, tables.runs.c.status).where(tables.runs.c.status == "failed")

    with migrations.engine_for(dsn).connect() as connection:
        assert connection.execute(query).all() == [("ext.a", "failed")]
        history = select(tables.run_history.c.job, tables.run_history.c.lag_seconds)
        assert connection.execute(history).all() == [("ext.a", None)]
