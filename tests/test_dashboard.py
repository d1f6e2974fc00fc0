"""The dashboard over plain HTTP: its pages from a real database, escaping of everything a job
wrote, security headers, the action token, and the loopback rule."""

from __future__ import annotations

import http.client
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import urlencode, urlsplit

import psycopg
import pytest

from pgjobs.dashboard import Dashboard, DashboardSettings, Server, check_bind, make_server
from pgjobs.dashboard.app import Request
from pgjobs.dashboard.data import DashboardStore
from pgjobs.errors import ConfigError
from tests.cli import run_pgjobs
from tests.test_runlog import XSS
from tests.workers import ROOT

TOKEN = "s3cret-token-for-tests"

SEED = """
INSERT INTO pgjobs.jobs (name, extension, description, schedule, timezone, next_fire_at, paused)
VALUES ('obs-cleanup', 'obs', 'Delete expired sessions', '0 */5 * * * *', 'UTC',
        now() + interval '3 minutes', false),
       ('obs-report', 'obs', 'Nightly report', '0 30 2 * * *', 'Europe/Berlin',
        now() + interval '9 hours', false),
       ('obs-echo', 'obs', %(xss)s, NULL, 'UTC', NULL, false);
INSERT INTO pgjobs.workers (id, host, pid, version, queues, concurrency, expires_at)
VALUES ('w-alive', 'host-a', 4242, '0.1.0', '{default}', 4, now() + interval '1 minute');
INSERT INTO pgjobs.runs (job, trigger, status, scheduled_for, started_at, finished_at,
                         duration_seconds, message, data, error_type, error_message,
                         error_traceback, logs, worker_id)
VALUES ('obs-cleanup', 'schedule', 'succeeded', now() - interval '20 minutes',
        now() - interval '20 minutes', now() - interval '19 minutes', 60, 'Deleted 42',
        '{"deleted": 42}', NULL, NULL, NULL, '17:00:00.000 INFO deleted 42', 'w-alive'),
       ('obs-report', 'manual', 'failed', now() - interval '10 minutes',
        now() - interval '10 minutes', now() - interval '9 minutes', 2.5,
        'RuntimeError: upstream API returned 503', NULL, 'RuntimeError',
        'upstream API returned 503',
        E'Traceback (most recent call last):\\n  File "report.py", line 9, in execute\\n'
        'RuntimeError: upstream API returned 503',
        E'17:00:00.000 INFO fetching orders\\n17:00:02.000 WARNING upstream slow', 'w-alive'),
       ('obs-echo', 'enqueue', 'succeeded', now() - interval '5 minutes',
        now() - interval '5 minutes', now() - interval '5 minutes', 0.01, %(xss)s,
        jsonb_build_object('echo', %(xss)s::text), NULL, NULL, NULL, %(xss)s, 'w-alive'),
       ('obs-cleanup', 'schedule', 'skipped', now() - interval '15 minutes', NULL,
        now() - interval '15 minutes', NULL, 'skipped: lock held by run 1', NULL, NULL, NULL,
        NULL, NULL, 'w-alive'),
       ('obs-cleanup', 'manual', 'running', now() - interval '1 minute',
        now() - interval '1 minute', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'w-alive');
INSERT INTO pgjobs.runs (job, trigger, status, scheduled_for, queue)
VALUES ('obs-report', 'enqueue', 'queued', now() - interval '30 seconds', 'reports');
"""


