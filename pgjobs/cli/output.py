"""How the command line prints: rich tables for people, JSON for scripts.

Tables humanise (``3s ago``, ``in 2m``, ``1.2s``) relative to the database clock; JSON keeps exact
values (ISO timestamps, seconds as floats). Off a terminal the console is 200 columns wide and
colourless, so piped and tested output is stable.

Text that jobs control (messages, errors, logs, data, payloads) is shown, never obeyed: in human
output every terminal control character is written as ``\\xNN`` (:func:`safe`) and rich markup
in it is printed literally. JSON keeps the values exact; only DEL and C1 characters, which JSON
leaves raw, are written as ``\\u00NN`` escapes of the same value.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from pgjobs.runlog import json_visible_controls, visible_controls

STATUS_STYLES = {
    "succeeded": "green",
    "failed": "red",
    "timed_out": "red",
    "abandoned": "red",
    "cancelled": "yellow",
    "skipped": "dim",
    "queued": "cyan",
    "blocked": "magenta",
    "running": "blue",
}


class Markup(str):
    """Text that already is rich markup (made here, from escaped values): printed as is."""


def console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr); 200 columns and no colour when not a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr, highlight=False)
    return Console(
        file=stream, width=200, no_color=True, highlight=False, soft_wrap=False, emoji=False
    )


def table(*columns: str, title: str | None = None) -> Table:
    """A borderless table with bold headers; add rows with :meth:`Table.add_row`."""
    t = Table(title=title, box=None, header_style="bold", pad_edge=False, title_justify="left")
    for column in columns:
        t.add_column(column, overflow="fold")
    return t


def render(renderable: Any) -> None:
    """Print a rich renderable; off a terminal without the padding at the ends of lines."""
    out = console()
    if out.is_terminal:
        out.print(renderable)
        return
    with out.capture() as captured:
        out.print(renderable)
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


def print_table(t: Table, empty: str) -> None:
    """Print ``t``, or the ``empty`` line when it has no rows."""
    if t.row_count:
        render(t)
    else:
        click.echo(empty)


def print_fields(fields: Iterable[tuple[str, Any]], *, title: str | None = None) -> None:
    """Print ``label  value`` lines aligned in two columns (None values are left out).

    A value's lines after its first are indented to the value column. Values are plain text
    (made :func:`safe`, markup not interpreted) unless they are :class:`Markup`. Built with one
    pass over each value, not by rich's layout, whose line splitting is quadratic in the number
    of lines of a cell: a message of millions of characters prints in linear time.
    """
    shown = [(label, value) for label, value in fields if value is not None]
    if not shown:
        return
    width = max(len(label) for label, _ in shown)
    indent = "\n" + " " * (width + 2)
    out = console()
    styled = out.is_terminal and not out.no_color
    parts = [] if title is None else [safe(title)]
    for label, value in shown:
        if isinstance(value, Markup):
            body = _ansi(out, value) if styled else Text.from_markup(value).plain
        else:
            body = safe(str(value)).replace("\n", indent)
        head = click.style(label.ljust(width), bold=True) if styled else label.ljust(width)
        parts.append(f"{head}  {body}".rstrip())
    click.echo("\n".join(parts), color=styled)


def _ansi(out: Console, markup: str) -> str:
    """Short markup made here (a coloured status) as the terminal's escape sequences."""
    with out.capture() as captured:
        out.print(Text.from_markup(markup), end="", soft_wrap=True)
    return captured.get()


def safe(value: str) -> str:
    """Job-controlled ``value`` for a person's terminal: every control character but newline
    and tab shown as ``\\xNN`` (ESC as ``\\x1b``), so it cannot clear the screen, set the window
    title or plant a link. Linear in the length of ``value``."""
    return visible_controls(value)


def echo(line: str) -> None:
    """``click.echo`` of a line that holds job-controlled text, made :func:`safe`."""
    click.echo(safe(line))


def text(value: Any) -> str:
    """A cell's text: control characters made visible (:func:`safe`), rich markup in values
    escaped, None is empty."""
    return "" if value is None else escape(safe(str(value)))


def status(value: str | None) -> Markup:
    """A run status, coloured on a terminal."""
    if value is None:
        return Markup("-")
    style = STATUS_STYLES.get(value)
    return Markup(f"[{style}]{value}[/{style}]" if style else escape(value))


# -- humanising ---------------------------------------------------------------------------------


def duration(seconds: float | None) -> str:
    """``350ms``, ``1.2s``, ``2m 05s``, ``3h 10m``, ``2d 4h``; ``-`` for None."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def span(seconds: float) -> str:
    """A length of time in its largest exact unit: ``30d``, ``2w``, ``90m``, ``45s``."""
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _short(seconds: float) -> str:
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def relative(moment: datetime | None, now: datetime) -> str:
    """``3s ago``, ``in 2m``, ``now``; ``-`` for None."""
    if moment is None:
        return "-"
    delta = (moment - now).total_seconds()
    if abs(delta) < 1:
        return "now"
    return f"in {_short(delta)}" if delta > 0 else f"{_short(delta)} ago"


def timestamp(moment: datetime | None, now: datetime | None = None) -> str | None:
    """``2026-03-29 02:30:00+00:00`` (and ``(3s ago)`` when ``now`` is given); None for None."""
    if moment is None:
        return None
    shown = moment.isoformat(sep=" ", timespec="seconds")
    return f"{shown} ({relative(moment, now)})" if now is not None else shown


def truncate(value: str | None, width: int = 60) -> str:
    """One line of at most ``width`` characters."""
    if not value:
        return ""
    line = value.strip().splitlines()[0] if value.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def compact_json(value: Any) -> str:
    """A value as one line of JSON (for data and payloads in tables)."""
    return json.dumps(value, default=_default, separators=(", ", ": "), ensure_ascii=False)


# -- JSON ---------------------------------------------------------------------------------------


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def emit_json(value: Any) -> None:
    """Print ``value`` as indented JSON: ISO timestamps, seconds as floats. The values are exact;
    DEL and C1 characters are written as ``\\u00NN`` escapes (JSON escapes the others)."""
    text = json.dumps(value, default=_default, indent=2, ensure_ascii=False)
    click.echo(json_visible_controls(text))


def pick(row: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """The ``keys`` of ``row``, in that order (for stable JSON documents)."""
    return {key: row.get(key) for key in keys}
