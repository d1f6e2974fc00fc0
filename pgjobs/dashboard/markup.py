"""HTML that escapes by default: every value that is not :class:`Markup` is escaped.

Pages are built with :func:`html` (a format string whose ``{}`` fields are escaped) and
:func:`render_template` (a ``string.Template`` file from ``templates/`` whose ``$fields`` are
escaped). Only the dashboard's own fragments are :class:`Markup`; anything a job wrote (messages,
errors, logs, payloads) arrives as ``str`` and is therefore shown as text.
"""

from __future__ import annotations

import html as _html
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from string import Template
from typing import Any
from urllib.parse import urlencode


class Markup(str):
    """A string that is already HTML: inserted as is, never escaped again."""

    __slots__ = ()


NOTHING = Markup('<span class="muted">&ndash;</span>')
"""What an empty value shows."""


def escape(value: object) -> Markup:
    """``value`` as HTML text: :class:`Markup` unchanged, None empty, anything else escaped."""
    if isinstance(value, Markup):
        return value
    if value is None:
        return Markup("")
    return Markup(_html.escape(str(value), quote=True))


def _field(value: object) -> object:
    # Numbers cannot carry markup and keep their format specs ("{0:.1f}").
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return escape(value)


def html(template: str, *args: object, **kwargs: object) -> Markup:
    """``template.format(...)`` with every argument escaped (see :func:`escape`); numbers are
    passed as they are, so format specs such as ``{0:.1f}`` work on them."""
    return Markup(
        template.format(*(_field(a) for a in args), **{k: _field(v) for k, v in kwargs.items()})
    )


def join(parts: Iterable[object], separator: str = "") -> Markup:
    """The parts, each escaped unless it is :class:`Markup`, joined by ``separator`` (HTML)."""
    return Markup(separator.join(escape(part) for part in parts))


@cache
def _template(name: str) -> Template:
    folder = resources.files("pgjobs.dashboard") / "templates"
    return Template((folder / name).read_text(encoding="utf-8"))


def render_template(name: str, **values: object) -> Markup:
    """The template ``templates/<name>`` with every ``$field`` replaced by its escaped value."""
    return Markup(_template(name).substitute({k: escape(v) for k, v in values.items()}))


def url(path: str, **params: object) -> str:
    """``path`` with the non-empty ``params`` as a URL-encoded query string (escape it in HTML)."""
    query = urlencode({k: str(v) for k, v in params.items() if v not in (None, "")})
    return f"{path}?{query}" if query else path


# -- values as text ------------------------------------------------------------------------------


def when(moment: datetime | None) -> str:
    """An absolute UTC time, ``2026-11-25 17:00:03Z``; empty for None."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def ago(moment: datetime | None, now: datetime) -> str:
    """``moment`` relative to ``now``: ``12s ago``, ``in 3m``; empty for None."""
    if moment is None:
        return ""
    seconds = (moment - now).total_seconds()
    text = span(abs(seconds))
    return f"in {text}" if seconds > 0.5 else ("now" if seconds > -0.5 else f"{text} ago")


def span(seconds: float | None) -> str:
    """A duration for people: ``0.42s``, ``12.3s``, ``4m05s``, ``2h10m``, ``3d4h``."""
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h"


def pretty_json(value: Any) -> str:
    """JSON for a ``<pre>``: indented, keys sorted, non-ASCII kept."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def status_badge(status: str | None) -> Markup:
    """A coloured label for a run status (the colours are the timeline's)."""
    if not status:
        return NOTHING
    return html('<span class="badge st-{0}">{1}</span>', status, status.replace("_", " "))


def time_cell(moment: datetime | None, now: datetime) -> Markup:
    """A relative time with the absolute one as its tooltip."""
    if moment is None:
        return NOTHING
    return html(
        '<time datetime="{0}" title="{1}">{2}</time>',
        moment.isoformat(),
        when(moment),
        ago(moment, now),
    )
