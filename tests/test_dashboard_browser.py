"""The dashboard in a real browser: headless Chromium driven over the DevTools protocol, against a
real database whose runs a real worker executed.

Chromium speaks the protocol on a pipe (``--remote-debugging-pipe``: commands on fd 3, replies
on fd 4, each message JSON ending in a NUL byte), so no driver or extra package is needed. Each
test saves a screenshot of its page to ``tests/artifacts/``; the jobs page also goes to
``docs/dashboard.png`` for the README when that is missing or ``PGJOBS_UPDATE_DOCS=1`` is set (so a
test run leaves the working tree clean).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgjobs.dashboard import Server
from tests.conftest import database_dsn
from tests.test_dashboard import TOKEN, serving
from tests.test_runlog import XSS, run_jobs, running_worker
from tests.workers import wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
DOCS = Path(__file__).resolve().parent.parent / "docs"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
)


class Chromium:
    """A headless Chromium with one tab, driven over the DevTools protocol on a pipe."""

    def __init__(self, executable: str, width: int = 1400, height: int = 900) -> None:
        self.profile = tempfile.mkdtemp(prefix="pgjobs-chromium-")
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()
        # Chromium wants the pipe on fds 3 and 4; move ours out of the way first (bash, unlike
        # dash, redirects from descriptors above 9).
        child_in = fcntl.fcntl(commands_read, fcntl.F_DUPFD, 100)
        child_out = fcntl.fcntl(replies_write, fcntl.F_DUPFD, 100)
        os.close(commands_read)
        os.close(replies_write)
        flags = [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
            "--disable-dev-shm-usage", "--remote-debugging-pipe", f"--user-data-dir={self.profile}",
            f"--window-size={width},{height}", "about:blank",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{child_in} 4>&{child_out}', executable, *flags],
            pass_fds=(child_in, child_out),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(child_in)
        os.close(child_out)
        self._next_id = 0
        self._lock = threading.Condition()
        self._results: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        self.page("Page.enable")
        self.page("Runtime.enable")
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.page("Emulation.setDeviceMetricsOverride", metrics)

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._replies, 1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            with self._lock:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._results[message["id"]] = message
                    else:
                        self.events.append(message)
                self._lock.notify_all()

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        """One protocol command; its result (an error fails the test)."""
        with self._lock:
            self._next_id += 1
            ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        with self._lock:
            if not self._lock.wait_for(lambda: ident in self._results, timeout=20):
                raise AssertionError(f"chromium did not answer {method}")
            reply = self._results.pop(ident)
        assert "error" not in reply, (method, reply["error"])
        return dict(reply.get("result", {}))

    def page(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A command to the tab."""
        return self.send(method, params, self.session)

    def _loaded(self) -> int:
        return sum(1 for e in self.events if e.get("method") == "Page.loadEventFired")

    def _until_loaded(self, before: int) -> None:
        with self._lock:
            if not self._lock.wait_for(lambda: self._loaded() > before, timeout=20):
                raise AssertionError("the page did not load")

    def goto(self, url: str) -> None:
        """Open ``url`` and wait until it has loaded."""
        with self._lock:
            before = self._loaded()
        self.page("Page.navigate", {"url": url})
        self._until_loaded(before)

    def goto_and_follow(self, url: str) -> None:
        """Open ``url``, a page that navigates on by itself at once, and wait for the page it
        leads to to be complete."""
        self.js("window.__left_behind = true")  # a new document does not have it
        self.page("Page.navigate", {"url": url})
        arrived = (
            f"window.__left_behind === undefined && location.href !== {json.dumps(url)}"
            " && document.readyState === 'complete'"
        )

        def moved_on() -> bool:
            try:
                return bool(self.js(arrived))
            except AssertionError:  # evaluated while the page was being replaced
                return False

        wait_until(moved_on, 20, f"the page {url} to lead to another")

    def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        reply = self.page("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        assert "exceptionDetails" not in reply, reply
        return reply["result"].get("value")

    def click(self, selector: str) -> None:
        """Click the element and wait for the page it leads to (a form post, a link)."""
        with self._lock:
            before = self._loaded()
        assert self.js(f"!!document.querySelector({json.dumps(selector)})"), selector
        self.js(f"document.querySelector({json.dumps(selector)}).click()")
        self._until_loaded(before)

    def text(self) -> str:
        """What the page shows, as text."""
        return str(self.js("document.body.innerText"))

    def screenshot(self, name: str) -> Path:
        """Save the whole page (not only what fits the window) as ``tests/artifacts/<name>.png``."""
        ARTIFACTS.mkdir(exist_ok=True)
        size = self.page("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = self.page("Page.captureScreenshot", {"captureBeyondViewport": True, "clip": clip})
        path = ARTIFACTS / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        """Quit Chromium and remove its profile."""
        with contextlib.suppress(AssertionError, OSError):
            self.send("Browser.close")
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        os.close(self._commands)
        os.close(self._replies)
        shutil.rmtree(self.profile, ignore_errors=True)


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    assert CHROMIUM is not None
    chromium = Chromium(CHROMIUM)
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture(scope="module")
def real_runs(pg_admin_dsn: str, migrated_template: str, _databases: set[str]) -> Iterator[str]:
    """One database for the module, whose runs a worker executed: successes, a failure and its
    retry with tracebacks, a chatty run, a run whose message is a script, and a skipped tick."""
    name = f"{migrated_template}_browser"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(migrated_template)
            )
        )
    _databases.add(name)
    dsn = database_dsn(pg_admin_dsn, name)
    run_jobs(
        dsn,
        [
            ("obs-cleanup", None, 1),
            ("obs-sync", None, 1),
            ("obs-report", None, 2),
            ("obs-chatty", None, 1),
            ("obs-echo", {"message": XSS}, 1),
            ("obs-cleanup", None, 1),
        ],
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pgjobs.runs (job, trigger, status, scheduled_for, finished_at, message)"
            " VALUES ('obs-cleanup', 'schedule', 'skipped', now() - interval '20 minutes',"
            " now() - interval '20 minutes', 'skipped: lock held by run 1 on worker obs-worker')"
        )
    # A live worker, as an operator would see it, once it has registered.
    with running_worker(dsn, "worker-1"):
        wait_until(
            lambda: scalar(
                dsn,
                "SELECT count(*) FROM pgjobs.workers WHERE id = 'worker-1' AND state = 'running'",
            ),
            20,
            "worker-1 to register",
        )
        yield dsn
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    _databases.discard(name)


