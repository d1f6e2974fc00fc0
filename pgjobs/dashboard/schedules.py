"""What each schedule of a job is doing, as the dashboard shows it.

The rows are the ``schedule_states`` query's: a job's own schedule (named ``default``, from its
code or profile) and its further ones (listed in the profile or added at runtime), each with its
``state`` (``ticking``, ``paused``, ``job paused``, ``disabled``, or ``error``: a worker could not
use its cron or timezone).

- :func:`schedules_section`: the job page's table of its schedules, as ``pgjobs jobs show``;
- :func:`schedule_errors_notice`: the lines the jobs page opens with while a schedule is in error;
- :func:`with_schedule_counts`: the jobs page's rows with how many schedules each job has besides
  its own, and how many are in error.
"""

from __future__ import annotations

from typing import Any

from pgjobs.dashboard.markup import NOTHING, Markup, html, join, time_cell, url
from pgjobs.dashboard.pages import PageContext, describe_schedule
from pgjobs.metrics import NO_EXTRA_SCHEDULES, count_extra_schedules

Row = dict[str, Any]

STATE_TITLES = {
    "ticking": "workers fire it at each of its times",
    "paused": "its own pause holds it: no ticks until it is resumed",
    "job paused": "its job is paused: no ticks until the job is resumed",
    "disabled": "disabled: it does not tick",
    "error": "a worker could not use its cron or timezone: no ticks until they change",
}
"""What each state means, as the tags' tooltips say it."""


def with_schedule_counts(jobs: list[Row], schedules: list[Row]) -> list[Row]:
    """``jobs`` with ``more_schedules`` and ``schedules_in_error`` from ``schedules``."""
    counts = count_extra_schedules(schedules)
    return [{**job, **counts.get(job["name"], NO_EXTRA_SCHEDULES)} for job in jobs]


def state_tag(row: Row) -> Markup:
    """The schedule's state as a tag; an error with the worker's reason after it."""
    state = row["state"]
    css = {"ticking": "", "error": "error", "disabled": ""}.get(state, "paused")
    tag = html('<span class="tag {0}" title="{1}">{2}</span>', css, STATE_TITLES[state], state)
    if state == "error":
        return html('{0} <span class="schedule-error">{1}</span>', tag, row["error"])
    return tag


def schedules_section(ctx: PageContext, schedules: list[Row]) -> Markup:
    """A job's schedules, its own first: name, cron in words, time zone, origin, state, next fire
    (while it ticks) and last tick."""
    if not schedules:
        return Markup("")
    rows = [
        html(
            '<tr data-schedule="{0}"><td>{0}</td><td>{1} <code>{2}</code></td><td>{3}</td>'
            "<td>{4}</td><td>{5}</td><td>{6}</td><td>{7}</td></tr>",
            s["name"],
            describe_schedule(s["cron"], s["timezone"]),
            s["cron"],
            s["timezone"],
            s["origin"],
            state_tag(s),
            _next_fire(ctx, s),
            time_cell(s["last_tick_at"], ctx.now),
        )
        for s in schedules
    ]
    return html(
        '<section><h2>Schedules</h2><table class="grid schedules"><thead><tr><th>Name</th>'
        "<th>Cron</th><th>Time zone</th><th>Origin</th><th>State</th><th>Next fire</th>"
        "<th>Last tick</th></tr></thead><tbody>{0}</tbody></table></section>",
        join(rows),
    )


def _next_fire(ctx: PageContext, row: Row) -> Markup:
    if row["state"] != "ticking":
        return NOTHING
    if row["next_fire_at"] is None:  # new or changed: no worker has worked out its next tick
        return html('<span class="muted">not yet worked out</span>')
    return time_cell(row["next_fire_at"], ctx.now)


def schedule_errors_notice(schedules: list[Row]) -> Markup:
    """A notice naming each schedule in error, its job and why workers refused it; empty when
    none is."""
    errors = [s for s in schedules if s["state"] == "error"]
    if not errors:
        return Markup("")
    items = join(
        html(
            '<li data-schedule-error="{0}/{1}"><strong>schedule {1}</strong> of '
            '<a href="{2}">{0}</a> does not tick: {3} <code>{4}</code> {5}: '
            '<span class="schedule-error">{6}</span></li>',
            s["job"],
            s["name"],
            url("/job", name=s["job"]),
            "workers refused its cron",
            s["cron"],
            s["timezone"],
            s["error"],
        )
        for s in errors
    )
    return html('<ul class="notice held schedule-errors">{0}</ul>', items)
