"""The dashboard application: routes, pages, actions and the token, independent of sockets.

Rules the dashboard enforces:

- It binds to loopback by default; a non-loopback host needs a token (:func:`check_bind`), and
  then every page needs it too (a ``pgjobs_token`` cookie, set by visiting ``/?token=T`` or the
  unlock form, or an ``Authorization: Bearer T`` header).
- Actions (run now, pause and resume of a job or a queue, retry, cancel) exist only with
  ``allow_actions``. Each is a POST
  that must carry the token itself (form field ``token`` or the bearer header); the cookie alone
  is not enough, so another site cannot make a browser act. Anything else is 403.
- Every POST (login and logout included) that a browser says comes from another origin
  (``Origin``, ``Sec-Fetch-Site``) is refused, and a form's ``next`` must be a path on this
  server (:mod:`pgjobs.dashboard.guards`).
- On loopback, a request whose ``Host`` is not a loopback name is refused (DNS rebinding).
- Pages that refuse or fail (401, 403, 404, 503) say nothing of the database (host, name,
  reason); the reason of a database failure goes to the log.

The HTTP server around it (:mod:`pgjobs.dashboard.server`) adds the security headers and the
limits on connections, request bodies and time.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from http.cookies import SimpleCookie
from importlib import resources
from typing import Any

import psycopg

from pgjobs.dashboard import controls, pages, schedules
from pgjobs.dashboard.actions import ACTIONS, FLASH_PARAMS, flash_text, perform
from pgjobs.dashboard.data import DashboardStore, DatabaseUnavailable
from pgjobs.dashboard.guards import check_bind, cross_site, is_loopback, safe_next
from pgjobs.dashboard.markup import Markup, html, join, render_template, url, when
from pgjobs.dashboard.pages import Page, PageContext
from pgjobs.dashboard.timeline import DEFAULT_HOURS, HOURS, timeline_page
from pgjobs.db import describe_target, first_line

log = logging.getLogger("pgjobs.dashboard")

COOKIE = "pgjobs_token"
_STATIC = {"dashboard.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript"}
_NAV = (
    ("/", "Jobs"),
    ("/timeline", "Timeline"),
    ("/runs", "Runs"),
    ("/workers", "Workers"),
    ("/queues", "Queues"),
)
RUNS_PAGE = 100
"""Runs per page of ``/runs``."""

MAX_RUNS_PAGE = 10_000
"""The last page ``/runs`` serves: a page reads the runs before it through the index, newest
first, so deep pages cost more (the CLI's ``pgjobs runs list`` filters instead)."""

_DB_ERRORS = (psycopg.Error, DatabaseUnavailable)


@dataclass
class DashboardSettings:
    """How the dashboard serves. ``token`` None with ``allow_actions`` generates one."""

    dsn: str = ""
    schema: str = "pgjobs"
    host: str = "127.0.0.1"
    port: int = 8080
    allow_actions: bool = False
    token: str | None = None
    refresh: float = 5.0
    request_timeout: float = 10.0
    """Seconds a connection may stay silent before the server closes it."""
    max_connections: int = 32
    """Connections served at once; one more is answered 503."""


@dataclass
class Response:
    """What the dashboard answers to one request."""

    status: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Request:
    """One request, as the dashboard sees it."""

    method: str
    path: str
    query: dict[str, str]
    headers: Any  # email.message.Message: case-insensitive .get()
    form: dict[str, str] = field(default_factory=dict)


class Dashboard:
    """Routes requests to pages and actions; knows nothing of sockets."""

    def __init__(self, settings: DashboardSettings, store: DashboardStore) -> None:
        check_bind(settings.host, settings.token)
        self.settings = settings
        self.store = store
        self.token = settings.token or (
            secrets.token_urlsafe(18) if settings.allow_actions else None
        )
        self.protect_reads = not is_loopback(settings.host)
        self.target = describe_target(settings.dsn)
        # Signs the messages of actions (see pgjobs.dashboard.actions); new on every start.
        self.flash_key = secrets.token_bytes(32)

    # -- the token -------------------------------------------------------------------------

    def _matches(self, presented: str | None) -> bool:
        return bool(self.token and presented) and hmac.compare_digest(
            (presented or "").encode(), (self.token or "").encode()
        )

    def _bearer(self, request: Request) -> str | None:
        value = request.headers.get("Authorization") or ""
        return value[7:].strip() if value.lower().startswith("bearer ") else None

    def _cookie_ok(self, request: Request) -> bool:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(request.headers.get("Cookie") or "")
        except Exception:
            return False
        morsel = jar.get(COOKIE)
        return morsel is not None and self._matches(morsel.value)

    def _holds_token(self, request: Request) -> bool:
        return self._cookie_ok(request) or self._matches(self._bearer(request))

    def _host_ok(self, request: Request) -> bool:
        if self.protect_reads:
            return True
        host = (request.headers.get("Host") or "").strip()
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
        return is_loopback(name) or name.strip("[]") == self.settings.host

    def _set_cookie(self) -> tuple[str, str]:
        return ("Set-Cookie", f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict")

    # -- dispatch --------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Answer one request; never raises for a database failure (503 instead)."""
        if not self._host_ok(request):
            return self._message(403, "Refused", "unexpected Host header for a loopback dashboard")
        if request.method == "POST" and (why := cross_site(request.headers)):
            log.warning("refused a cross-site POST to %s (%s)", request.path, why)
            return self._message(403, "Refused", "cross-site request refused")
        if request.method == "GET" and request.path.startswith("/static/"):
            return self._static(request.path.removeprefix("/static/"))
        try:
            if request.method == "POST":
                return self._post(request)
            if request.method == "GET":
                return self._get(request)
        except _DB_ERRORS as exc:
            log.warning("database unavailable: %s", first_line(exc))
            page = pages.message_page(
                "Database unavailable",
                "the database is not answering; this page works again once it is back",
            )
            return self._render(503, page, request, read_summary=False)
        return self._message(405, "Method not allowed", "use GET for pages and POST for actions")

    def _get(self, request: Request) -> Response:
        if "token" in request.query:
            if not self._matches(request.query["token"]):
                return self._message(403, "Forbidden", "wrong token")
            clean = url(request.path, **{k: v for k, v in request.query.items() if k != "token"})
            return Response(303, headers=[("Location", safe_next(clean)), self._set_cookie()])
        unlocked = self._holds_token(request)
        if self.protect_reads and not unlocked:
            return self._message(
                401,
                "Token needed",
                "this dashboard needs its token: use the unlock form above or open /?token=…",
                request,
            )
        summary = self.store.summary()
        ctx = PageContext(
            now=summary["db_now"],
            path=self._here(request),
            allow_actions=self.settings.allow_actions,
            token=self.token if unlocked else None,
        )
        page = self._page(request, ctx)
        if page is None:
            return self._message(404, "Not found", f"nothing at {request.path}", request)
        return self._render(200, page, request, summary)

    def _page(self, request: Request, ctx: PageContext) -> Page | None:
        path, query = request.path.rstrip("/") or "/", request.query
        if path in ("/", "/jobs"):
            every = self.store.schedules()
            notice = join(
                [
                    controls.paused_queues_notice(ctx, self.store.paused_queues()),
                    schedules.schedule_errors_notice(every),
                ]
            )
            jobs = schedules.with_schedule_counts(self.store.jobs(), every)
            return pages.jobs_page(ctx, jobs, notice)
        if path == "/job":
            found = self.store.job(query.get("name", ""))
            return None if found is None else controls.job_page(ctx, found)
        if path == "/timeline":
            hours = int(query["hours"]) if query.get("hours", "").isdigit() else DEFAULT_HOURS
            hours = hours if hours in HOURS else DEFAULT_HOURS
            job = query.get("job") or None
            limit = 5000
            runs = self.store.timeline(ctx.now - timedelta(hours=hours), job, limit)
            names = [j["name"] for j in self.store.jobs()] if job is None else []
            return timeline_page(
                ctx, names, runs, hours=hours, job=job, truncated=len(runs) >= limit
            )
        if path == "/runs":
            status = query.get("status") if query.get("status") in pages.STATUSES else None
            job = query.get("job") or None
            page = int(query["page"]) if query.get("page", "").isdigit() else 1
            page = max(1, min(page, MAX_RUNS_PAGE))
            offset = (page - 1) * RUNS_PAGE
            # One row past the page says whether there is a next one.
            rows = self.store.runs(job, status, limit=RUNS_PAGE + 1, offset=offset)
            more = len(rows) > RUNS_PAGE and page < MAX_RUNS_PAGE
            return pages.runs_page(ctx, rows[:RUNS_PAGE], job, status, page=page, has_next=more)
        if path.startswith("/runs/") and path.removeprefix("/runs/").isdigit():
            run = self.store.run(int(path.removeprefix("/runs/")))
            return None if run is None else pages.run_page(ctx, run)
        if path == "/workers":
            return pages.workers_page(ctx, self.store.workers())
        if path == "/queues":
            return controls.queues_page(ctx, self.store.queues())
        return None

    def _post(self, request: Request) -> Response:
        next_page = safe_next(request.form.get("next"))
        if request.path == "/login":
            if not self._matches(request.form.get("token")):
                return self._message(403, "Forbidden", "wrong token", request)
            return Response(303, headers=[("Location", next_page), self._set_cookie()])
        if request.path == "/logout":
            expired = f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
            return Response(303, headers=[("Location", next_page), ("Set-Cookie", expired)])
        name = request.path.removeprefix("/actions/")
        if not request.path.startswith("/actions/") or name not in ACTIONS:
            return self._message(404, "Not found", f"no action at {request.path}", request)
        if not self.settings.allow_actions:
            return self._message(
                403,
                "Forbidden",
                "actions are disabled: start the dashboard with --allow-actions",
                request,
            )
        if not self._matches(request.form.get("token") or self._bearer(request)):
            return self._message(
                403,
                "Forbidden",
                "this action needs the dashboard's token (missing or wrong token)",
                request,
            )
        done = perform(self.store, name, request.form, self.flash_key)
        if done is None:
            return self._message(
                409,
                "Not done",
                f"{name}: nothing to do (no such job or run, or not in a state that allows it)",
                request,
            )
        separator = "&" if "?" in next_page else "?"
        return Response(303, headers=[("Location", f"{next_page}{separator}{done}")])

    # -- rendering -------------------------------------------------------------------------

    def _static(self, name: str) -> Response:
        if name not in _STATIC:
            return self._message(404, "Not found", "no such file")
        body = (resources.files("pgjobs.dashboard") / "static" / name).read_bytes()
        return Response(200, body, _STATIC[name])

    def _message(
        self, status: int, title: str, text: str, request: Request | None = None
    ) -> Response:
        if request is None:
            return Response(status, html("<p>{0}</p>", text).encode(), headers=[])
        return self._render(status, pages.message_page(title, text), request)

    def _render(
        self,
        status: int,
        page: Page,
        request: Request,
        summary: dict[str, Any] | None = None,
        *,
        read_summary: bool = True,
    ) -> Response:
        title, body = page
        unlocked = self._holds_token(request)
        allowed = unlocked or not self.protect_reads
        if summary is None and allowed and read_summary:
            try:
                summary = self.store.summary()
            except _DB_ERRORS:
                summary = None
        flash = flash_text(request.query, self.flash_key) if request.method == "GET" else None
        document = render_template(
            "layout.html",
            title=title,
            body=body,
            nav=join(
                html(
                    '<a class="{0}" href="{1}">{2}</a>',
                    "on" if request.path.rstrip("/") == href.rstrip("/") else "",
                    href,
                    label,
                )
                for href, label in _NAV
            ),
            summary=_summary(summary),
            lock=self._lock(unlocked, request),
            flash=html('<p class="flash">{0}</p>', flash) if flash else "",
            updated=when(summary["db_now"]) if summary else "-",
            # Where the data comes from, only on pages that show data to a reader who may see it.
            target=self.target if status < 400 and allowed else "the database",
            refresh=f"{self.settings.refresh:g}",
            refresh_note=html(
                'refreshes every {0}s <button type="button" id="toggle-refresh">pause</button>',
                f"{self.settings.refresh:g}",
            )
            if self.settings.refresh
            else "auto-refresh off",
        )
        return Response(status, document.encode())

    def _here(self, request: Request) -> str:
        """The request's page, without the token or the last action's message."""
        dropped = ("token", *FLASH_PARAMS)
        return url(request.path, **{k: v for k, v in request.query.items() if k not in dropped})

    def _lock(self, unlocked: bool, request: Request) -> Markup:
        if not self.settings.allow_actions and not self.protect_reads:
            return html('<span class="muted">read-only</span>')
        here = self._here(request)
        if unlocked:
            return html(
                '<form method="post" action="/logout"><span class="tag">{0}</span>'
                '<input type="hidden" name="next" value="{1}"><button type="submit">lock</button>'
                "</form>",
                "actions unlocked" if self.settings.allow_actions else "unlocked",
                here,
            )
        return html(
            '<form method="post" action="/login"><input type="password" name="token" '
            'placeholder="token" autocomplete="off" aria-label="token">'
            '<input type="hidden" name="next" value="{0}">'
            '<button type="submit">{1}</button></form>',
            here,
            "Unlock actions" if self.settings.allow_actions else "Unlock",
        )


def _summary(row: dict[str, Any] | None) -> Markup:
    if row is None:
        return Markup("")
    paused = row["queues_paused"]
    return html(
        '<span class="{0}">{1} worker(s) alive</span><span>{2} queued</span>'
        '<span>{3} running</span><span class="{4}">{5} failed (24 h)</span>{6}{7}',
        "" if row["workers_alive"] else "warn",
        row["workers_alive"],
        row["queued_due"],
        row["running"],
        "bad" if row["failed_24h"] else "",
        row["failed_24h"],
        html('<a class="warn" href="/queues">{0} queue(s) paused</a>', paused) if paused else "",
        html('<a class="bad" href="/">{0} schedule(s) in error</a>', row["schedules_in_error"])
        if row["schedules_in_error"]
        else "",
    )
