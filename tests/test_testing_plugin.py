"""pgjobs.testing and its pytest plugin, used as a job's author uses them.

The fixtures are the plugin's own (``pgjobs_*``, loaded through the ``pytest11`` entry point),
with ``pgjobs_extensions`` overridden here as a user's conftest.py would. Runs go through the
real execution path against the real PostgreSQL; the plugin's loading, its options and the
example's test run in pytest processes of their own (``pytester``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

import pgjobs
from pgjobs import Extension, Job, JobContext, JobResult, RetryBackoff
from pgjobs import pytest_plugin as plugin
from pgjobs.errors import ConfigError, LockHeldError, PayloadError, PgJobsError, UnknownJobError
from pgjobs.testing import Databases, JobHarness
from tests.workers import ROOT, scalar

pytest_plugins = ["pytester"]

NO_WAIT = RetryBackoff(base_seconds=0.0, jitter=0.0)
LONG_WAIT = RetryBackoff(base_seconds=600.0, jitter=0.0)


class Greet(Job):
    name = "testing-greet"

    async def execute(self, ctx: JobContext) -> JobResult:
        who = (ctx.payload or {}).get("who", "nobody")
        async with ctx.db_pool.connection() as conn:
            row = await (await conn.execute("SELECT current_database()")).fetchone()
        ctx.log.info("greeting", extra={"who": who})
        return JobResult.success(f"hello {who}").with_data(
            database=row[0] if row else None, greeting=ctx.parameters.get("greeting", "hello")
        )


class CountSync(Job):
    """A plain ``def execute``: it runs in a thread with a sync pool."""

    name = "testing-count"

    def __init__(self, offset: int = 0) -> None:
        self.offset = offset

    def execute(self, ctx: JobContext) -> JobResult:
        with ctx.db_pool.connection() as conn:
            row = conn.execute("SELECT count(*) FROM pgjobs.runs").fetchone()
        total = (row[0] if row else 0) + self.offset
        return JobResult.success(f"{total} runs").with_data(runs=total)


class Fanout(Job):
    """Enqueues one greeting per name of its payload, on the job's own connection."""

    name = "testing-fanout"

    async def execute(self, ctx: JobContext) -> JobResult:
        names = (ctx.payload or {}).get("names", [])
        async with ctx.db_pool.connection() as conn:
            for who in names:
                await pgjobs.enqueue(conn, "testing-greet", {"who": who})
        return JobResult.success(f"enqueued {len(names)}")


class Flaky(Job):
    """Fails its first attempt, succeeds its second."""

    name = "testing-flaky"
    max_attempts = 2
    retry_backoff = NO_WAIT

    async def execute(self, ctx: JobContext) -> JobResult:
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return JobResult.success(f"attempt {ctx.attempt}")


class SlowRetry(Flaky):
    """Flaky, with a retry that waits ten minutes."""

    name = "testing-slow-retry"
    retry_backoff = LONG_WAIT


class Forever(Job):
    """Enqueues itself again on every run."""

    name = "testing-forever"

    async def execute(self, ctx: JobContext) -> JobResult:
        async with ctx.db_pool.connection() as conn:
            await pgjobs.enqueue(conn, "testing-forever")
        return JobResult.success()


class Sleepy(Job):
    name = "testing-sleepy"
    timeout = 0.2

    async def execute(self, ctx: JobContext) -> JobResult:
        await asyncio.sleep(30)
        return JobResult.success()


class Holder(Job):
    """Runs until the test releases it (overlap ``skip``: one run at a time)."""

    name = "testing-holder"
    started = threading.Event()
    release = threading.Event()

    def execute(self, ctx: JobContext) -> JobResult:
        if not Holder.started.is_set():
            Holder.started.set()
            Holder.release.wait(30)
        return JobResult.success()


class Hostile(Job):
    """Raises with text Postgres cannot store as it is."""

    name = "testing-hostile"

    def execute(self, ctx: JobContext) -> JobResult:
        raise ValueError("bad\x00byte " + "x" * 1000)


@dataclass
class Order:
    id: int
    item: str
    quantity: int = 1


