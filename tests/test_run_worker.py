"""A worker inside an application: ``async with pgjobs.run_worker(...)`` runs the CLI's worker
on the application's event loop, is registered while the block runs, drains or hands back its
runs when the block ends, refuses bad input before starting, and surfaces a crash. The Django
command and the FastAPI app of ``examples/`` run it for real when Django or FastAPI is installed.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgjobs
from pgjobs import ConfigError, DatabaseError, Extension, Job, JobContext, JobResult, PgJobsError
from pgjobs.errors import SchemaError
from pgjobs.registry import Registry
from tests.workers import ROOT, rows, scalar, wait_until

EXAMPLES = ROOT / "examples"


class Echo(Job):
    name = "embed-echo"
    description = "Returns its payload"
    overlap = "allow"

    async def execute(self, ctx: JobContext) -> JobResult:
        return JobResult.success("echoed").with_data(payload=ctx.payload)


class SyncEcho(Job):
    name = "embed-sync-echo"
    description = "Returns its payload, from a thread"
    overlap = "allow"

    def execute(self, ctx: JobContext) -> JobResult:
        return JobResult.success("echoed from a thread").with_data(payload=ctx.payload)


class Hold(Job):
    name = "embed-hold"
    description = "Sleeps for payload['seconds']"
    overlap = "allow"

    async def execute(self, ctx: JobContext) -> JobResult:
        assert ctx.payload is not None
        await asyncio.sleep(float(ctx.payload["seconds"]))
        return JobResult.success("held")


class EmbedExtension(Extension):
    name = "embed"

    def jobs(self) -> list[Job]:
        return [Echo(), SyncEcho(), Hold()]


#: Quick to notice work and to stop, for tests.
FAST = {"poll_interval": 0.2, "lease": 3.0, "grace": 5.0, "entry_points": False}


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), 60))


async def eventually(
    conn: psycopg.AsyncConnection[Any], query: str, *params: Any, timeout: float = 15
) -> Any:
    """Poll ``query``'s first value until it is truthy, without blocking the loop the worker
    runs on."""
    deadline = time.monotonic() + timeout
    while True:
        row = await (await conn.execute(query, params or None)).fetchone()
        if row is not None and row[0]:
            return row[0]
        assert time.monotonic() < deadline, f"timed out waiting for: {query} {params}"
        await asyncio.sleep(0.05)


async def connect(dsn: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(dsn, autocommit=True)


def test_a_run_enqueued_inside_the_block_is_executed_by_the_registered_worker(dsn: str) -> None:
    async def main() -> None:
        async with (
            await connect(dsn) as conn,
            pgjobs.run_worker(EmbedExtension(), dsn, concurrency=3, **FAST) as worker,
        ):
            # Ready: registered, running, its jobs known to the database.
            state = await (
                await conn.execute(
                    "SELECT state, concurrency, queues FROM pgjobs.workers WHERE id = %s",
                    [worker.id],
                )
            ).fetchone()
            assert state == ("running", 3, ["default"])
            assert worker.alive and worker.error is None
            ids = [
                await pgjobs.enqueue(conn, "embed-echo", {"n": 1}),
                await pgjobs.enqueue(conn, "embed-sync-echo", {"n": 2}),
            ]
            await eventually(
                conn,
                "SELECT count(*) = 2 FROM pgjobs.runs WHERE id = ANY(%s) AND status = 'succeeded'",
                ids,
            )
            recorded = await (
                await conn.execute(
                    "SELECT job, worker_id, message, data FROM pgjobs.runs WHERE id = ANY(%s)"
                    " ORDER BY id",
                    [ids],
                )
            ).fetchall()
        assert recorded == [
            ("embed-echo", worker.id, "echoed", {"payload": {"n": 1}}),
            ("embed-sync-echo", worker.id, "echoed from a thread", {"payload": {"n": 2}}),
        ]
        assert not worker.alive

    run(main)

    stopped = rows(dsn, "SELECT state, stopped_at IS NOT NULL FROM pgjobs.workers")
    assert stopped == [("stopped", True)]
    assert scalar(dsn, "SELECT count(*) FROM pgjobs.worker_jobs") == 0


def test_an_app_spec_and_a_list_of_extensions_are_accepted(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))

    async def main() -> None:
        async with pgjobs.run_worker(
            ["my_extension:extension", EmbedExtension], dsn, scheduler=False, **FAST
        ) as worker:
            jobs = worker.worker.registry.names()
        assert {"my-extension-cleanup", "embed-echo", "pgjobs-prune-runs"} <= set(jobs)

    run(main)
    registered = rows(dsn, "SELECT name FROM pgjobs.jobs ORDER BY name")
    assert ("my-extension-report",) in registered and ("embed-hold",) in registered


def test_leaving_the_block_waits_for_a_running_run_to_finish(dsn: str) -> None:
    async def main() -> None:
        async with await connect(dsn) as conn:
            async with pgjobs.run_worker(EmbedExtension(), dsn, **FAST):
                run_id = await pgjobs.enqueue(conn, "embed-hold", {"seconds": 1})
                await eventually(
                    conn, "SELECT status = 'running' FROM pgjobs.runs WHERE id = %s", run_id
                )
            # Nothing polled: the block ended only once the run had finished and been recorded.
            row = await (
                await conn.execute(
                    "SELECT status, message FROM pgjobs.runs WHERE id = %s", [run_id]
                )
            ).fetchone()
            assert row == ("succeeded", "held")

    run(main)


def test_a_run_that_outlasts_the_grace_is_handed_back_to_the_queue(dsn: str) -> None:
    async def main() -> None:
        async with await connect(dsn) as conn:
            async with pgjobs.run_worker(EmbedExtension(), dsn, **{**FAST, "grace": 0.5}) as w:
                run_id = await pgjobs.enqueue(conn, "embed-hold", {"seconds": 120})
                await eventually(
                    conn, "SELECT status = 'running' FROM pgjobs.runs WHERE id = %s", run_id
                )
                left_at = time.monotonic()
            assert time.monotonic() - left_at < 10
            row = await (
                await conn.execute(
                    "SELECT status, worker_id, message FROM pgjobs.runs WHERE id = %s", [run_id]
                )
            ).fetchone()
            assert row == (
                "queued",
                None,
                f"handed back by worker {w.id} at shutdown after 0.5s",
            )
            assert await (
                await conn.execute("SELECT count(*) FROM pgjobs.run_locks")
            ).fetchone() == (0,)

    run(main)


def test_two_workers_side_by_side_serve_their_own_queues(dsn: str) -> None:
    async def main() -> None:
        async with (
            await connect(dsn) as conn,
            pgjobs.run_worker(EmbedExtension(), dsn, queues="a", **FAST) as a,
            pgjobs.run_worker(EmbedExtension(), dsn, queues=["b"], **FAST) as b,
        ):
            assert a.id != b.id
            by_queue = {
                queue: [await pgjobs.enqueue(conn, "embed-echo", queue=queue) for _ in range(3)]
                for queue in ("a", "b")
            }
            ids = by_queue["a"] + by_queue["b"]
            await eventually(
                conn,
                "SELECT count(*) = 6 FROM pgjobs.runs WHERE id = ANY(%s) AND status = 'succeeded'",
                ids,
            )
            served = await (
                await conn.execute(
                    "SELECT DISTINCT queue, worker_id FROM pgjobs.runs WHERE id = ANY(%s)", [ids]
                )
            ).fetchall()
            assert sorted(served) == [("a", a.id), ("b", b.id)]

    run(main)
    assert rows(dsn, "SELECT DISTINCT state FROM pgjobs.workers") == [("stopped",)]


@pytest.mark.parametrize(
    ("app", "options", "message"),
    [
        ("no_such_module_xyz:extension", {}, "module 'no_such_module_xyz' not found"),
        ("tests.test_run_worker", {}, "invalid app 'tests.test_run_worker': expected"),
        ("tests.test_run_worker:Echo", {}, "app 'tests.test_run_worker:Echo' is the class"),
        (42, {}, "run_worker's app is a int (42); expected"),
        ([EmbedExtension(), "tests.test_run_worker:nothing"], {}, "has no attribute 'nothing'"),
        (EmbedExtension(), {"concurrency": 0}, "concurrency must be at least 1, got 0"),
        (EmbedExtension(), {"grace": "30"}, "grace must be a number of seconds, got '30'"),
        (EmbedExtension(), {"queues": []}, "queues is empty"),
        (EmbedExtension(), {"schema": "Bad-Schema"}, "invalid schema name 'Bad-Schema'"),
        (EmbedExtension(), {"listen": False, "listen_dsn": "host=x"}, "contradict"),
        (Registry.build([EmbedExtension()]), {"profile": "p.yaml"}, "profile= cannot apply"),
    ],
)
def test_bad_input_raises_one_clear_error_before_anything_starts(
    dsn: str, app: Any, options: dict[str, Any], message: str
) -> None:
    async def main() -> None:
        with pytest.raises(ConfigError) as caught:
            async with pgjobs.run_worker(app, dsn, **{**FAST, **options}):
                raise AssertionError("the block must not run")
        assert message in str(caught.value)
        assert "\n" not in str(caught.value)

    run(main)
    assert scalar(dsn, "SELECT count(*) FROM pgjobs.workers") == 0
    assert scalar(dsn, "SELECT count(*) FROM pgjobs.jobs WHERE name LIKE 'embed-%'") == 0


def test_an_unmigrated_database_raises_which_command_fixes_it(empty_dsn: str) -> None:
    async def main() -> None:
        with pytest.raises(SchemaError, match=r"missing: run `pgjobs db upgrade`"):
            async with pgjobs.run_worker(EmbedExtension(), empty_dsn, **FAST):
                raise AssertionError("the block must not run")

    run(main)


def test_an_unreachable_database_fails_the_start_after_start_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    unreachable = "postgresql://postgres:secret@127.0.0.1:1/postgres"

    async def main() -> None:
        started = time.monotonic()
        with pytest.raises(DatabaseError, match=r"did not start within 1s"):
            async with pgjobs.run_worker(EmbedExtension(), unreachable, start_timeout=1, **FAST):
                raise AssertionError("the block must not run")
        assert time.monotonic() - started < 5

    with caplog.at_level(logging.WARNING, logger="pgjobs.worker"):
        run(main)
    assert "database unavailable" in caplog.text
    assert "secret" not in caplog.text


def test_a_crashed_worker_is_logged_and_raised_when_the_block_ends(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        with pytest.raises(PgJobsError, match=r"was cancelled by the application"):
            async with pgjobs.run_worker(EmbedExtension(), dsn, **FAST) as worker:
                (task,) = [t for t in asyncio.all_tasks() if t.get_name().endswith(worker.id)]
                task.cancel()  # what an application's stray cancel does to the worker
                with pytest.raises(PgJobsError):
                    await worker.wait()
                assert not worker.alive
                assert isinstance(worker.error, PgJobsError)
                # The application went on: this block still runs.

    with caplog.at_level(logging.ERROR, logger="pgjobs.worker"):
        run(main)
    assert "crashed" in caplog.text and "the application goes on without it" in caplog.text
    # The worker's own shutdown ran: it is not left for the reaper to find dead.
    assert rows(dsn, "SELECT state FROM pgjobs.workers") == [("stopped",)]


def test_stop_from_the_application_ends_the_worker_cleanly(dsn: str) -> None:
    async def main() -> None:
        async with pgjobs.run_worker(EmbedExtension(), dsn, **FAST) as worker:
            worker.stop()
            await worker.wait()
            assert not worker.alive and worker.error is None

    run(main)
    assert rows(dsn, "SELECT state FROM pgjobs.workers") == [("stopped",)]


def test_importing_pgjobs_does_not_import_the_worker() -> None:
    code = (
        "import sys, pgjobs\n"
        "assert 'pgjobs.worker' not in sys.modules, 'imported at once'\n"
        "assert callable(pgjobs.run_worker)\n"
        "assert 'pgjobs.worker.embed' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


# -- the examples -------------------------------------------------------------------------------


@pytest.fixture
def django_worker(dsn: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``manage.py pgjobs_worker`` of the example Django project, on the test's database."""
    pytest.importorskip("django")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGJOBS_")}
    env["PGJOBS_DSN"] = dsn
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    log_path = tmp_path / "django.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "pgjobs_worker", "--concurrency", "2"],
            cwd=EXAMPLES / "django_app",
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    except BaseException:
        print(log_path.read_text(errors="replace"))
        raise
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_django_command_runs_the_settings_extensions_until_sigterm(
    dsn: str, django_worker: subprocess.Popen[bytes]
) -> None:
    def registered() -> bool:
        assert django_worker.poll() is None, "the command exited"
        return bool(scalar(dsn, "SELECT count(*) FROM pgjobs.workers WHERE state = 'running'"))

    wait_until(registered, 30, "the Django command's worker to register")
    assert scalar(dsn, "SELECT concurrency FROM pgjobs.workers") == 2
    with psycopg.connect(dsn) as conn:
        run_id = pgjobs.enqueue_sync(conn, "reports-count-runs")
    wait_until(
        lambda: scalar(dsn, "SELECT status = 'succeeded' FROM pgjobs.runs WHERE id = %s", run_id),
        20,
        "the run to succeed",
    )
    assert scalar(dsn, "SELECT data FROM pgjobs.runs WHERE id = %s", run_id) == {"succeeded": 0}

    django_worker.send_signal(signal.SIGTERM)
    assert django_worker.wait(20) == 0
    assert rows(dsn, "SELECT state FROM pgjobs.workers") == [("stopped",)]


def test_the_fastapi_example_runs_a_worker_in_its_lifespan(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("fastapi")
    from starlette.requests import Request
    from starlette.responses import Response

    monkeypatch.syspath_prepend(str(EXAMPLES))
    for key in [k for k in os.environ if k.startswith("PGJOBS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PGJOBS_DSN", dsn)
    example = importlib.import_module("fastapi_app")

    async def main() -> None:
        async with (
            await connect(dsn) as conn,
            example.app.router.lifespan_context(example.app) as state,
        ):
            request = Request({"type": "http", "state": state})
            assert await example.health(request, Response()) == {"worker": "running"}
            queued = await example.queue_report(window="1h")
            await eventually(
                conn,
                "SELECT status = 'succeeded' FROM pgjobs.runs WHERE id = %s",
                queued["run_id"],
            )
        assert rows(dsn, "SELECT state FROM pgjobs.workers") == [("stopped",)]

    run(main)
