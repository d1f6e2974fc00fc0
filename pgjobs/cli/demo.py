"""``pgjobs demo``: the example extension at work, on an embedded PostgreSQL, shown live.

The demo starts what it needs, shows the runs as they happen and, at Ctrl-C (or after
``--duration``), stops everything it started, in reverse order: the workers (SIGTERM, then
SIGKILL if they outlast their grace period), then the embedded server.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import click
import psycopg
from psycopg.rows import tuple_row
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pgjobs.db import connect, describe_target
from pgjobs.embedded import DEFAULT_DATA_DIR, EmbeddedPostgres
from pgjobs.errors import PgJobsError
from pgjobs.named_queries import Queries

SCHEMA = "pgjobs"
APP = "my_extension:extension"
REPORT_JOB = "my-extension-report"
REPORT_PAYLOAD = {"window": "1h"}
WORKER_GRACE = 5.0
REFRESH_SECONDS = 0.5

_STATUS_STYLES = {
    "queued": "cyan",
    "running": "yellow",
    "succeeded": "green",
    "failed": "bold red",
    "timed_out": "red",
    "abandoned": "red",
    "cancelled": "magenta",
    "skipped": "dim",
}
_FINAL = frozenset(_STATUS_STYLES) - {"queued", "running"}


@click.command()
@click.option(
    "--dsn",
    envvar="PGJOBS_DSN",
    default="",
    help="Run on this database instead of an embedded one (adds the pgjobs schema and a my_items "
    "table to it).",
)
@click.option(
    "--workers",
    "worker_count",
    type=click.IntRange(min=1, max=16),
    default=2,
    show_default=True,
    help="Worker processes to start.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0),
    default=None,
    help="Stop after this many seconds instead of at Ctrl-C.",
)
@click.option(
    "--data-dir",
    envvar="PGJOBS_DEMO_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DATA_DIR,
    show_default=True,
    help="Folder of the embedded PostgreSQL (kept and reused); worker logs go next to it.",
)
def demo(dsn: str, worker_count: int, duration: float | None, data_dir: Path) -> None:
    """See pgjobs at work: workers running the example extension's jobs, shown live.

    With no --dsn (and no PGJOBS_DSN) it starts an embedded PostgreSQL in a local folder. It
    migrates the database, starts the workers, enqueues a report run, and shows the runs as they
    happen until Ctrl-C; then it stops everything it started.
    """
    console = Console()
    queries = Queries(SCHEMA)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with ExitStack() as stack:
            target = _database(dsn, data_dir, console, stack)
            _migrate(target, console)
            with connect(target) as conn:
                after_id = int(_one(conn, queries["demo_last_run_id"], {})[0])
            workers = _Workers(target, worker_count, data_dir.parent)
            stack.callback(workers.stop, console)
            workers.start()
            console.print(f"started {worker_count} workers; their logs: {workers.log_dir}/")
            workers.wait_ready(queries, REPORT_JOB)
            run_id = _enqueue(target, REPORT_JOB, REPORT_PAYLOAD)
            console.print(f"enqueued run {run_id} of {REPORT_JOB} with payload {REPORT_PAYLOAD}")
            _show_runs(target, queries, after_id, workers, console, duration)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    console.print("demo stopped")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM ends the demo the way Ctrl-C does."""
    raise KeyboardInterrupt


# -- the database -------------------------------------------------------------------------------


def _database(dsn: str, data_dir: Path, console: Console, stack: ExitStack) -> str:
    """The DSN to run on: ``dsn`` if given, else an embedded server's, stopped when ``stack``
    closes."""
    if dsn:
        console.print(f"database: {describe_target(dsn)}")
        return dsn
    server = EmbeddedPostgres(data_dir)
    # Registered first: a Ctrl-C while the server starts still stops it.
    stack.callback(_stop_server, server, console)
    with console.status(f"starting the embedded PostgreSQL in {data_dir}"):
        target = server.start()
    console.print(f"embedded PostgreSQL in {data_dir} (pid {server.pid})")
    # Printed whole: it holds no password, and another terminal can use it as is.
    console.print(f"database: {target}", soft_wrap=True)
    console.print(f"in another terminal: PGJOBS_DSN='{target}' pgjobs jobs status", soft_wrap=True)
    return target


