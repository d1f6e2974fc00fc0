"""The command line starts fast because a command imports only what it uses: ``pgjobs jobs status``
loads click, psycopg and the few pgjobs modules that read the database and print a table, and
``import pgjobs`` loads the public names on first use. Tables off a terminal are written without
rich, character for character as rich writes them."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
from typing import Any

import psycopg
import pytest
from rich.console import Console
from rich.markup import escape as rich_escape
from rich.markup import render as rich_render

from pgjobs.cli import output
from tests.cli import add_job, add_run
from tests.workers import ROOT

Conn = psycopg.Connection[Any]

#: Packages ``jobs status`` has no use for: the migrations engine, the terminal renderer, the
#: metrics exporter, the pool, cron parsing, the profile, tracing, typed payloads.
UNUSED_PACKAGES = {
    "sqlalchemy",
    "alembic",
    "rich",
    "prometheus_client",
    "psycopg_pool",
    "croniter",
    "dateutil",
    "yaml",
    "opentelemetry",
    "pydantic",
}

#: Every pgjobs module ``jobs status`` needs: the command, its options and output (with the names
#: of limits it checks), the connection, the schema check and the named queries. Not the store
#: with the job contract, the enqueue API, the registry, discovery or the worker.
STATUS_MODULES = {
    "pgjobs",
    "pgjobs.errors",
    "pgjobs.cli",
    "pgjobs.cli.jobs",
    "pgjobs.cli.options",
    "pgjobs.cli.output",
    "pgjobs.db",
    "pgjobs.runlog",
    "pgjobs.migrations",
    "pgjobs.named_queries",
    "pgjobs.limits",
}


def imported_by(dsn: str | None, *args: str) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """Every module ``python -m pgjobs ARGS`` imports from start to exit (``-X importtime``
    names each once, whenever it is first imported), and the finished process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGJOBS_")}
    env.update(PYTHONPATH=str(ROOT), **({"PGJOBS_DSN": dsn} if dsn else {}))
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pgjobs", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    modules = {
        line.rpartition("|")[2].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and not line.endswith("imported package")
    }
    assert "pgjobs.cli" in modules, proc.stderr  # the report was read
    return modules, proc


def assert_only(modules: set[str], allowed: set[str]) -> None:
    unused = sorted(m for m in modules if m.split(".")[0] in UNUSED_PACKAGES)
    assert not unused, f"imported without being used: {unused}"
    extra = sorted(m for m in modules if m.split(".")[0] == "pgjobs" and m not in allowed)
    assert not extra, (
        f"pgjobs modules imported without being used: {extra}; import them where they are "
        "used (inside the command that needs them) or, if the command does use them now, add "
        "them here"
    )


@pytest.mark.parametrize(
    "args",
    [("jobs", "status"), ("jobs", "status", "--json"), ("jobs", "status", "t-report")],
    ids=["table", "json", "one-job"],
)
def test_jobs_status_imports_only_the_modules_it_uses(
    conn: Conn, dsn: str, args: tuple[str, ...]
) -> None:
    add_job(conn, "t-report", schedule="0 */5 * * * *")
    add_job(conn, "t-cleanup", paused=True)
    add_run(conn, "t-report", status="failed", message="disk full [red]!")
    add_run(conn, "t-report", status="succeeded", message="done")

    modules, proc = imported_by(dsn, *args)

    assert proc.returncode == 0, proc.stderr
    shown = ["t-report"] if args[-1] == "t-report" else ["t-report", "t-cleanup"]
    assert all(name in proc.stdout for name in shown), proc.stdout
    assert_only(modules, STATUS_MODULES)


def test_jobs_status_of_an_unmigrated_database_still_says_which_command_fixes_it(
    empty_dsn: str,
) -> None:
    modules, proc = imported_by(empty_dsn, "jobs", "status")
    assert proc.returncode != 0
    assert "run `pgjobs db upgrade`" in proc.stderr.splitlines()[-1]
    assert_only(modules, STATUS_MODULES)


def test_version_loads_neither_psycopg_nor_a_command() -> None:
    modules, proc = imported_by(None, "--version")
    assert proc.returncode == 0 and "version" in proc.stdout
    assert "psycopg" not in modules
    assert_only(modules, {"pgjobs", "pgjobs.errors", "pgjobs.cli"})


# -- import pgjobs ------------------------------------------------------------------------------

LAZY_API = """
import sys
import pgjobs

loaded = sorted(m for m in sys.modules if m.startswith("pgjobs"))
assert loaded == ["pgjobs", "pgjobs.errors"], loaded
{first}
import pgjobs.enqueue, pgjobs.wait, pgjobs.schedule
from pgjobs.enqueue import enqueue
from pgjobs.schedules import schedule
from pgjobs.wait import wait
from pgjobs.job import Job
assert pgjobs.enqueue is enqueue and pgjobs.schedule is schedule and pgjobs.wait is wait
assert pgjobs.Job is Job and callable(pgjobs.run_worker)
namespace = {{}}
exec("from pgjobs import *", namespace)
assert set(pgjobs.__all__) <= set(namespace), set(pgjobs.__all__) - set(namespace)
assert set(pgjobs.__all__) <= set(dir(pgjobs))
try:
    pgjobs.no_such_name
except AttributeError as exc:
    assert "no_such_name" in str(exc)
else:
    raise AssertionError("pgjobs.no_such_name resolved")
"""


