"""What holds runs back, as the dashboard shows it: the pauses of jobs and queues, the limits of
jobs, and the queued runs counted by what they wait for (the ``run_waits`` view's reasons).

- :func:`job_page`: one job's definition, its limits, how many of its runs run of how many it
  allows, its schedules, and its waiting runs by reason, with its actions;
- :func:`queues_page`: every queue with its pause, rate limit, runs and workers, and the actions
  that pause and resume it;
- :func:`paused_queues_notice`: the lines the jobs page opens with while queues are paused.
"""

from __future__ import annotations

from typing import Any

from pgjobs.dashboard.markup import NOTHING, Markup, html, join, span, time_cell, url, when
from pgjobs.dashboard.pages import Page, PageContext, action_form, describe_schedule
from pgjobs.dashboard.schedules import schedules_section
from pgjobs.limits import declared_limit, key_display
from pgjobs.metrics import WAIT_REASONS

Row = dict[str, Any]

WAIT_LABELS = {
    "scheduled": "not due yet",
    "job paused": "the job's pause",
    "queue paused": "the queue's pause",
    "concurrency": "the concurrency limit",
    "rate limit": "a rate limit",
    "worker": "a worker",
}
"""How the pages name what queued runs wait for (run_waits' reasons)."""


def queue_pause_form(ctx: PageContext, queue: str, paused: bool) -> Markup:
    """The Pause or Resume button of a queue (nothing without ``--allow-actions``)."""
    if paused:
        return action_form(ctx, "resume-queue", "Resume queue", queue=queue)
    return action_form(ctx, "pause-queue", "Pause queue", danger=True, queue=queue)


def paused_queues_notice(ctx: PageContext, queues: list[Row]) -> Markup:
    """A notice naming each paused queue, since when and how many runs it holds; empty when no
    queue is paused."""
    if not queues:
        return Markup("")
    items = join(
        html(
            '<li data-queue="{0}"><strong>queue {0}</strong> paused {1}, holding {2} queued '
            "run(s) {3}</li>",
            q["name"],
            time_cell(q["paused_at"], ctx.now),
            q["queued"],
            queue_pause_form(ctx, q["name"], True),
        )
        for q in queues
    )
    return html('<ul class="notice held">{0}</ul>', items)


def _concurrency(job: Row) -> tuple[str, int | None]:
    """The job's concurrency limit in words, and the number (None: no limit)."""
    declared = declared_limit(job)
    if declared is not None:
        per = " per concurrency key" if job["concurrency_key"] else ""
        return f"at most {declared} at a time{per}", declared
    if job["overlap"] == "skip":
        return "1 at a time (overlap skip)", 1
    return "no limit (overlap allow)", None


def _running(job: Row, limit: int | None) -> Markup:
    if limit is None:
        return html("{0}", job["running_now"])
    if not job["concurrency_key"]:
        return html("{0} of {1} allowed", job["running_now"], limit)
    keys = join(
        html(
            "<li>{0}: {1} of {2}</li>",
            "(no key)" if k["key"] is None else k["key"],
            k["running"],
            limit,
        )
        for k in job["running_by_key"]
    )
    return html(
        '{0} in {1} key(s), at most {2} per key<ul class="keys">{3}</ul>',
        job["running_now"],
        job["running_keys"],
        limit,
        keys,
    )


def _rate(rate: str | None, tokens: float | None) -> str | None:
    if not rate:
        return None
    return rate if tokens is None else f"{rate} ({int(tokens)} may start now)"


def _waiting(job: Row) -> Markup:
    """The job's queued runs by what they wait for, in run_waits' order, with the detail."""
    totals: dict[str, list[Row]] = {}
    for row in job["waits"]:
        totals.setdefault(row["waiting_for"], []).append(row)
    rows = []
    for reason in WAIT_REASONS:
        groups = totals.get(reason)
        if not groups:
            continue
        details = {g["detail"] for g in groups} - {None}
        rows.append(
            html(
                '<tr data-reason="{0}"><td>{1}</td><td class="num">{2}</td><td>{3}</td></tr>',
                reason,
                WAIT_LABELS[reason],
                sum(g["runs"] for g in groups),
                ", ".join(sorted(details)) if details else NOTHING,
            )
        )
    if not rows:
        return html('<p class="empty">No queued runs.</p>')
    return html(
        '<table class="grid waits"><thead><tr><th>Waiting for</th><th>Runs</th><th>Detail</th>'
        '</tr></thead><tbody>{0}</tbody></table><p><a href="{1}">the queued runs</a></p>',
        join(rows),
        url("/runs", job=job["name"], status="queued"),
    )


