"""The dashboard's pages, rendered on the server from the rows of :mod:`pgjobs.dashboard.data`.

Each page function returns its title and its body as :class:`~pgjobs.dashboard.markup.Markup`;
the server wraps them in the layout. Every value that comes from the database goes through the
escaping helpers of :mod:`pgjobs.dashboard.markup`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pgjobs.dashboard.markup import (
    NOTHING,
    Markup,
    ago,
    html,
    join,
    pretty_json,
    span,
    status_badge,
    time_cell,
    url,
    when,
)
from pgjobs.errors import PgJobsError
from pgjobs.job import RUN_STATUSES
from pgjobs.limits import declared_limit, key_display
from pgjobs.metrics import OVERDUE_AFTER
from pgjobs.schedule import CronSchedule

Row = dict[str, Any]
Page = tuple[str, Markup]

FAILED = ("failed", "timed_out", "abandoned")
RETRYABLE = ("failed", "timed_out", "cancelled", "abandoned", "skipped")
#: The runs page's status filter, in a run's order of life: a blocked run is queued next.
STATUSES = ("blocked", *(s for s in RUN_STATUSES if s != "blocked"))


@dataclass(frozen=True)
class PageContext:
    """What a page needs beyond its rows: the database clock, where it is, what it may offer.

    ``token`` is the action token to put in forms when this request proved it holds it (else
    None: forms are sent without it and refused).
    """

    now: datetime
    path: str
    allow_actions: bool = False
    token: str | None = None


def action_form(
    ctx: PageContext, action: str, label: str, danger: bool = False, **fields: object
) -> Markup:
    """A POST form with one button for ``/actions/<action>``.

    Nothing without ``--allow-actions``. The form carries the token only if the request did.
    """
    if not ctx.allow_actions:
        return Markup("")
    hidden = join(
        html('<input type="hidden" name="{0}" value="{1}">', name, value)
        for name, value in {**fields, "token": ctx.token or "", "next": ctx.path}.items()
    )
    return html(
        '<form method="post" action="/actions/{0}" class="action">{1}'
        '<button type="submit" class="{2}" data-action="{0}">{3}</button></form>',
        action,
        hidden,
        "danger" if danger else "",
        label,
    )


def describe_schedule(expression: str | None, timezone: str) -> str:
    """The schedule in words ('every 15 minutes'); the expression itself if it has no phrase."""
    if not expression:
        return "on demand"
    try:
        return CronSchedule(expression, timezone).describe()
    except PgJobsError:
        return expression


def _muted(text: str) -> Markup:
    return html('<span class="muted">{0}</span>', text)


def _outcome_squares(outcomes: list[dict[str, Any]]) -> Markup:
    if not outcomes:
        return _muted("no runs yet")
    squares = (
        html(
            '<a class="sq st-{0}" href="/runs/{1}" title="#{1} {0} {2} {3}{4}"></a>',
            o["status"],
            o["id"],
            o.get("finished") or "",
            span(o.get("duration")),
            f" — {o['message']}" if o.get("message") else "",
        )
        for o in outcomes
    )
    return html('<span class="squares">{0}</span>', join(squares))


def _job_state(row: Row) -> Markup:
    tags = []
    if row["paused"]:
        tags.append(html('<span class="tag paused">paused</span>'))
    if row["queue_paused"]:
        tags.append(
            html(
                '<span class="tag paused" title="{0}">queue paused</span>',
                f"queue {row['queue']} is paused: its runs wait until it is resumed",
            )
        )
    if not row["enabled"]:
        tags.append(html('<span class="tag">disabled</span>'))
    if not row["registered"]:
        tags.append(
            html(
                '<span class="tag warn" title="{0}">no live worker</span>',
                "no running worker registers this job",
            )
        )
    if row["running_now"]:
        tags.append(html('<span class="tag st-running">{0} running</span>', row["running_now"]))
    if row["queued_now"]:
        tags.append(html('<span class="tag">{0} queued</span>', row["queued_now"]))
    return join(tags, " ") if tags else _muted("active")


def limit_tags(job: Row) -> Markup:
    """The limits a job declares as tags (``max 5 per tenant``, ``100/m``); empty without."""
    tags = []
    declared = declared_limit(job)
    if declared is not None:
        per = f" per {key_display(job['concurrency_key'])}" if job["concurrency_key"] else ""
        tags.append(
            html(
                '<span class="tag limit" title="{0}">max {1}{2}</span>',
                "runs at once, across all workers",
                declared,
                per,
            )
        )
    if job["rate_limit"]:
        tags.append(
            html('<span class="tag limit" title="{0}">{1}</span>', "rate limit", job["rate_limit"])
        )
    return join(tags, " ")


def _next_fire(job: Row, now: datetime) -> Markup:
    cell = time_cell(job["next_fire_at"], now)
    due = job["next_fire_at"]
    if due is not None and (now - due).total_seconds() > OVERDUE_AFTER:
        return html(
            '{0} <span class="tag warn" title="{1}">overdue</span>',
            cell,
            "no worker has ticked it: is a worker running this job?",
        )
    return cell


def _more_schedules(job: Row) -> Markup:
    """`` +2``: the job's schedules besides its own (the profile's further ones, those added at
    runtime), and a tag when any of
    its schedules is in error (``with_schedule_counts`` of :mod:`pgjobs.dashboard.schedules`)."""
    parts = []
    more = job.get("more_schedules", 0)
    if more:
        parts.append(
            html(' <span class="more" title="{0}">+{1}</span>', "schedules besides its own", more)
        )
    errors = job.get("schedules_in_error", 0)
    if errors:
        parts.append(
            html(
                ' <span class="tag error" title="{0}">{1} in error</span>',
                "a worker could not use its cron or timezone: see the job's page",
                errors,
            )
        )
    return join(parts)


def jobs_page(ctx: PageContext, jobs: list[Row], notice: Markup | None = None) -> Page:
    """Every job: schedule in words (``+N`` schedules besides its own, those in error), next
    fire, last outcomes at a glance, state (held by its own pause or its queue's), limits,
    actions; ``notice`` (paused queues, schedules in error) above them."""
    notice = notice or Markup("")
    if not jobs:
        body = html(
            '<p class="empty">No jobs yet. Start a worker with <code>{0}</code>: it registers '
            "its jobs here.</p>",
            "pgjobs worker --app module:extension",
        )
        return "Jobs", html("{0}{1}", notice, body)
    rows = []
    for job in jobs:
        last = job["last_status"]
        last_cell = (
            html(
                '{0} <a href="/runs/{1}">#{1}</a> {2}<div class="msg">{3}</div>',
                status_badge(last),
                job["last_run_id"],
                time_cell(job["last_finished_at"], ctx.now),
                (job["last_message"] or "")[:160],
            )
            if job["last_run_id"]
            else _muted("never ran")
        )
        stats = html(
            '<span class="ok">{0} ok</span> · <span class="bad">{1} failed</span> · {2} skipped'
            '<div class="muted">p50 {3} · p95 {4}</div>',
            job["succeeded_24h"] or 0,
            job["failed_24h"] or 0,
            job["skipped_24h"] or 0,
            span(job["p50_seconds_24h"]) or NOTHING,
            span(job["p95_seconds_24h"]) or NOTHING,
        )
        pause = (
            action_form(ctx, "resume", "Resume", job=job["name"])
            if job["paused"]
            else action_form(ctx, "pause", "Pause", job=job["name"])
        )
        rows.append(
            html(
                '<tr data-job="{0}"><td><a class="job" href="{1}">{0}</a>'
                '<div class="muted">{2}</div></td>'
                '<td>{3}<div class="muted"><code>{4}</code> {5}</div></td>'
                "<td>{6}</td><td>{7}</td><td>{8}</td><td>{9}</td><td>{10}{13}</td>"
                '<td class="actions">{11}{12}</td></tr>',
                job["name"],
                url("/job", name=job["name"]),
                job["description"] or job["extension"],
                html(
                    "{0}{1}",
                    describe_schedule(job["schedule"], job["timezone"]),
                    _more_schedules(job),
                ),
                job["schedule"] or "",
                job["timezone"] if job["schedule"] else "",
                _next_fire(job, ctx.now),
                _outcome_squares(job["outcomes"]),
                last_cell,
                stats,
                _job_state(job),
                action_form(ctx, "run-now", "Run now", job=job["name"]),
                pause,
                html(
                    '<div class="muted limits">queue {0} {1}</div>', job["queue"], limit_tags(job)
                ),
            )
        )
    body = html(
        '{0}<table class="grid jobs"><thead><tr><th>Job</th><th>Schedule</th><th>Next fire</th>'
        "<th>Last outcomes</th><th>Last run</th><th>24 h</th><th>State</th><th></th></tr>"
        "</thead><tbody>{1}</tbody></table>",
        notice,
        join(rows),
    )
    return "Jobs", body


def _pager(job: str | None, status: str | None, page: int, has_next: bool) -> Markup:
    links = []
    if page > 1:
        newer = url("/runs", job=job, status=status, page=page - 1 if page > 2 else None)
        links.append(html('<a rel="prev" href="{0}">&larr; newer</a>', newer))
    links.append(html('<span class="muted">page {0}</span>', page))
    if has_next:
        older = url("/runs", job=job, status=status, page=page + 1)
        links.append(html('<a rel="next" href="{0}">older &rarr;</a>', older))
    return html('<nav class="pager">{0}</nav>', join(links, " "))


def runs_page(
    ctx: PageContext,
    runs: list[Row],
    job: str | None,
    status: str | None,
    *,
    page: int = 1,
    has_next: bool = False,
) -> Page:
    """One page of runs, newest first, with links to filter by job and status and to the
    newer (``rel=prev``) and older (``rel=next``) pages."""
    filters = join(
        html(
            '<a class="{0}" href="{1}">{2}</a>',
            "on" if s == status else "",
            url("/runs", job=job, status=s),
            s or "all",
        )
        for s in (None, *STATUSES)
    )
    rows = [
        html(
            '<tr><td><a href="/runs/{0}">#{0}</a></td><td><a href="{8}">{1}</a></td>'
            "<td>{2}</td><td>{3}</td><td>{4}</td><td>{5}</td><td>{6}</td>"
            '<td class="msg">{7}</td></tr>',
            r["id"],
            r["job"],
            status_badge(r["status"]),
            r["trigger"],
            r["attempt"],
            time_cell(r["started_at"] or r["finished_at"] or r["scheduled_for"], ctx.now),
            span(r["duration_seconds"]),
            r["message"] or r["error_type"] or "",
            url("/runs", job=r["job"]),
        )
        for r in runs
    ]
    body = html(
        '<nav class="filters">{0}{1}</nav><table class="grid"><thead><tr><th>Run</th><th>Job</th>'
        "<th>Status</th><th>Trigger</th><th>Attempt</th><th>When</th><th>Took</th>"
        "<th>Message</th></tr></thead><tbody>{2}</tbody></table>{3}",
        html("<strong>{0}</strong> · ", job) if job else "",
        filters,
        join(rows) if rows else html('<tr><td colspan="8" class="empty">No runs.</td></tr>'),
        _pager(job, status, page, has_next) if page > 1 or has_next else "",
    )
    return (f"Runs of {job}" if job else "Runs"), body


def _field(label: str, value: object, *, optional: bool = False) -> Markup:
    if value in (None, ""):
        return Markup("") if optional else html("<dt>{0}</dt><dd>{1}</dd>", label, NOTHING)
    return html("<dt>{0}</dt><dd>{1}</dd>", label, value)


def _section(title: str, content: str | None, css: str = "") -> Markup:
    if not content:
        return Markup("")
    return html('<section><h2>{0}</h2><pre class="{1}">{2}</pre></section>', title, css, content)


def _progress(run: Row, now: datetime) -> Markup | None:
    """The last progress the run's job reported, as a bar when it said of how many: ``30 of
    120 (25%) — copying · 2s ago``. None when it reported none since this attempt started."""
    at, started = run["progress_at"], run["started_at"]
    if at is None or (started is not None and at < started):
        return None
    done, total = run["progress_done"], run["progress_total"]
    text = str(done) if total is None else f"{done} of {total}"
    bar = Markup("")
    if total:
        text += f" ({done * 100 // total}%)"
        bar = html('<progress value="{0}" max="{1}">{2}</progress> ', min(done, total), total, text)
    if run["progress_message"]:
        text += f" — {run['progress_message']}"
    return html('{0}<span class="progress">{1}</span> · {2}', bar, text, ago(at, now))


EDGE_TITLES = {
    "after": "waits for the dependency to succeed",
    "after_any": "waits for the dependency to end, whatever its outcome",
}


def _neighbours(title: str, run_id: int, rows: list[Row], total: int) -> Markup:
    """A table of a run's dependencies or dependants, linked to their pages, with their states
    and their edges (``after``, ``after_any``); ``… and N more`` past the first rows."""
    if not rows:
        return Markup("")
    lines = []
    for r in rows:
        kind = "after_any" if r["any_outcome"] else "after"
        waits = (
            html(' <span class="muted">waits for {0}</span>', r["blocked_by"])
            if r["status"] == "blocked" and r["blocked_by"] is not None
            else Markup("")
        )
        lines.append(
            html(
                '<tr><td><a href="/runs/{0}">#{0}</a></td><td><a href="{1}">{2}</a></td>'
                '<td>{3}{4}</td><td><span title="{5}">{6}</span></td></tr>',
                r["id"],
                url("/runs", job=r["job"]),
                r["job"],
                status_badge(r["status"]),
                waits,
                EDGE_TITLES[kind],
                kind,
            )
        )
    more = (
        html(
            '<p class="muted">… and {0} more: <code>pgjobs runs graph {1}</code></p>',
            total - len(rows),
            run_id,
        )
        if total > len(rows)
        else Markup("")
    )
    return html(
        '<section class="{0}"><h2>{1}</h2><table class="grid"><thead><tr><th>Run</th>'
        "<th>Job</th><th>Status</th><th>Edge</th></tr></thead><tbody>{2}</tbody></table>{3}"
        "</section>",
        title.lower().replace(" ", "-"),
        title,
        join(lines),
        more,
    )


def _waits_for(run: Row) -> str | None:
    """``2 of 3 dependencies`` for a blocked run; None for any other."""
    if run["status"] != "blocked" or run.get("blocked_by") is None:
        return None
    total = run.get("dependencies_total", 0)
    return f"{run['blocked_by']} of {total} {'dependency' if total == 1 else 'dependencies'}"


def run_page(ctx: PageContext, run: Row) -> Page:
    """One run: what it was, where and when it ran, what it waits for and what waits for it,
    what it returned or raised, what it logged."""
    retries = join(
        (
            html('<a href="/runs/{0}">#{0}</a> {1}', r["id"], status_badge(r["status"]))
            for r in run["retries"]
        ),
        " ",
    )
    worker = (
        html("{0} ({1}, pid {2})", run["worker_id"], run["host"] or "?", run["pid"] or "?")
        if run["worker_id"]
        else None
    )
    stats = (
        f"{run['items_processed'] or 0} processed, {run['items_failed'] or 0} failed"
        if run["items_processed"] is not None or run["items_failed"] is not None
        else None
    )
    fields = join(
        [
            _field(
                "Job", html('<a href="{1}">{0}</a>', run["job"], url("/timeline", job=run["job"]))
            ),
            _field("Status", status_badge(run["status"])),
            _field("Trigger", run["trigger"]),
            _field("Attempt", f"{run['attempt']} of {run['max_attempts']}"),
            _field(
                "Retry of",
                html('<a href="/runs/{0}">#{0}</a>', run["retry_of"]) if run["retry_of"] else None,
                optional=True,
            ),
            _field("Retried as", retries or None, optional=True),
            _field("Waits for", _waits_for(run), optional=True),
            _field("Scheduled for", when(run["scheduled_for"])),
            _field("Started", when(run["started_at"])),
            _field("Finished", when(run["finished_at"])),
            _field("Duration", span(run["duration_seconds"])),
            _field("Lag", span(run["lag_seconds"])),
            _field("Worker", worker),
            _field("Progress", _progress(run, ctx.now), optional=True),
            _field("Queue", f"{run['queue']} (priority {run['priority']})"),
            _field("Items", stats, optional=True),
            _field("Cancel requested", when(run["cancel_requested_at"]), optional=True),
        ]
    )
    actions = join(
        [
            action_form(ctx, "retry", "Retry", run=run["id"])
            if run["status"] in RETRYABLE
            else Markup(""),
            action_form(ctx, "cancel", "Cancel", danger=True, run=run["id"])
            if run["status"] in ("blocked", "queued", "running")
            else Markup(""),
        ]
    )
    error = (
        html(
            '<section class="error"><h2>Error</h2><p><strong>{0}</strong>: {1}</p></section>',
            run["error_type"] or "error",
            run["error_message"] or "",
        )
        if run["error_type"] or run["error_message"]
        else Markup("")
    )
    neighbours = join(
        [
            _neighbours(
                "Depends on",
                run["id"],
                run.get("dependencies", []),
                run.get("dependencies_total", 0),
            ),
            _neighbours(
                "Dependants", run["id"], run.get("dependants", []), run.get("dependants_total", 0)
            ),
        ]
    )
    body = html(
        '<div class="run-head">{0}<span class="actions">{1}</span></div>'
        '<p class="message">{2}</p><dl class="fields">{3}</dl>{10}{4}{5}{6}{7}{8}{9}',
        status_badge(run["status"]),
        actions,
        run["message"] or "",
        fields,
        error,
        _section("Traceback", run["error_traceback"], "traceback"),
        _section("Logs", run["logs"], "logs"),
        _section("Data", pretty_json(run["data"]) if run["data"] is not None else None),
        _section("Payload", pretty_json(run["payload"]) if run["payload"] is not None else None),
        _section("Parameters", pretty_json(run["parameters"]) if run["parameters"] else None),
        neighbours,
    )
    return f"Run #{run['id']} · {run['job']}", body


def workers_page(ctx: PageContext, workers: list[Row]) -> Page:
    """Worker processes: alive or not, where, since when, running what."""
    rows = []
    for w in workers:
        running = join(
            (html('<a href="/runs/{0}">#{0} {1}</a>', r["id"], r["job"]) for r in w["running"]),
            ", ",
        )
        state = "alive" if w["alive"] else ("dead" if w["state"] == "running" else w["state"])
        rows.append(
            html(
                '<tr class="{0}"><td>{1}</td><td><span class="tag w-{0}">{0}</span></td>'
                "<td>{2}</td><td>{3}</td><td>{4}</td><td>{5}</td><td>{6}</td><td>{7}</td>"
                "<td>{8}</td><td>{9}</td></tr>",
                state,
                w["id"],
                w["host"],
                w["pid"],
                w["version"],
                ", ".join(w["queues"]),
                w["concurrency"],
                time_cell(w["started_at"], ctx.now),
                time_cell(w["heartbeat_at"], ctx.now),
                running or _muted("idle"),
            )
        )
    body = html(
        '<table class="grid"><thead><tr><th>Worker</th><th>State</th><th>Host</th><th>PID</th>'
        "<th>Version</th><th>Queues</th><th>Slots</th><th>Started</th><th>Heartbeat</th>"
        "<th>Running</th></tr></thead><tbody>{0}</tbody></table>",
        join(rows) if rows else html('<tr><td colspan="10" class="empty">No workers.</td></tr>'),
    )
    return "Workers", body


def message_page(title: str, text: str) -> Page:
    """A page that only says something (errors, refusals)."""
    return title, html('<p class="notice">{0}</p>', text)
