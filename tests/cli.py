"""Running the ``pgjobs`` command line in the tests, and putting state in its database with SQL.

:func:`invoke` runs a command through click's runner (for its output); :func:`run_pgjobs` runs
the real entry point, ``python -m pgjobs``, in a subprocess (for exit codes and stderr).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import psycopg
from click.testing import CliRunner, Result
from psycopg.types.json import Jsonb

from pgjobs.cli import main
from tests.workers import ROOT

APP = "tests.worker_apps.app:extension"
_UNSET: dict[str, str | None] = {
    "PGJOBS_APP": None,
    "PGJOBS_PROFILE": None,
    "PGJOBS_SCHEMA": None,
    "PGJOBS_DSN": None,
}


def invoke(dsn: str, *args: str, jobs: str = "", env: dict[str, str] | None = None) -> Result:
    """``pgjobs ARGS`` in this process against ``dsn``; ``jobs`` picks the test app's jobs."""
    full_env = {**_UNSET, "PGJOBS_DSN": dsn, "PGJOBS_TEST_JOBS": jobs, **(env or {})}
    return CliRunner().invoke(main, list(args), env=full_env, catch_exceptions=False)


def run_pgjobs(
    dsn: str | None, *args: str, jobs: str = "", timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m pgjobs ARGS`` in a subprocess, as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if k not in _UNSET}
    env.update(PYTHONPATH=str(ROOT), PGJOBS_TEST_JOBS=jobs)
    if dsn is not None:
        env["PGJOBS_DSN"] = dsn
    return subprocess.run(
        [sys.executable, "-m", "pgjobs", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed command, after checking there is no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def add_job(conn: psycopg.Connection[Any], name: str, **columns: Any) -> None:
    """A row in pgjobs.jobs, as a worker registering ``name`` would write it."""
    values: dict[str, Any] = {"extension": name.split("-")[0], **columns}
    for key in ("parameters", "retry_backoff"):
        if key in values:
            values[key] = Jsonb(values[key])
    keys = ["name", *values]
    conn.execute(
        f"INSERT INTO pgjobs.jobs ({', '.join(keys)}) VALUES ({', '.join(['%s'] * len(keys))})",
        [name, *values.values()],
    )


def add_worker(
    conn: psycopg.Connection[Any], worker_id: str, jobs: list[str], *, live: bool = True
) -> None:
    """A worker row that is live (heartbeat now) or dead, registering ``jobs``."""
    conn.execute(
        "INSERT INTO pgjobs.workers (id, host, pid, version, queues, concurrency, state,"
        " heartbeat_at, expires_at) VALUES (%s, 'host-a', 4242, '0.1.0', '{default}', 4,"
        " %s, now() - %s::interval, now() + %s::interval)",
        [
            worker_id,
            "running" if live else "dead",
            "0s" if live else "1h",
            "30s" if live else "-59m",
        ],
    )
    conn.execute(
        "INSERT INTO pgjobs.worker_jobs (worker_id, job) SELECT %s, unnest(%s::text[])",
        [worker_id, jobs],
    )


def add_run(conn: psycopg.Connection[Any], job: str, **columns: Any) -> int:
    """A row in pgjobs.runs (trigger ``enqueue`` unless given); returns its id."""
    values: dict[str, Any] = {"trigger": "enqueue", **columns}
    for key in ("payload", "parameters", "data"):
        if key in values and values[key] is not None:
            values[key] = Jsonb(values[key])
    keys = ["job", *values]
    row = conn.execute(
        f"INSERT INTO pgjobs.runs ({', '.join(keys)}) VALUES ({', '.join(['%s'] * len(keys))})"
        " RETURNING id",
        [job, *values.values()],
    ).fetchone()
    assert row is not None
    return int(row[0])


def run_rows(
    conn: psycopg.Connection[Any], where: str = "true", *params: Any
) -> list[dict[str, Any]]:
    """Rows of pgjobs.runs as dicts, oldest first."""
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    cur.execute(f"SELECT * FROM pgjobs.runs WHERE {where} ORDER BY id", params or None)
    return cur.fetchall()


def parse_json(result: Result) -> Any:
    """The JSON a command printed, after checking it succeeded."""
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)