class Ship(Job[Order]):
    """A job with a typed payload: ctx.payload is an Order."""

    name = "testing-ship"

    async def execute(self, ctx: JobContext[Order]) -> JobResult:
        order = ctx.payload
        assert isinstance(order, Order)
        return JobResult.success(f"shipped {order.quantity} x {order.item} for order {order.id}")


JOBS: list[type[Job]] = [
    Greet,
    CountSync,
    Fanout,
    Flaky,
    SlowRetry,
    Forever,
    Sleepy,
    Holder,
    Hostile,
    Ship,
]


class TestingExtension(Extension):
    name = "testing"

    def jobs(self) -> list[Job]:
        return [job() for job in JOBS]


@pytest.fixture
def pgjobs_extensions() -> list[Extension]:
    """What a user's conftest.py does: name the extensions under test."""
    return [TestingExtension()]


# -- loading the plugin -------------------------------------------------------------------------


def test_every_fixture_of_the_plugin_is_prefixed() -> None:
    fixtures = [
        name
        for name, value in vars(plugin).items()
        if type(value).__name__ == "FixtureFunctionDefinition"
    ]
    assert len(fixtures) >= 6
    assert all(name.startswith("pgjobs_") for name in fixtures), fixtures


def test_loading_the_plugin_starts_nothing(pytester: pytest.Pytester) -> None:
    """A test that asks for no pgjobs fixture: the plugin is loaded (by its entry point) and
    has imported nothing that starts a server or connects."""
    pytester.makepyfile(
        """
        import sys

        def test_nothing_started(request):
            assert request.config.pluginmanager.has_plugin("pgjobs")
            assert "pgjobs.testing" not in sys.modules
            assert "pgjobs.embedded" not in sys.modules
            assert "pgserver" not in sys.modules
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_the_plugin_is_turned_off_with_p_no_pgjobs(pytester: pytest.Pytester) -> None:
    """The README's opt-out: with ``-p no:pgjobs`` no pgjobs fixture exists."""
    pytester.makepyfile(
        """
        def test_asks_for_a_database(pgjobs_dsn):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:pgjobs")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'pgjobs_dsn' not found*"])


def test_the_options_are_in_the_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--pgjobs-dsn=DSN*", "*--pgjobs-app=MODULE:ATTR*"])


# -- a user's test file, in a pytest of its own ---------------------------------------------------

USER_JOBS = """
    import pgjobs
    from pgjobs import Extension, Job, JobContext, JobResult


    class Welcome(Job):
        name = "shop-welcome"

        async def execute(self, ctx: JobContext) -> JobResult:
            greeting = ctx.parameters.get("greeting", "welcome")
            return JobResult.success(f"{greeting} {ctx.payload['email']}")


    class Signup(Job):
        name = "shop-signup"

        def execute(self, ctx: JobContext) -> JobResult:
            with ctx.db_pool.connection() as conn:
                pgjobs.enqueue_sync(conn, "shop-welcome", {"email": ctx.payload["email"]})
            return JobResult.success("signed up")


    class Shop(Extension):
        name = "shop"

        def jobs(self) -> list[Job]:
            return [Welcome(), Signup()]


    extension = Shop()
"""

USER_TESTS = """
    import psycopg
    import pgjobs

    from shop_jobs import Welcome


    def test_run_one_job(pgjobs_harness):
        run = pgjobs_harness.run_job(Welcome, payload={"email": "a@example.com"})
        assert (run.status, run.trigger) == ("succeeded", "manual")
        assert run.message == "hi a@example.com", "the profile's parameter"


    def test_application_code_enqueues_and_a_drain_runs_it(pgjobs_harness, pgjobs_dsn):
        with psycopg.connect(pgjobs_dsn) as conn:  # the application's own transaction
            pgjobs.enqueue_sync(conn, "shop-signup", {"email": "b@example.com"})
        pgjobs_harness.assert_enqueued("shop-signup", {"email": "b@example.com"})
        ran = pgjobs_harness.drain()
        assert [(r.job, r.status) for r in ran] == [
            ("shop-signup", "succeeded"),
            ("shop-welcome", "succeeded"),
        ]
        pgjobs_harness.assert_enqueued(Welcome, {"email": "b@example.com"}, count=1)


    def test_each_test_has_a_database_of_its_own(pgjobs_conn):
        assert pgjobs_conn.execute("SELECT count(*) FROM pgjobs.runs").fetchone() == (0,)
"""


USER_PROFILE = """
scheduler:
  jobs:
    - extension: shop
      job: shop-welcome
      parameters:
        greeting: hi
"""


def _user_project(pytester: pytest.Pytester, app: str) -> None:
    pytester.makepyfile(shop_jobs=textwrap.dedent(USER_JOBS))
    pytester.makepyfile(test_shop=textwrap.dedent(USER_TESTS))
    pytester.makefile(".yaml", profile=USER_PROFILE)
    pytester.makeini(
        f"[pytest]\npythonpath = .\npgjobs_app = {app}\npgjobs_profile = profile.yaml\n"
    )


def test_a_user_test_file_passes_and_fails_where_its_assertions_say(
    pytester: pytest.Pytester,
) -> None:
    """The app and the profile in the ini file; assert_enqueued fails a test that enqueued
    nothing and says what was enqueued."""
    _user_project(pytester, "shop_jobs:extension")
    pytester.makepyfile(
        test_failing="""
        import pgjobs

        def test_the_wrong_job_enqueued(pgjobs_harness, pgjobs_conn):
            pgjobs.enqueue_sync(pgjobs_conn, "shop-welcome", {"email": "c@example.com"})
            pgjobs_harness.assert_enqueued("shop-signup")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*expected a run of 'shop-signup' enqueued, found 0; enqueued:",
            "*run 1 shop-welcome (attempt 1, payload {'email': 'c@example.com'}) queued",
        ]
    )


