"""The timeline page: one row per job, one bar per run over the last hours, as inline SVG.

A bar starts when the run started and is as long as it ran (at least a few pixels, so a 20 ms run
is still visible); its colour is its status. A run that never started (a skipped tick, a queued run
that was cancelled) is a thin full-height tick at the time it ended. Every bar links to its run and
carries a tooltip. Colours come from the stylesheet's ``st-<status>`` classes.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from pgjobs.dashboard.markup import Markup, html, join, span, url, when
from pgjobs.dashboard.pages import Page, PageContext

Row = dict[str, Any]

HOURS = (1, 3, 6, 24)
"""The windows the page offers, in hours."""

DEFAULT_HOURS = 3

_WIDTH = 1000
_LABEL = 200
_PLOT = _WIDTH - _LABEL - 12
_ROW = 26
_AXIS = 24
_MIN_BAR = 3.0
_GRID_MINUTES = {1: 10, 3: 30, 6: 60, 24: 180}


def _tooltip(run: Row) -> str:
    parts = [f"#{run['id']} {run['status']}", f"{run['trigger']} attempt {run['attempt']}"]
    if run["started_at"]:
        parts.append(f"started {when(run['started_at'])}")
    elif run["finished_at"]:
        parts.append(f"at {when(run['finished_at'])}")
    if run["duration_seconds"] is not None:
        parts.append(f"took {span(run['duration_seconds'])}")
    if run["message"]:
        parts.append(str(run["message"]))
    return " · ".join(parts)


class _Scale:
    def __init__(self, since: datetime, now: datetime) -> None:
        self.since = since
        self.seconds = max(1.0, (now - since).total_seconds())

    def x(self, moment: datetime) -> float:
        offset = (moment - self.since).total_seconds() / self.seconds
        return _LABEL + min(1.0, max(0.0, offset)) * _PLOT


def _bar(run: Row, y: float, scale: _Scale, now: datetime) -> Markup:
    started = run["started_at"]
    if started is None or run["status"] == "skipped":
        at = scale.x(run["finished_at"] or run["scheduled_for"])
        shape = html(
            '<rect class="tick st-{0}" x="{1:.1f}" y="{2:.1f}" width="2" height="{3}">'
            "<title>{4}</title></rect>",
            run["status"],
            at - 1,
            y + 1,
            _ROW - 4,
            _tooltip(run),
        )
    else:
        end = run["finished_at"] or (now if run["status"] == "running" else started)
        x0, x1 = scale.x(started), scale.x(end)
        shape = html(
            '<rect class="bar st-{0}" x="{1:.1f}" y="{2:.1f}" width="{3:.1f}" height="{4}" rx="2">'
            "<title>{5}</title></rect>",
            run["status"],
            min(x0, _LABEL + _PLOT - _MIN_BAR),
            y + 5,
            max(_MIN_BAR, x1 - x0),
            _ROW - 10,
            _tooltip(run),
        )
    return html('<a href="/runs/{0}" data-status="{1}">{2}</a>', run["id"], run["status"], shape)


def _axis(scale: _Scale, now: datetime, hours: int, height: float) -> Markup:
    step = timedelta(minutes=_GRID_MINUTES.get(hours, 60))
    first = scale.since.replace(minute=0, second=0, microsecond=0)
    lines = []
    moment = first
    while moment <= now:
        if moment >= scale.since:
            x = scale.x(moment)
            lines.append(
                html(
                    '<line class="grid" x1="{0:.1f}" x2="{0:.1f}" y1="{1}" y2="{2:.1f}"/>'
                    '<text class="axis" x="{0:.1f}" y="{3}">{4}</text>',
                    x,
                    _AXIS - 6,
                    height,
                    _AXIS - 10,
                    moment.strftime("%H:%M"),
                )
            )
        moment += step
    lines.append(
        html(
            '<line class="now" x1="{0}" x2="{0}" y1="{1}" y2="{2:.1f}"/>'
            '<text class="axis now" x="{0}" y="{3}" text-anchor="end">now (UTC)</text>',
            _LABEL + _PLOT,
            _AXIS - 6,
            height,
            _AXIS - 10,
        )
    )
    return join(lines)


def timeline_page(
    ctx: PageContext,
    jobs: list[str],
    runs: list[Row],
    *,
    hours: int,
    job: str | None,
    truncated: bool,
) -> Page:
    """Runs of every job (or of ``job``) over the last ``hours`` hours, newest at the right."""
    names = [job] if job else sorted({*jobs, *(r["job"] for r in runs)})
    by_job: dict[str, list[Row]] = {name: [] for name in names}
    for run in runs:
        by_job.setdefault(run["job"], []).append(run)
    scale = _Scale(ctx.now - timedelta(hours=hours), ctx.now)
    height = _AXIS + _ROW * max(1, len(names)) + 4
    rows = []
    for index, name in enumerate(names):
        y = _AXIS + index * _ROW
        bars = join(_bar(run, y, scale, ctx.now) for run in reversed(by_job[name]))
        rows.append(
            html(
                '<g class="row" data-job="{0}"><rect class="lane" x="{1}" y="{2}" width="{3}" '
                'height="{4}"/><a href="{5}"><text class="label" x="4" y="{6}">{0}</text></a>'
                "{7}</g>",
                name,
                _LABEL,
                y + 2,
                _PLOT,
                _ROW - 4,
                url("/runs", job=name),
                y + _ROW / 2 + 4,
                bars,
            )
        )
    svg = html(
        '<svg class="timeline" viewBox="0 0 {0} {1:.0f}" role="img" '
        'aria-label="runs per job over the last {2} hours">{3}{4}</svg>',
        _WIDTH,
        height,
        hours,
        _axis(scale, ctx.now, hours, height),
        join(rows),
    )
    windows = join(
        html(
            '<a class="{0}" href="{1}">{2} h</a>',
            "on" if h == hours else "",
            url("/timeline", hours=h, job=job),
            h,
        )
        for h in HOURS
    )
    counts = Counter(r["status"] for r in runs)
    legend = join(
        html(
            '<span class="key"><i class="sq st-{0}"></i>{1} {2}</span>',
            status,
            status.replace("_", " "),
            counts.get(status, 0),
        )
        for status in (
            "succeeded",
            "failed",
            "timed_out",
            "abandoned",
            "cancelled",
            "skipped",
            "running",
        )
    )
    note = (
        html('<p class="muted">Showing the latest {0} runs of the window.</p>', len(runs))
        if truncated
        else Markup("")
    )
    body = html(
        '<nav class="filters">{0}{1}</nav><div class="legend">{2}</div>{3}{4}',
        html(
            '<strong>{0}</strong> · <a href="{1}">all jobs</a> · ',
            job,
            url("/timeline", hours=hours),
        )
        if job
        else "",
        windows,
        legend,
        svg,
        note,
    )
    return (f"Timeline of {job}" if job else "Timeline"), body