def _stop_server(server: EmbeddedPostgres, console: Console) -> None:
    with _sigint_ignored():
        stopped = server.stop()
    if stopped:
        console.print("embedded PostgreSQL stopped")


def _migrate(dsn: str, console: Console) -> None:
    from pgjobs import migrations

    with console.status("migrating the pgjobs schema"):
        migrations.upgrade(dsn, SCHEMA)


def _enqueue(dsn: str, job: str, payload: dict[str, Any]) -> int:
    from pgjobs.enqueue import enqueue_sync

    with connect(dsn, autocommit=False) as conn:  # commits on leaving the block
        return enqueue_sync(conn, job, payload, schema=SCHEMA)


def _rows(
    conn: psycopg.Connection[Any], query: str, params: dict[str, Any]
) -> list[tuple[Any, ...]]:
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(query, params).fetchall()


def _one(conn: psycopg.Connection[Any], query: str, params: dict[str, Any]) -> tuple[Any, ...]:
    return _rows(conn, query, params)[0]


# -- the workers --------------------------------------------------------------------------------


def examples_dir() -> Path:
    """The bundled example extension: ``examples/`` of a source checkout, or its copy in the
    installed package."""
    from pgjobs.migrations import resource_dir

    return resource_dir("examples")


@dataclass
class _Worker:
    id: str
    proc: subprocess.Popen[bytes]
    log_path: Path


_CONNECTION_SETTINGS = ("PGJOBS_PREPARE_THRESHOLD", "PGJOBS_NO_LISTEN", "PGJOBS_LISTEN_DSN")


class _Workers:
    """The demo's worker processes, each ``pgjobs worker`` with the example extension."""

    def __init__(self, dsn: str, count: int, log_dir: Path) -> None:
        self.dsn = dsn
        self.count = count
        self.log_dir = log_dir
        self.started: list[_Worker] = []

    def start(self) -> None:
        examples = examples_dir()
        # The demo's own settings, not the caller's; but how to reach the database through a
        # pooler (no LISTEN there, no prepared statements, a direct LISTEN connection) passes on.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("PGJOBS_") or k in _CONNECTION_SETTINGS
        }
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(examples), os.environ.get("PYTHONPATH", "")) if p
        )
        env["PYTHONUNBUFFERED"] = "1"
        env["PGJOBS_DSN"] = self.dsn  # not on the command line, where `ps` would show a password
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for n in range(1, self.count + 1):
            worker_id = f"demo-{os.getpid()}-{n}"
            log_path = self.log_dir / f"worker-{n}.log"
            command = [
                sys.executable, "-m", "pgjobs", "worker",
                "--app", APP,
                "--profile", str(examples / "profile.yaml"),
                "--schema", SCHEMA,
                "--id", worker_id,
                "--concurrency", "4",
                "--poll-interval", "1",
                "--lease", "10",
                "--grace", str(WORKER_GRACE),
            ]  # fmt: skip
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    command,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    # Its own session: Ctrl-C in the terminal reaches the demo only, which then
                    # stops the workers once, gracefully.
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            self.started.append(_Worker(worker_id, proc, log_path))

    def wait_ready(self, queries: Queries, job: str, timeout: float = 60.0) -> None:
        """Wait until every worker runs and ``job`` is registered; a worker that exits is a
        one-line error quoting the end of its log."""
        deadline = time.monotonic() + timeout
        ids = [w.id for w in self.started]
        with connect(self.dsn) as conn:
            while True:
                self.check_alive()
                running, registered = _one(
                    conn, queries["demo_ready"], {"workers": ids, "job": job}
                )
                if running == len(ids) and registered:
                    return
                if time.monotonic() > deadline:
                    raise PgJobsError(
                        f"the demo workers did not start within {timeout:.0f}s; "
                        f"see {self.log_dir}/worker-*.log"
                    )
                time.sleep(0.1)

    def check_alive(self) -> None:
        """Raise a one-line error if a worker has exited."""
        for w in self.started:
            code = w.proc.poll()
            if code is not None:
                raise PgJobsError(
                    f"demo worker {w.id} exited with code {code}: {_last_line(w.log_path)}"
                )

    def running(self) -> int:
        """How many of the workers are still running."""
        return sum(1 for w in self.started if w.proc.poll() is None)

    def stop(self, console: Console) -> None:
        """SIGTERM every worker, wait for them to finish their runs, SIGKILL those that do not
        (at once on a second Ctrl-C)."""
        alive = [w for w in self.started if w.proc.poll() is None]
        if not alive:
            return
        for w in alive:
            w.proc.send_signal(signal.SIGTERM)
        try:
            with console.status(f"stopping {len(alive)} workers"):
                deadline = time.monotonic() + WORKER_GRACE + 10
                for w in alive:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        w.proc.wait(max(0.0, deadline - time.monotonic()))
        finally:
            with _sigint_ignored():
                for w in alive:
                    if w.proc.poll() is None:
                        w.proc.kill()
                        w.proc.wait()
        console.print(f"stopped {len(alive)} workers")


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the demo dies, however it dies (Linux)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    return lines[-1].strip() if lines else f"(no output; see {path})"


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Let a clean-up step finish even if Ctrl-C is pressed again."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# -- showing the runs ---------------------------------------------------------------------------