def test_the_app_option_wins_over_the_ini_file_and_a_bad_one_is_one_error(
    pytester: pytest.Pytester,
) -> None:
    _user_project(pytester, "shop_jobs:extension")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--pgjobs-app", "shop_jobs:nothing", "-k", "run_one_job"
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["E *ConfigError: app 'shop_jobs:nothing': module 'shop_jobs'*"])


def test_the_example_extensions_tests_pass() -> None:
    """examples/tests/, run the way its README section says, from examples/."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests"],
        cwd=ROOT / "examples",
        env={**os.environ, "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and "failed" not in result.stdout


# -- run_job ------------------------------------------------------------------------------------


def test_run_job_runs_an_async_job_and_returns_its_stored_run(
    pgjobs_harness: JobHarness, pgjobs_dsn: str
) -> None:
    run = pgjobs_harness.run_job(Greet, payload={"who": "ada"}, parameters={"greeting": "hi"})

    assert (run.status, run.trigger, run.attempt, run.ok) == ("succeeded", "manual", 1, True)
    assert run.message == "hello ada"
    database = psycopg.conninfo.conninfo_to_dict(pgjobs_dsn)["dbname"]
    assert run.data == {"database": database, "greeting": "hi"}
    assert run.payload == {"who": "ada"} and run.parameters == {"greeting": "hi"}
    assert run.logs is not None and "greeting" in run.logs
    assert run.duration_seconds is not None and run.finished_at is not None
    assert pgjobs_harness.runs() == [run], "the run is the row in the database"


def test_run_job_takes_a_name_a_class_or_an_instance(pgjobs_harness: JobHarness) -> None:
    by_name = pgjobs_harness.run_job("testing-count")
    by_instance = pgjobs_harness.run_job(CountSync(offset=100))

    assert (by_name.status, by_name.data) == ("succeeded", {"runs": 1})
    assert (by_instance.status, by_instance.data) == ("succeeded", {"runs": 102})


def test_run_job_of_an_unknown_name_suggests_the_nearest(pgjobs_harness: JobHarness) -> None:
    with pytest.raises(UnknownJobError, match="did you mean: testing-greet"):
        pgjobs_harness.run_job("testing-gret")


def test_run_job_runs_a_job_no_extension_registers(pgjobs_dsn: str) -> None:
    class Lone(Job):
        name = "elsewhere-lone"

        def execute(self, ctx: JobContext) -> JobResult:
            return JobResult.success("alone")

    run = JobHarness(pgjobs_dsn).run_job(Lone)

    assert (run.job, run.status, run.message) == ("elsewhere-lone", "succeeded", "alone")


def test_run_job_refuses_what_an_enqueue_refuses_before_running(
    pgjobs_harness: JobHarness,
) -> None:
    with pytest.raises(ConfigError, match="payload must be"):
        pgjobs_harness.run_job(Greet, payload=["not", "an", "object"])
    with pytest.raises(ConfigError, match="NUL"):
        pgjobs_harness.run_job(Greet, parameters={"greeting": "a\x00b"})

    assert pgjobs_harness.runs() == [], "nothing ran"


def test_run_job_respects_the_jobs_lock_unless_forced(pgjobs_harness: JobHarness) -> None:
    Holder.started.clear()
    Holder.release.clear()
    with ThreadPoolExecutor(1) as other_thread:
        holding = other_thread.submit(pgjobs_harness.run_job, Holder)
        try:
            assert Holder.started.wait(30), "the first run started"
            [held] = pgjobs_harness.runs(Holder, status="running")
            with pytest.raises(LockHeldError, match=f"held by run {held.id} on worker cli-"):
                pgjobs_harness.run_job(Holder)
            forced = pgjobs_harness.run_job(Holder, force=True)
        finally:
            Holder.release.set()
    assert forced.status == "succeeded"
    assert holding.result().status == "succeeded"
    assert len(pgjobs_harness.runs(Holder)) == 2, "the refused run left no row"


def test_a_job_that_raises_is_a_failed_run_not_an_exception(pgjobs_harness: JobHarness) -> None:
    run = pgjobs_harness.run_job(Hostile)

    assert run.status == "failed" and run.error_type == "ValueError"
    assert run.error is not None and run.error.startswith("ValueError: bad")
    assert run.error_traceback is not None and "raise ValueError" in run.error_traceback
    assert "\x00" not in run.error


def test_a_job_past_its_timeout_is_timed_out(pgjobs_harness: JobHarness) -> None:
    run = pgjobs_harness.run_job(Sleepy)

    assert (run.status, run.message) == ("timed_out", "timed out after 0.2s")


def test_sync_methods_refuse_a_running_loop_and_the_async_ones_work(
    pgjobs_harness: JobHarness,
) -> None:
    async def in_a_loop() -> tuple[str, list[str]]:
        with pytest.raises(PgJobsError, match=r"await run_job_async\(\) instead"):
            pgjobs_harness.run_job(Greet)
        with pytest.raises(PgJobsError, match=r"await drain_async\(\) instead"):
            pgjobs_harness.drain()
        run = await pgjobs_harness.run_job_async(Greet, {"who": "loop"})
        async with await psycopg.AsyncConnection.connect(pgjobs_harness.dsn) as conn:
            await pgjobs.enqueue(conn, Greet, {"who": "queued"})
        drained = await pgjobs_harness.drain_async()
        return run.status, [r.status for r in drained]

    assert asyncio.run(in_a_loop()) == ("succeeded", ["succeeded"])


# -- the queue ----------------------------------------------------------------------------------


def test_drain_runs_what_was_enqueued_and_what_its_jobs_enqueue_in_order(
    pgjobs_harness: JobHarness, pgjobs_conn: psycopg.Connection[Any]
) -> None:
    pgjobs.enqueue_sync(pgjobs_conn, "testing-fanout", {"names": ["a", "b"]})
    pgjobs.enqueue_sync(pgjobs_conn, "testing-count", priority=5)  # runs last

    ran = pgjobs_harness.drain()

    assert [(r.job, r.payload, r.status) for r in ran] == [
        ("testing-fanout", {"names": ["a", "b"]}, "succeeded"),
        ("testing-greet", {"who": "a"}, "succeeded"),
        ("testing-greet", {"who": "b"}, "succeeded"),
        ("testing-count", None, "succeeded"),
    ]
    assert {r.worker_id for r in ran} == {pgjobs_harness.worker_id}
    assert pgjobs_harness.drain() == [], "the queue is empty"


def test_drain_runs_a_due_retry_and_leaves_a_delayed_one_unless_asked(
    pgjobs_harness: JobHarness, pgjobs_conn: psycopg.Connection[Any]
) -> None:
    pgjobs.enqueue_sync(pgjobs_conn, Flaky)
    pgjobs.enqueue_sync(pgjobs_conn, SlowRetry)

    ran = pgjobs_harness.drain()

    assert [(r.job, r.trigger, r.attempt, r.status) for r in ran] == [
        ("testing-flaky", "enqueue", 1, "failed"),
        ("testing-slow-retry", "enqueue", 1, "failed"),
        ("testing-flaky", "retry", 2, "succeeded"),
    ]
    waiting = pgjobs_harness.runs(SlowRetry, status="queued")
    assert [(r.trigger, r.attempt) for r in waiting] == [("retry", 2)]

    later = pgjobs_harness.drain(include_delayed=True)

    assert [(r.id, r.status, r.message) for r in later] == [
        (waiting[0].id, "succeeded", "attempt 2")
    ]


def test_drain_leaves_a_run_enqueued_for_later_unless_asked(
    pgjobs_harness: JobHarness, pgjobs_conn: psycopg.Connection[Any]
) -> None:
    from datetime import UTC, datetime, timedelta

    tomorrow = datetime.now(UTC) + timedelta(days=1)
    run_id = pgjobs.enqueue_sync(pgjobs_conn, Greet, run_at=tomorrow)

    assert pgjobs_harness.drain() == []
    assert [r.id for r in pgjobs_harness.drain(include_delayed=True)] == [run_id]


def test_drain_serves_only_the_queues_it_is_given(
    pgjobs_harness: JobHarness, pgjobs_conn: psycopg.Connection[Any]
) -> None:
    other = pgjobs.enqueue_sync(pgjobs_conn, Greet, queue="other")

    assert pgjobs_harness.drain(queues=["default"]) == []
    assert [r.id for r in pgjobs_harness.drain(queues=["other"])] == [other]


def test_drain_holds_a_paused_jobs_runs_as_a_worker_does(
    pgjobs_harness: JobHarness, pgjobs_conn: psycopg.Connection[Any]
) -> None:
    held = pgjobs.enqueue_sync(pgjobs_conn, Greet)
    pgjobs_conn.execute("UPDATE pgjobs.jobs SET paused = true WHERE name = 'testing-greet'")

    assert pgjobs_harness.drain() == []
    assert pgjobs_harness.run(held).status == "queued"


def test_drain_gives_up_on_a_queue_that_never_empties(
    pgjobs_harness: JobHarness, pgjobs_conn: psycopg.Connection[Any]
) -> None:
    pgjobs.enqueue_sync(pgjobs_conn, Forever)

    with pytest.raises(PgJobsError, match="drain ran 5 runs and the queue is still not empty"):
        pgjobs_harness.drain(max_runs=5)

    statuses = [r.status for r in pgjobs_harness.runs(Forever)]
    assert statuses == ["succeeded"] * 5 + ["queued"], "the sixth run is handed back, unstarted"


def test_assert_enqueued_matches_a_part_of_the_payload_and_counts(
    pgjobs_harness: JobHarness, pgjobs_conn: psycopg.Connection[Any]
) -> None:
    pgjobs.enqueue_sync(pgjobs_conn, Greet, {"who": "ada", "lang": "en"})
    pgjobs.enqueue_sync(pgjobs_conn, Greet, {"who": "bob", "lang": "en"})
    pgjobs_harness.run_job(Greet, {"who": "manual"})  # not enqueued by the application

    assert len(pgjobs_harness.assert_enqueued(Greet, {"lang": "en"}, count=2)) == 2
    pgjobs_harness.assert_enqueued("testing-greet", {"who": "ada"}, status="queued")
    pgjobs_harness.assert_not_enqueued(Greet, {"who": "manual"})
    pgjobs_harness.assert_not_enqueued(Fanout)
    with pytest.raises(AssertionError) as failure:
        pgjobs_harness.assert_enqueued(Greet, {"who": "cy"})
    assert "with a payload containing {'who': 'cy'}" in str(failure.value)
    assert "payload {'who': 'bob', 'lang': 'en'}) queued" in str(failure.value)


def test_enqueued_runs_are_the_applications_enqueues_oldest_first_whatever_became_of_them(
    pgjobs_harness: JobHarness, pgjobs_conn: psycopg.Connection[Any]
) -> None:
    first = pgjobs.enqueue_sync(pgjobs_conn, Flaky, {"n": 1})
    second = pgjobs.enqueue_sync(pgjobs_conn, Greet, {"who": "ada"})
    pgjobs_harness.run_job(Greet, {"who": "manual"})

    pgjobs_harness.drain()  # Flaky's first attempt fails, its retry (not an enqueue) succeeds

    assert [r.id for r in pgjobs_harness.enqueued_runs()] == [first, second]
    assert [r.status for r in pgjobs_harness.enqueued_runs()] == ["failed", "succeeded"]
    assert [r.id for r in pgjobs_harness.enqueued_runs(Greet)] == [second]
    assert pgjobs_harness.enqueued_runs(Flaky, status="succeeded") == []
    retries = [r for r in pgjobs_harness.runs(Flaky) if r.trigger == "retry"]
    assert [r.status for r in retries] == ["succeeded"]


def test_a_typed_job_is_run_enqueued_and_found_by_its_payload_object(
    pgjobs_harness: JobHarness, pgjobs_conn: psycopg.Connection[Any]
) -> None:
    run = pgjobs_harness.run_job(Ship, payload=Order(id=7, item="tea", quantity=2))
    assert (run.status, run.message) == ("succeeded", "shipped 2 x tea for order 7")
    assert run.payload == {"id": 7, "item": "tea", "quantity": 2}, "stored as its JSON object"

    pgjobs.enqueue_sync(pgjobs_conn, Ship, Order(id=8, item="cups"))
    found = pgjobs_harness.assert_enqueued(Ship, Order(id=8, item="cups"), count=1)
    assert found[0].payload == {"id": 8, "item": "cups", "quantity": 1}
    pgjobs_harness.assert_not_enqueued(Ship, Order(id=7, item="tea", quantity=2))

    with pytest.raises(PayloadError, match=r"testing-ship.*item"):
        pgjobs_harness.run_job(Ship, payload={"id": 9})
    assert len(pgjobs_harness.runs(Ship)) == 2, "a refused payload stores no run"


def test_application_code_can_enqueue_once_the_harness_is_set_up(
    pgjobs_harness: JobHarness, pgjobs_dsn: str
) -> None:
    """The fixture registers the jobs, as a worker's start does: enqueue knows them."""
    jobs = scalar(pgjobs_dsn, "SELECT count(*) FROM pgjobs.jobs")
    assert jobs == len(JOBS)
    with (
        psycopg.connect(pgjobs_dsn) as conn,
        pytest.raises(UnknownJobError, match="unknown job 'testing-nope'"),
    ):
        pgjobs.enqueue_sync(conn, "testing-nope")