@pytest.fixture(scope="module")
def dashboard(real_runs: str) -> Iterator[Server]:
    with serving(real_runs, allow_actions=True, token=TOKEN) as server:
        yield server


def scalar(dsn: str, query: str) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    return None if row is None else row[0]


# -- what a person sees -------------------------------------------------------------------------


def test_the_jobs_page_lists_the_jobs(browser: Chromium, dashboard: Server) -> None:
    browser.goto(dashboard.url)

    rows = browser.js("[...document.querySelectorAll('tr[data-job]')].map(r => r.dataset.job)")
    assert rows == ["obs-chatty", "obs-cleanup", "obs-echo", "obs-report", "obs-sync"]
    text = browser.text()
    assert "every 5 minutes" in text and "daily at 02:30 (Europe/Berlin)" in text
    assert (
        browser.js("document.querySelectorAll('tr[data-job=\"obs-report\"] .sq.st-failed').length")
        == 2
    )
    shot = browser.screenshot("jobs")
    if os.environ.get("PGJOBS_UPDATE_DOCS") or not (DOCS / "dashboard.png").exists():
        shutil.copyfile(shot, DOCS / "dashboard.png")


def test_the_timeline_shows_a_failed_run(browser: Chromium, dashboard: Server) -> None:
    browser.goto(f"{dashboard.url}timeline?hours=1")

    failed = browser.js(
        "[...document.querySelectorAll('g[data-job=\"obs-report\"] a[data-status=failed]')]"
        ".map(a => a.querySelector('rect').getBoundingClientRect().width)"
    )
    assert len(failed) == 2 and all(width >= 2 for width in failed)
    skipped = 'g[data-job="obs-cleanup"] a[data-status=skipped]'
    assert browser.js(f"document.querySelectorAll('{skipped}').length") == 1
    browser.screenshot("timeline")


def test_run_detail_shows_its_traceback(browser: Chromium, dashboard: Server) -> None:
    browser.goto(f"{dashboard.url}runs?job=obs-report&status=failed")
    browser.click("table.grid tbody a[href^='/runs/']")

    text = browser.text()
    assert "RuntimeError: upstream API returned 503" in text
    traceback = browser.js("document.querySelector('pre.traceback').innerText")
    assert traceback.startswith("Traceback (most recent call last):")
    assert 'raise RuntimeError("upstream API returned 503")' in traceback
    assert "WARNING upstream slow, attempt" in browser.js(
        "document.querySelector('pre.logs').innerText"
    )
    browser.screenshot("run-detail")


def test_an_action_without_the_token_is_refused_and_with_it_works(
    browser: Chromium, dashboard: Server, real_runs: str
) -> None:
    pause = "tr[data-job='obs-sync'] button[data-action=pause]"
    browser.goto(dashboard.url)
    browser.click(pause)

    assert "needs the dashboard's token" in browser.text()
    assert browser.js("document.title").startswith("Forbidden")
    assert scalar(real_runs, "SELECT paused FROM pgjobs.jobs WHERE name = 'obs-sync'") is False
    browser.screenshot("action-refused")

    browser.goto(f"{dashboard.url}?token={TOKEN}")
    assert "actions unlocked" in browser.text()
    browser.click(pause)

    assert scalar(real_runs, "SELECT paused FROM pgjobs.jobs WHERE name = 'obs-sync'") is True
    assert "Paused obs-sync" in browser.text()
    browser.screenshot("action-done")
    browser.click("tr[data-job='obs-sync'] button[data-action=resume]")
    assert scalar(real_runs, "SELECT paused FROM pgjobs.jobs WHERE name = 'obs-sync'") is False