def job_page(ctx: PageContext, job: Row) -> Page:
    """One job: its schedule, queue and limits, its runs running of those allowed, its schedules
    (its own and its further ones) with what each is doing, and its queued runs by what
    they wait for; run now, pause and resume (the job's and its queue's)."""
    name = job["name"]
    words, limit = _concurrency(job)
    ticks = job["schedule"] and job["enabled"] and not job["paused"]
    state = []
    if job["paused"]:
        state.append(html('<span class="tag paused">paused</span>'))
    if job["queue_paused"]:
        state.append(html('<span class="tag paused">queue {0} paused</span>', job["queue"]))
    if not job["enabled"]:
        state.append(html('<span class="tag">disabled</span>'))
    queue = html("{0} (priority {1})", job["queue"], job["priority"])
    if job["queue_paused"]:
        queue = html("{0}, paused since {1}", queue, when(job["queue_paused_at"]))
    fields = [
        ("Description", job["description"] or None),
        (
            "Schedule",
            html(
                "{0} <code>{1}</code> {2}",
                describe_schedule(job["schedule"], job["timezone"]),
                job["schedule"],
                job["timezone"],
            )
            if job["schedule"]
            else "on demand",
        ),
        ("Next fire", time_cell(job["next_fire_at"], ctx.now) if ticks else None),
        ("Queue", queue),
        ("Queue rate limit", _rate(job["queue_rate_limit"], job["queue_tokens"])),
        ("Concurrency", words),
        (
            "Concurrency key",
            key_display(job["concurrency_key"]) if job["concurrency_key"] else None,
        ),
        ("Rate limit", _rate(job["rate_limit"], job["job_tokens"])),
        ("Running", _running(job, limit)),
        ("Timeout", span(job["timeout_seconds"]) if job["timeout_seconds"] else "none"),
        ("Attempts", job["max_attempts"]),
    ]
    pause = (
        action_form(ctx, "resume", "Resume", job=name)
        if job["paused"]
        else action_form(ctx, "pause", "Pause", job=name)
    )
    actions = join(
        [
            action_form(ctx, "run-now", "Run now", job=name),
            pause,
            queue_pause_form(ctx, job["queue"], True) if job["queue_paused"] else Markup(""),
        ]
    )
    body = html(
        '<div class="run-head">{0}<span class="actions">{1}</span></div>'
        '<nav class="filters"><a href="{2}">timeline</a><a href="{3}">runs</a></nav>'
        '<dl class="fields">{4}</dl>{6}<section><h2>Queued runs</h2>{5}</section>',
        join(state, " ") if state else html('<span class="muted">active</span>'),
        actions,
        url("/timeline", job=name),
        url("/runs", job=name),
        join(html("<dt>{0}</dt><dd>{1}</dd>", k, v) for k, v in fields if v is not None),
        _waiting(job),
        schedules_section(ctx, job["schedules"]),
    )
    return f"Job {name}", body


def _reasons(counts: dict[str, int]) -> Markup:
    parts = [
        html('<span class="tag" data-reason="{0}">{1} {0}</span>', reason, n)
        for reason, n in counts.items()
        if n
    ]
    return join(parts, " ") if parts else NOTHING


def queues_page(ctx: PageContext, queues: list[Row]) -> Page:
    """Every queue: its pause and rate limit, due, delayed and running runs, how long the oldest
    waited, what its queued runs wait for, the live workers serving it; pause and resume."""
    rows = [
        html(
            '<tr data-queue="{0}"><td>{0}</td><td class="num">{1}</td><td class="num">{2}</td>'
            '<td class="num">{3}</td><td>{4}</td><td>{5}</td><td>{6}</td><td>{7}</td><td>{8}</td>'
            '<td class="actions">{9}</td></tr>',
            q["queue"],
            q["due"],
            q["delayed"],
            q["running"],
            span(q["oldest_age_seconds"]) if q["due"] else NOTHING,
            html('<span class="tag paused">paused</span> {0}', time_cell(q["paused_at"], ctx.now))
            if q["paused"]
            else html('<span class="muted">active</span>'),
            q["rate_limit"] or NOTHING,
            _reasons(q["waiting"]),
            ", ".join(q["workers"]) or html('<span class="tag warn">none</span>'),
            queue_pause_form(ctx, q["queue"], bool(q["paused"])),
        )
        for q in queues
    ]
    body = html(
        '<table class="grid"><thead><tr><th>Queue</th><th>Due</th><th>Delayed</th><th>Running</th>'
        "<th>Oldest due run waited</th><th>State</th><th>Rate limit</th><th>Waiting for</th>"
        "<th>Workers</th><th></th></tr></thead><tbody>{0}</tbody></table>",
        join(rows) if rows else html('<tr><td colspan="10" class="empty">No queues.</td></tr>'),
    )
    return "Queues", body