# -- databases ----------------------------------------------------------------------------------


def test_each_database_is_migrated_and_dropped_after_use() -> None:
    admin = os.environ.get("PGJOBS_TEST_DSN")
    if not admin:
        pytest.skip("needs PGJOBS_TEST_DSN")
    databases = Databases(admin)
    try:
        with databases.database() as first, databases.database() as second:
            assert first != second
            for dsn in (first, second):
                assert scalar(dsn, "SELECT count(*) FROM pgjobs.runs") == 0
            names = [psycopg.conninfo.conninfo_to_dict(d)["dbname"] for d in (first, second)]
        exists = "SELECT count(*) FROM pg_database WHERE datname = ANY (%s)"
        assert scalar(admin, exists, names) == 0
    finally:
        databases.close()
    like = "SELECT count(*) FROM pg_database WHERE datname LIKE %s"
    assert scalar(admin, like, f"pgjobs\\_testing\\_{os.getpid()}\\_%") == 0


def test_without_a_dsn_the_fixtures_start_an_embedded_server(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGJOBS_TEST_DSN", raising=False)
    pytester.makepyfile(
        """
        def test_migrated(pgjobs_conn):
            assert pgjobs_conn.execute("SELECT count(*) FROM pgjobs.runs").fetchone() == (0,)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