def test_an_injected_script_does_not_execute(
    browser: Chromium, dashboard: Server, real_runs: str
) -> None:
    echo = scalar(real_runs, "SELECT id FROM pgjobs.runs WHERE job = 'obs-echo'")
    for path in ("", "runs", "timeline", f"runs/{echo}"):
        browser.goto(f"{dashboard.url}{path}")

        assert browser.js("window.__pwned === undefined"), path
        assert "pwned" not in browser.js("document.title"), path
        assert XSS in browser.text() or path == "timeline", path
        assert browser.js("document.scripts.length") == 1, path
    assert browser.js("document.querySelector('p.message').innerText") == XSS
    assert XSS in browser.js("document.querySelector('pre.logs').innerText")
    browser.screenshot("escaped-script")


def test_the_workers_and_queues_pages(browser: Chromium, dashboard: Server) -> None:
    browser.goto(f"{dashboard.url}workers")
    assert "worker-1" in browser.text() and "alive" in browser.text()
    browser.screenshot("workers")
    browser.goto(f"{dashboard.url}queues")
    assert "default" in browser.text()
    browser.screenshot("queues")


def test_a_page_refreshes_itself(browser: Chromium, real_runs: str) -> None:
    with serving(real_runs, refresh=0.2) as server:
        browser.goto(server.url)
        assert browser.js("document.querySelector('tr[data-job=\"obs-late\"]')") is None
        with psycopg.connect(real_runs, autocommit=True) as conn:
            conn.execute("INSERT INTO pgjobs.jobs (name, extension) VALUES ('obs-late', 'obs')")
        try:
            wait_until(
                lambda: browser.js("!!document.querySelector('tr[data-job=\"obs-late\"]')"),
                5,
                "the new job to appear without a reload",
            )
        finally:
            with psycopg.connect(real_runs, autocommit=True) as conn:
                conn.execute("DELETE FROM pgjobs.jobs WHERE name = 'obs-late'")


# -- another site's page ------------------------------------------------------------------------


class _Attacker(BaseHTTPRequestHandler):
    """A page of another origin whose form, submitted on load, posts to the dashboard."""

    server: _AttackerSite

    def do_GET(self) -> None:
        self.server.visited.append(self.path)
        if not self.path.startswith("/attack"):
            body = b"<p>landed on the attacker's site</p>"
        else:
            fields = {"next": self.server.next_field}
            inputs = "".join(
                f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
                for k, v in fields.items()
            )
            body = (
                f'<form method="post" action="{escape(self.server.target)}">{inputs}</form>'
                "<script>document.forms[0].submit()</script>"
            ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _AttackerSite(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, target: str) -> None:
        super().__init__(("127.0.0.1", 0), _Attacker)
        self.target = target
        self.next_field = "/"
        self.visited: list[str] = []

    @property
    def origin(self) -> str:
        # "localhost" is another site than the dashboard's 127.0.0.1 for the browser.
        return f"http://localhost:{self.server_address[1]}"


@pytest.fixture
def attacker(dashboard: Server) -> Iterator[_AttackerSite]:
    site = _AttackerSite(f"{dashboard.url}logout")
    thread = threading.Thread(target=site.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield site
    finally:
        site.shutdown()
        site.server_close()
        thread.join(5)


def test_another_sites_page_can_neither_set_a_cookie_nor_redirect_through_logout(
    browser: Chromium, dashboard: Server, attacker: _AttackerSite
) -> None:
    host, port = attacker.origin.removeprefix("http://").split(":")
    attacks = [
        # A header of the attacker's choosing: a token cookie for the pages under /runs.
        "/\r\nSet-Cookie: pgjobs_token=evil; Path=/runs",
        f"/\t/{host}:{port}/landed",  # "//localhost:…" once the browser drops the tab
    ]
    for next_field in attacks:
        attacker.next_field = next_field
        browser.goto_and_follow(f"{attacker.origin}/attack")

        cookies = browser.send("Storage.getCookies")["cookies"]
        assert [c for c in cookies if c["value"] == "evil"] == [], next_field
        assert "/landed" not in attacker.visited, next_field
        location = browser.js("location.href")
        assert location.startswith(dashboard.url), (next_field, location)
        assert "cross-site request refused" in browser.text(), next_field
    browser.screenshot("cross-site-logout-refused")