def _show_runs(
    dsn: str,
    queries: Queries,
    after_id: int,
    workers: _Workers,
    console: Console,
    duration: float | None,
) -> None:
    """Show the demo's runs until Ctrl-C or ``duration``: a live table on a terminal, one line
    per finished run otherwise (a pipe, a log file)."""
    started = time.monotonic()
    printed: set[int] = set()
    with connect(dsn) as conn, contextlib.ExitStack() as stack:
        live: Live | None = None
        if console.is_terminal:
            live = stack.enter_context(
                Live(console=console, auto_refresh=False, redirect_stderr=False)
            )
        else:
            console.print("runs of this demo (Ctrl-C to stop):")
        while duration is None or time.monotonic() - started < duration:
            workers.check_alive()
            limit = max(5, console.height - 8) if live is not None else 100
            runs = _rows(conn, queries["demo_recent_runs"], {"after_id": after_id, "limit": limit})
            if live is not None:
                counts = dict(_rows(conn, queries["demo_run_counts"], {"after_id": after_id}))
                live.update(_render(runs, counts, workers.running()), refresh=True)
            else:
                for run in reversed(runs):
                    if run[0] not in printed and run[3] in _FINAL:
                        printed.add(run[0])
                        console.print(_line(run), soft_wrap=True)
            time.sleep(REFRESH_SECONDS)


def _render(runs: list[tuple[Any, ...]], counts: dict[str, int], workers: int) -> Group:
    table = Table(expand=True, header_style="bold")
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("job", no_wrap=True)
    table.add_column("trigger", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("worker", no_wrap=True)
    table.add_column("scheduled", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("message", overflow="ellipsis", no_wrap=True, ratio=1)
    for run in runs:
        id_, job, trigger, status, worker, scheduled, duration, running_for, message = run
        table.add_row(
            str(id_),
            job,
            trigger,
            Text(status, style=_STATUS_STYLES.get(status, "")),
            worker or "",
            _clock(scheduled),
            _duration(duration, running_for),
            message or "",
        )
    summary = " · ".join(
        f"[{_STATUS_STYLES.get(s, '')}]{s} {n}[/]" for s, n in sorted(counts.items())
    )
    header = Text.from_markup(
        f"[bold]pgjobs demo[/] · {workers} workers · {summary or 'waiting for the first run'}"
        " · [dim]Ctrl-C to stop[/]"
    )
    return Group(header, table)


def _line(run: tuple[Any, ...]) -> str:
    id_, job, trigger, status, worker, scheduled, duration, running_for, message = run
    return (
        f"run {id_} {job} ({trigger}, scheduled {_clock(scheduled)}) {status} "
        f"on {worker or '-'} in {_duration(duration, running_for)}: {message or ''}"
    ).rstrip(": ")


def _clock(moment: datetime) -> str:
    return moment.astimezone().strftime("%H:%M:%S")


def _duration(seconds: float | None, running_for: float | None) -> str:
    if seconds is None:
        return f"{running_for:.1f}s…" if running_for is not None else ""
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.2f}s"