@pytest.mark.parametrize(
    "first",
    ["", "assert callable(pgjobs.enqueue) and callable(pgjobs.schedule)"],
    ids=["submodules-first", "functions-first"],
)
def test_import_pgjobs_loads_its_public_names_on_first_use(first: str) -> None:
    # pgjobs.enqueue, .wait and .schedule are functions and submodule names: whichever is
    # imported first, the package attribute stays the function, as it always was.
    proc = subprocess.run(
        [sys.executable, "-c", LAZY_API.format(first=first)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


# -- tables without rich ------------------------------------------------------------------------


def rich_lines(table: output.Table) -> list[str]:
    """What :func:`output.render` printed with rich for every table (off a terminal)."""
    console = Console(
        file=io.StringIO(),
        width=output.WIDTH,
        no_color=True,
        highlight=False,
        soft_wrap=False,
        emoji=False,
    )
    with console.capture() as captured:
        console.print(table.to_rich())
    return [line.rstrip() for line in captured.get().splitlines()]


PIECES = [
    *"ab x-=/#@:\\[]",
    "é",
    "…",
    "\t",
    "\n",
    "red",
    "[red]",
    "[/red]",
    "[/]",
    "[bold]",
    "\\[",
    "[@click]",
    ":smile:",
    "\x1b[2J",
]


def test_markup_is_escaped_and_read_back_as_rich_does() -> None:
    rng = random.Random(7)
    for _ in range(20_000):
        value = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 8)))
        assert output.escape(value) == rich_escape(value), repr(value)
        escaped = output.escape(value)
        assert output.plain(escaped) == rich_render(escaped, emoji=False).plain, repr(value)
        assert output.plain(escaped, emoji=True) in (None, rich_render(escaped).plain)
        text = output.plain(value)  # markup as written, tags and all
        if text is not None:
            assert text == rich_render(value, emoji=False).plain, repr(value)


def test_a_table_off_a_terminal_is_written_as_rich_writes_it() -> None:
    rng = random.Random(11)
    written_plain = 0
    for _ in range(3_000):
        columns = [
            rng.choice(["", "JOB", "NEXT RUN", "24H FAILED"]) for _ in range(rng.randint(1, 7))
        ]
        table = output.table(*columns)
        for _ in range(rng.randint(1, 4)):
            cells = []
            for _ in columns:
                value = "".join(rng.choice(PIECES) for _ in range(rng.choice([0, 3, 12, 60])))
                cells.append(
                    rng.choice(
                        [
                            output.text(value),
                            output.status(rng.choice(["failed", "succeeded", "odd[x]"])),
                            f"{output.status('failed')} 3s ago",
                            "",
                        ]
                    )
                )
            table.add_row(*cells)
        lines = table.plain_lines(output.WIDTH)
        if lines is not None:
            written_plain += 1
            assert lines == rich_lines(table), (columns, table.rows)
    assert written_plain > 500  # the plain writer did the common case


def test_a_table_too_wide_or_of_several_lines_is_left_to_rich() -> None:
    fits = output.table("A" * 100, "B" * 98)
    fits.add_row("x", "y")
    assert fits.plain_lines(output.WIDTH) == rich_lines(fits)
    wider = output.table("A" * 100, "B" * 99)  # one column more than the console has
    wider.add_row("x", "y")
    assert wider.plain_lines(output.WIDTH) is None
    for cell in ("two\nlines", "a\ttab", "wide 表", "é"):
        table = output.table("JOB")
        table.add_row(output.text(cell))
        assert table.plain_lines(output.WIDTH) is None, cell
    titled = output.table("JOB", title="Schedules")
    titled.add_row("x")
    assert titled.plain_lines(output.WIDTH) is None


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_or_when_colour_is_forced_rich_prints_the_table(monkeypatch: Any) -> None:
    table = output.table("JOB", "LAST")
    table.add_row(output.text("t-report"), output.status("failed"))
    screen = _Terminal()
    monkeypatch.setattr("sys.stdout", screen)
    monkeypatch.delenv("NO_COLOR", raising=False)
    output.print_table(table, "no jobs")
    assert "\x1b[1m" in screen.getvalue() and "\x1b[31m" in screen.getvalue()  # bold, red

    piped = io.StringIO()
    monkeypatch.setattr("sys.stdout", piped)
    monkeypatch.setenv("FORCE_COLOR", "1")
    output.print_table(table, "no jobs")
    assert "\x1b[1m" in piped.getvalue()  # rich takes a pipe for a terminal then, as before