def seed(dsn: str) -> None:
    """Jobs, runs in several states (one with a script in its message), a live worker."""
    # Client-side binding: one round trip for the whole script.
    with psycopg.connect(dsn, autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
        conn.execute(SEED, {"xss": XSS})


@contextmanager
def serving(dsn: str, **settings: Any) -> Iterator[Server]:
    """A dashboard on a free loopback port, serving from a thread until the block ends."""
    server = make_server(DashboardSettings(dsn=dsn, port=0, **{"refresh": 0, **settings}))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class Reply:
    status: int
    headers: Message
    text: str


def call(
    server: Server,
    path: str,
    form: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request, redirects not followed."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(str(host), int(port), timeout=10)
    body = urlencode(form) if form is not None else None
    sent = {"Content-Type": "application/x-www-form-urlencoded"} if form is not None else {}
    conn.request("POST" if form is not None else "GET", path, body, {**sent, **(headers or {})})
    response = conn.getresponse()
    reply = Reply(response.status, response.headers, response.read().decode())
    conn.close()
    return reply


def scalar(dsn: str, query: str, *params: Any) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query, params or None).fetchone()
    return None if row is None else row[0]


@pytest.fixture
def seeded(dsn: str) -> str:
    seed(dsn)
    return dsn


@pytest.fixture
def readonly(seeded: str) -> Iterator[Server]:
    with serving(seeded) as server:
        yield server


@pytest.fixture
def actions(seeded: str) -> Iterator[Server]:
    with serving(seeded, allow_actions=True, token=TOKEN) as server:
        yield server


def run_id(dsn: str, job: str, status: str) -> int:
    return int(
        scalar(dsn, "SELECT id FROM pgjobs.runs WHERE job = %s AND status = %s", job, status)
    )


# -- pages --------------------------------------------------------------------------------------


def test_the_jobs_page_shows_schedules_in_words_next_fires_and_last_outcomes(
    readonly: Server,
) -> None:
    page = call(readonly, "/").text

    assert "every 5 minutes" in page and "daily at 02:30 (Europe/Berlin)" in page
    assert re.search(r"<time [^>]*>in 2m5\ds</time>", page)
    assert 'class="sq st-failed"' in page and 'class="sq st-skipped"' in page
    assert "1 worker(s) alive" in page and "1 queued" in page and "1 running" in page
    assert "on demand" in page


def test_the_timeline_shows_failed_skipped_and_running_runs(readonly: Server) -> None:
    page = call(readonly, "/timeline?hours=1").text

    for status in ("failed", "skipped", "running", "succeeded"):
        assert f'data-status="{status}"' in page
    assert '<g class="row" data-job="obs-report">' in page


def test_run_detail_shows_message_data_error_traceback_and_logs(
    readonly: Server, seeded: str
) -> None:
    failed = call(readonly, f"/runs/{run_id(seeded, 'obs-report', 'failed')}").text
    ok = call(readonly, f"/runs/{run_id(seeded, 'obs-cleanup', 'succeeded')}").text

    assert "<strong>RuntimeError</strong>: upstream API returned 503" in failed
    assert "File &quot;report.py&quot;, line 9, in execute" in failed
    assert "17:00:02.000 WARNING upstream slow" in failed
    assert "host-a, pid 4242" in failed
    assert "&quot;deleted&quot;: 42" in ok
    assert call(readonly, "/runs/999999").status == 404


def test_runs_are_paged_with_next_and_previous_links(seeded: str, readonly: Server) -> None:
    with psycopg.connect(seeded, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pgjobs.runs (job, trigger, status, finished_at, message)"
            " SELECT 'obs-cleanup', 'manual', 'succeeded', now(), 'bulk ' || i"
            " FROM generate_series(1, 245) i"
        )
        rows = conn.execute(
            "SELECT id FROM pgjobs.runs WHERE job = 'obs-cleanup' ORDER BY id DESC"
        ).fetchall()
    ids = [int(row[0]) for row in rows]

    def shown(page: str) -> list[int]:
        return [int(i) for i in re.findall(r'<tr><td><a href="/runs/(\d+)">', page)]

    first = call(readonly, "/runs?job=obs-cleanup").text
    second = call(readonly, "/runs?job=obs-cleanup&page=2").text
    last = call(readonly, "/runs?job=obs-cleanup&page=3").text

    assert shown(first) == ids[:100] and shown(second) == ids[100:200]
    assert shown(last) == ids[200:]
    assert (
        'rel="next" href="/runs?job=obs-cleanup&amp;page=2"' in first and 'rel="prev"' not in first
    )
    assert 'rel="prev" href="/runs?job=obs-cleanup"' in second
    assert 'rel="next" href="/runs?job=obs-cleanup&amp;page=3"' in second
    assert 'rel="prev" href="/runs?job=obs-cleanup&amp;page=2"' in last and 'rel="next"' not in last
    assert shown(call(readonly, "/runs?job=obs-cleanup&page=x").text) == ids[:100]


def test_runs_pages_reach_past_the_five_thousandth_run(seeded: str, readonly: Server) -> None:
    with psycopg.connect(seeded, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pgjobs.runs (job, trigger, status, finished_at, message)"
            " SELECT 'obs-cleanup', 'manual', 'succeeded', now(), 'deep ' || i"
            " FROM generate_series(1, 5250) i"
        )
        ids = [
            int(r[0])
            for r in conn.execute(
                "SELECT id FROM pgjobs.runs WHERE job = 'obs-cleanup' ORDER BY id DESC"
            ).fetchall()
        ]
    assert len(ids) > 5200
    page = call(readonly, "/runs?job=obs-cleanup&page=53").text
    shown = [int(i) for i in re.findall(r'<tr><td><a href="/runs/(\d+)">', page)]
    assert shown == ids[5200:5300]
    assert ('rel="next"' in page) == (len(ids) > 5300)


def test_the_runs_workers_and_queues_pages(readonly: Server) -> None:
    runs = call(readonly, "/runs?job=obs-report&status=failed").text
    workers = call(readonly, "/workers").text
    queues = call(readonly, "/queues").text

    assert "upstream API returned 503" in runs and "Deleted 42" not in runs
    assert "w-alive" in workers and "host-a" in workers and ">alive<" in workers
    assert re.search(r"#\d+ obs-cleanup</a>", workers)  # what it is running
    assert re.search(r"<td>reports</td><td class=\"num\">1</td>", queues)


# -- pauses and limits -------------------------------------------------------------------------


def sql(dsn: str, statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statements)


def row_of(page: str, attribute: str, name: str) -> str:
    """The table row (or list item) of ``page`` whose ``attribute`` is ``name``."""
    match = re.search(rf'<(tr|li) {attribute}="{re.escape(name)}">(.*?)</\1>', page, re.S)
    assert match, (attribute, name)
    return match[2]


def test_the_jobs_page_shows_paused_queues_held_jobs_and_limits(seeded: str) -> None:
    sql(
        seeded,
        "UPDATE pgjobs.jobs SET queue = 'reports', max_concurrency = 3, concurrency_key = 'tenant',"
        " rate_limit = '10/m' WHERE name = 'obs-report';"
        "UPDATE pgjobs.jobs SET paused = true, paused_at = now() WHERE name = 'obs-cleanup';"
        "INSERT INTO pgjobs.queues (name, paused, paused_at) VALUES ('reports', true, now()),"
        " ('emails', false, NULL);",
    )
    with serving(seeded) as readonly:
        page = call(readonly, "/").text

    notice = row_of(page, "data-queue", "reports")
    assert "queue reports</strong> paused" in notice and "holding 1 queued run(s)" in notice
    assert 'data-queue="emails"' not in page
    report, cleanup = (
        row_of(page, "data-job", "obs-report"),
        row_of(page, "data-job", "obs-cleanup"),
    )
    assert ">queue paused</span>" in report and ">paused</span>" not in report
    assert ">max 3 per tenant</span>" in report and ">10/m</span>" in report
    assert "queue reports" in report
    assert ">paused</span>" in cleanup and "queue paused" not in cleanup
    assert 'href="/job?name=obs-report"' in report
    assert "1 queue(s) paused" in page


def test_a_job_page_shows_limits_running_of_allowed_and_why_runs_wait(
    seeded: str, readonly: Server
) -> None:
    running = run_id(seeded, "obs-cleanup", "running")
    sql(
        seeded,
        "UPDATE pgjobs.jobs SET max_concurrency = 1, rate_limit = '2/s' WHERE name = 'obs-cleanup';"
        f"UPDATE pgjobs.runs SET slot = 1 WHERE id = {running};"
        "INSERT INTO pgjobs.runs (job, trigger, scheduled_for) VALUES"
        " ('obs-cleanup', 'enqueue', now()), ('obs-cleanup', 'retry', now()),"
        " ('obs-cleanup', 'enqueue', now() + interval '1 hour');",
    )

    page = call(readonly, "/job?name=obs-cleanup").text

    assert "<dt>Concurrency</dt><dd>at most 1 at a time</dd>" in page
    assert "<dt>Running</dt><dd>1 of 1 allowed</dd>" in page
    assert "<dt>Rate limit</dt><dd>2/s</dd>" in page
    waits = {r: row_of(page, "data-reason", r) for r in ("concurrency", "scheduled")}
    assert '<td class="num">2</td><td>1 of 1 running</td>' in waits["concurrency"]
    assert '<td class="num">1</td>' in waits["scheduled"]
    assert 'href="/runs?job=obs-cleanup&amp;status=queued"' in page
    assert "/actions/" not in page  # read-only
    assert call(readonly, "/job?name=obs-nothing").status == 404
    assert call(readonly, "/job").status == 404


def add_schedules(dsn: str) -> None:
    """Runtime schedules of obs-cleanup: one ticking, one paused, one a worker refused; and one
    of obs-echo, refused, whose name and error are a script."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pgjobs.schedule('obs-cleanup', '0 0 6 * * *', name => 'morning')")
        conn.execute("SELECT pgjobs.schedule('obs-cleanup', '0 0 7 * * *', name => 'later')")
        conn.execute("SELECT pgjobs.alter_schedule('obs-cleanup', 'later', paused => true)")
        conn.execute(
            "INSERT INTO pgjobs.schedules (job, name, cron, timezone, error) VALUES"
            " ('obs-cleanup', 'typo', '0 99 * * * *', 'UTC', 'minute field out of range'),"
            " ('obs-echo', %s, '0 99 * * * *', 'UTC', %s)",
            [XSS, XSS],
        )


def test_the_jobs_page_counts_runtime_schedules_and_flags_those_in_error(seeded: str) -> None:
    add_schedules(seeded)
    with serving(seeded) as readonly:
        page = call(readonly, "/").text

    cleanup = row_of(page, "data-job", "obs-cleanup")
    assert '<span class="more" title="schedules besides its own">+3</span>' in cleanup
    assert ">1 in error</span>" in cleanup
    report = row_of(page, "data-job", "obs-report")
    assert 'class="more"' not in report and "in error" not in report
    notice = row_of(page, "data-schedule-error", "obs-cleanup/typo")
    assert "<strong>schedule typo</strong>" in notice and 'href="/job?name=obs-cleanup"' in notice
    assert "<code>0 99 * * * *</code> UTC" in notice
    assert '<span class="schedule-error">minute field out of range</span>' in notice
    assert "2 schedule(s) in error" in page  # the strip at the top of every page
    assert "<script>document" not in page and page.count("<script") == 1
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;" in page


def test_a_job_page_lists_its_schedules_and_what_each_is_doing(seeded: str) -> None:
    add_schedules(seeded)
    with serving(seeded) as readonly:
        page = call(readonly, "/job?name=obs-cleanup").text
        echo = call(readonly, "/job?name=obs-echo").text

    assert "<h2>Schedules</h2>" in page
    names = re.findall(r'<tr data-schedule="([^"]+)">', page)
    assert names == ["default", "later", "morning", "typo"]
    default = row_of(page, "data-schedule", "default")
    assert "every 5 minutes <code>0 */5 * * * *</code>" in default
    assert "<td>code</td>" in default and ">ticking</span>" in default
    assert re.search(r"<time [^>]*>in 2m5\ds</time>", default)
    assert ">paused</span>" in row_of(page, "data-schedule", "later")
    morning = row_of(page, "data-schedule", "morning")
    assert ">ticking</span>" in morning and "not yet worked out" in morning
    typo = row_of(page, "data-schedule", "typo")
    assert '>error</span> <span class="schedule-error">minute field out of range</span>' in typo
    assert "not yet worked out" not in typo

    # obs-echo has no schedule of its own: only its runtime one, whose name and error are text.
    assert re.findall(r"<tr data-schedule=", echo) == ["<tr data-schedule="]
    assert "<script>document" not in echo and echo.count("<script") == 1
    assert echo.count("&lt;script&gt;document.title=&#x27;pwned&#x27;") >= 3


def test_the_queues_page_shows_each_queues_pause_and_what_its_runs_wait_for(
    seeded: str, readonly: Server
) -> None:
    sql(
        seeded,
        "INSERT INTO pgjobs.queues (name, paused, paused_at, rate_limit)"
        " VALUES ('reports', true, now(), '5/s')",
    )

    page = call(readonly, "/queues").text

    reports = row_of(page, "data-queue", "reports")
    assert '<span class="tag paused">paused</span>' in reports and "5/s" in reports
    assert 'data-reason="queue paused">1 queue paused</span>' in reports
    assert ">none</span>" in reports  # no live worker serves it
    default = row_of(page, "data-queue", "default")
    assert ">active</span>" in default and "w-alive" in default
    assert "/actions/" not in page


def test_queue_actions_need_the_token_and_pause_and_resume_the_queue(
    actions: Server, seeded: str
) -> None:
    def paused() -> Any:
        return scalar(seeded, "SELECT paused FROM pgjobs.queues WHERE name = 'reports'")

    cookie = {"Cookie": f"pgjobs_token={TOKEN}"}
    for form, headers in (
        ({"queue": "reports"}, {}),
        ({"queue": "reports", "token": "wrong"}, {}),
        ({"queue": "reports"}, cookie),  # the cookie alone is not enough
    ):
        assert call(actions, "/actions/pause-queue", form, headers).status == 403
    cross = call(
        actions,
        "/actions/pause-queue",
        {"queue": "reports", "token": TOKEN},
        {"Origin": "http://evil.example"},
    )
    assert cross.status == 403 and paused() is None

    done = call(actions, "/actions/pause-queue", {"queue": "reports", "token": TOKEN, "next": "/"})
    assert done.status == 303 and paused() is True
    assert "Paused queue reports" in call(actions, done.headers["Location"]).text
    assert call(actions, "/actions/pause-queue", {"queue": "reports", "token": TOKEN}).status == 409

    queues = call(actions, "/queues", headers=cookie).text
    assert 'data-action="resume-queue"' in row_of(queues, "data-queue", "reports")
    assert 'data-action="pause-queue"' in row_of(queues, "data-queue", "default")

    back = call(actions, "/actions/resume-queue", {"queue": "reports", "token": TOKEN})
    assert back.status == 303 and paused() is False
    assert (
        call(actions, "/actions/resume-queue", {"queue": "reports", "token": TOKEN}).status == 409
    )

    for bad in ("", " ", "q" * 201):
        reply = call(actions, "/actions/pause-queue", {"queue": bad, "token": TOKEN})
        assert reply.status == 409, bad
    assert scalar(seeded, "SELECT count(*) FROM pgjobs.queues") == 1


def test_without_allow_actions_a_queue_cannot_be_paused(readonly: Server, seeded: str) -> None:
    reply = call(readonly, "/actions/pause-queue", {"queue": "reports", "token": TOKEN})
    assert reply.status == 403 and "--allow-actions" in reply.text
    assert scalar(seeded, "SELECT count(*) FROM pgjobs.queues") == 0


def test_everything_a_job_wrote_is_escaped(readonly: Server, seeded: str) -> None:
    pages = [
        "/",
        "/timeline",
        "/runs",
        f"/runs/{run_id(seeded, 'obs-echo', 'succeeded')}",
        "/job?name=obs-echo",
    ]
    for path in pages:
        text = call(readonly, path).text
        assert "&lt;script&gt;document.title=&#x27;pwned&#x27;" in text, path
        assert "<script>document" not in text, path
        assert text.count("<script") == 1, path  # only the dashboard's own script


def test_refusals_and_errors_say_nothing_of_the_database(seeded: str) -> None:
    dbname = psycopg.conninfo.conninfo_to_dict(seeded)["dbname"]
    with serving(seeded) as readonly:
        assert dbname in call(readonly, "/").text  # the reader may see where the data is from
        assert dbname not in call(readonly, "/nowhere").text
    with serving(seeded, host="0.0.0.0", token=TOKEN) as guarded:
        # Bound to every interface; reached here over loopback.
        locked = call(guarded, "/")
        assert locked.status == 401
        assert dbname not in locked.text and "127.0.0.1:5432" not in locked.text


def test_only_the_dashboards_own_messages_are_shown(actions: Server, seeded: str) -> None:
    done = call(actions, "/actions/pause", {"job": "obs-report", "token": TOKEN, "next": "/"})
    assert "Paused obs-report" in call(actions, done.headers["Location"]).text

    forged = [
        "/?done=paused&ref=your+account+is+locked%2C+call+555-0100",
        "/?done=paused&ref=obs-report",
        done.headers["Location"].replace("obs-report", "obs-cleanup"),
    ]
    for path in forged:
        page = call(actions, path).text
        assert "Paused" not in page and "555-0100" not in page, path
        assert 'class="flash"' not in page, path


def test_every_response_carries_the_security_headers(readonly: Server) -> None:
    for path in ("/", "/runs/999999", "/static/dashboard.js", "/static/nope"):
        headers = call(readonly, path).headers
        csp = headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp, path
        assert "unsafe-inline" not in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Cache-Control"] == "no-store"
    assert call(readonly, "/static/dashboard.js").headers["Content-Type"] == "text/javascript"


# -- actions and the token ----------------------------------------------------------------------


def test_without_allow_actions_there_are_no_actions(readonly: Server, seeded: str) -> None:
    assert "/actions/" not in call(readonly, "/").text
    reply = call(readonly, "/actions/pause", {"job": "obs-report", "token": TOKEN})
    assert reply.status == 403 and "--allow-actions" in reply.text
    assert scalar(seeded, "SELECT paused FROM pgjobs.jobs WHERE name = 'obs-report'") is False


@pytest.mark.parametrize("token", [None, "", "wrong"])
def test_an_action_without_the_right_token_is_refused(
    actions: Server, seeded: str, token: str | None
) -> None:
    form = {"job": "obs-report"} | ({"token": token} if token is not None else {})

    reply = call(actions, "/actions/pause", form)

    assert reply.status == 403 and "needs the dashboard&#x27;s token" in reply.text
    assert scalar(seeded, "SELECT paused FROM pgjobs.jobs WHERE name = 'obs-report'") is False


def test_the_cookie_alone_does_not_allow_an_action(actions: Server, seeded: str) -> None:
    reply = call(
        actions, "/actions/pause", {"job": "obs-report"}, {"Cookie": f"pgjobs_token={TOKEN}"}
    )
    assert reply.status == 403


def test_actions_with_the_token_change_the_database(actions: Server, seeded: str) -> None:
    def act(name: str, **form: str) -> Reply:
        reply = call(actions, f"/actions/{name}", {**form, "token": TOKEN, "next": "/"})
        assert reply.status == 303, reply.text
        return reply

    act("pause", job="obs-report")
    assert scalar(seeded, "SELECT paused FROM pgjobs.jobs WHERE name = 'obs-report'") is True
    act("resume", job="obs-report")
    assert scalar(seeded, "SELECT paused FROM pgjobs.jobs WHERE name = 'obs-report'") is False

    queued = act("run-now", job="obs-cleanup").headers["Location"]
    new_id = int(re.findall(r"ref=(\d+)", queued)[0])
    assert (
        scalar(seeded, "SELECT trigger || ' ' || status FROM pgjobs.runs WHERE id = %s", new_id)
        == "manual queued"
    )
    assert "Queued run #" in call(actions, queued).text

    failed = run_id(seeded, "obs-report", "failed")
    with psycopg.connect(seeded, autocommit=True) as conn:
        conn.execute("UPDATE pgjobs.runs SET concurrency_key = 'k-1' WHERE id = %s", [failed])
    act("retry", run=str(failed))
    # The same work: its concurrency key comes along.
    assert (
        scalar(
            seeded,
            "SELECT count(*) FROM pgjobs.runs WHERE retry_of = %s AND concurrency_key = 'k-1'",
            failed,
        )
        == 1
    )
    assert call(actions, "/actions/retry", {"run": str(failed), "token": TOKEN}).status == 409

    act("cancel", run=str(new_id))
    assert scalar(seeded, "SELECT status FROM pgjobs.runs WHERE id = %s", new_id) == "cancelled"
    running = run_id(seeded, "obs-cleanup", "running")
    act("cancel", run=str(running))
    assert scalar(
        seeded, "SELECT cancel_requested_at IS NOT NULL FROM pgjobs.runs WHERE id = %s", running
    )


def test_a_bearer_token_works_for_scripts(actions: Server, seeded: str) -> None:
    reply = call(
        actions, "/actions/pause", {"job": "obs-report"}, {"Authorization": f"Bearer {TOKEN}"}
    )
    assert reply.status == 303
    assert scalar(seeded, "SELECT paused FROM pgjobs.jobs WHERE name = 'obs-report'") is True


def test_visiting_with_the_token_sets_a_cookie_and_unlocks_the_forms(actions: Server) -> None:
    locked = call(actions, "/")
    assert 'name="token" value=""' in locked.text and "Unlock actions" in locked.text

    visit = call(actions, f"/runs?job=obs-report&token={TOKEN}")
    assert visit.status == 303 and visit.headers["Location"] == "/runs?job=obs-report"
    cookie = visit.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie

    unlocked = call(actions, "/", headers={"Cookie": cookie.split(";")[0]})
    assert f'name="token" value="{TOKEN}"' in unlocked.text and "actions unlocked" in unlocked.text
    assert call(actions, "/?token=nope").status == 403


def test_a_generated_token_is_long_and_random(seeded: str) -> None:
    store = DashboardStore(seeded)
    first = Dashboard(DashboardSettings(dsn=seeded, allow_actions=True), store)
    second = Dashboard(DashboardSettings(dsn=seeded, allow_actions=True), store)
    assert first.token and second.token and first.token != second.token
    assert len(first.token) >= 24
    assert Dashboard(DashboardSettings(dsn=seeded), store).token is None


# -- where it listens ---------------------------------------------------------------------------


def test_a_non_loopback_bind_needs_a_token() -> None:
    for host in ("0.0.0.0", "::", "192.168.1.20", "example.com"):
        with pytest.raises(ConfigError, match="without --token"):
            check_bind(host, None)
        check_bind(host, "t" * 16)
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        check_bind(host, None)


@pytest.mark.parametrize("token", ["t", "", "fifteen-chars-x"])
def test_a_short_token_is_refused_with_one_clear_line(dsn: str, token: str) -> None:
    done = run_pgjobs(None, "dashboard", "--token", token, "--dsn", dsn, timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: --token is too short ({len(token)} characters, at least 16): use a long random "
        "value, e.g. the output of `python -c 'import secrets; print(secrets.token_urlsafe(24))'`"
    ]


def test_a_token_a_cookie_cannot_carry_is_refused() -> None:
    for token in ("a" * 16 + "; Path=/", "a" * 16 + "\r\nX: y", "a" * 16 + " b"):
        with pytest.raises(ConfigError, match="may only hold letters, digits"):
            check_bind("127.0.0.1", token)


def test_the_command_refuses_a_non_loopback_host_without_a_token(dsn: str) -> None:
    done = run_pgjobs(None, "dashboard", "--host", "0.0.0.0", "--dsn", dsn, timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: refusing to serve the dashboard on non-loopback host '0.0.0.0' without --token"
    ]


def test_the_command_prints_where_it_serves_and_the_token_it_made(dsn: str) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pgjobs",
            "dashboard",
            "--port",
            "0",
            "--allow-actions",
            "--dsn",
            dsn,
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        lines = [proc.stderr.readline() for _ in range(3)]
    finally:
        proc.terminate()
        proc.wait(10)
    assert re.match(r"pgjobs dashboard on http://127\.0\.0\.1:\d+/$", lines[0])
    token = lines[1].split(": ", 1)[1].strip()
    assert len(token) >= 24 and lines[2].strip().endswith(f"?token={token} to unlock them")


def test_beyond_loopback_every_page_needs_the_token(seeded: str) -> None:
    store = DashboardStore(seeded)
    store.open()
    try:
        app = Dashboard(DashboardSettings(dsn=seeded, host="0.0.0.0", token=TOKEN), store)

        def get(path: str, **headers: str) -> int:
            message = Message()
            for name, value in headers.items():
                message[name.replace("_", "-")] = value
            parts = urlsplit(path)
            query = dict(p.split("=", 1) for p in parts.query.split("&") if p)
            return app.handle(Request("GET", parts.path, query, message)).status

        assert get("/") == 401
        assert get("/runs") == 401
        assert get("/", Authorization=f"Bearer {TOKEN}") == 200
        assert get("/", Cookie=f"pgjobs_token={TOKEN}") == 200
        assert get("/static/dashboard.css") == 200
    finally:
        store.close()


def test_a_foreign_host_header_is_refused_on_loopback(readonly: Server) -> None:
    # A page of another site that resolves its own name to 127.0.0.1 (DNS rebinding).
    assert call(readonly, "/", headers={"Host": "evil.example:8080"}).status == 403
    assert call(readonly, "/", headers={"Host": "localhost:8080"}).status == 200
