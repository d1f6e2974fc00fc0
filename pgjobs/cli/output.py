"""How the command line prints: rich tables for people, JSON for scripts.

Tables humanise (``3s ago``, ``in 2m``, ``1.2s``) relative to the database clock; JSON keeps exact
values (ISO timestamps, seconds as floats). Off a terminal the console is 200 columns wide and
colourless, so piped and tested output is stable.

Text that jobs control (messages, errors, logs, data, payloads) is shown, never obeyed: in human
output every terminal control character is written as ``\\xNN`` (:func:`safe`) and rich markup
in it is printed literally. JSON keeps the values exact; only DEL and C1 characters, which JSON
leaves raw, are written as ``\\u00NN`` escapes of the same value.

rich is imported only to print on a terminal or to lay out what plain text cannot say the same
way (a cell of several lines, a table wider than the console): off a terminal a table of one
line per row is written here, character for character as rich would, without loading rich.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import click

from pgjobs.runlog import json_visible_controls, visible_controls

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table as RichTable

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


WIDTH = 200
"""The width of the console off a terminal: piped and tested output does not depend on one."""


def console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr); :data:`WIDTH` columns and no colour when not a
    terminal."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr, highlight=False)
    return Console(
        file=stream, width=WIDTH, no_color=True, highlight=False, soft_wrap=False, emoji=False
    )


class Table:
    """A borderless table with bold headers whose cells are markup (made by :func:`text`,
    :func:`status`...): printed by :func:`render` or :func:`print_table`."""

    def __init__(self, columns: Sequence[str], title: str | None = None) -> None:
        self.columns = list(columns)
        self.title = title
        self.rows: list[tuple[str, ...]] = []

    def add_row(self, *cells: str) -> None:
        """Add a row: one cell of markup per column."""
        self.rows.append(cells)

    @property
    def row_count(self) -> int:
        return len(self.rows)

    def to_rich(self) -> RichTable:
        """The same table as a rich renderable."""
        from rich.table import Table as RichTable

        t = RichTable(
            title=self.title, box=None, header_style="bold", pad_edge=False, title_justify="left"
        )
        for column in self.columns:
            t.add_column(column, overflow="fold")
        for row in self.rows:
            t.add_row(*row)
        return t

    def plain_lines(self, width: int) -> list[str] | None:
        """The lines rich prints for this table on a colourless console ``width`` columns wide
        (without the spaces at their ends), when they are simple to say: no title, one line per
        cell, every character one column wide, and the widest cells fitting side by side. None
        otherwise: then only rich knows how it folds and aligns them."""
        if self.title is not None:
            return None
        grid = [self.columns, *self.rows]
        plain_grid: list[list[str]] = []
        for row in grid:
            if len(row) != len(self.columns):
                return None
            cells = [
                text for text in map(plain, row) if text is not None and _SIMPLE.fullmatch(text)
            ]
            if len(cells) != len(row):
                return None
            plain_grid.append(cells)
        widths = [max(len(row[i]) for row in plain_grid) for i in range(len(self.columns))]
        # Between two columns: the right padding of one and the left padding of the next.
        if not widths or sum(widths) + 2 * (len(widths) - 1) > width:
            return None
        return [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in plain_grid
        ]


# Characters rich gives one column each and prints as they are.
_SIMPLE = re.compile(r"[\x20-\x7e\u2026]*")

# rich's own patterns: a markup tag (after any backslashes), and what its escape() protects.
_TAG = re.compile(r"((\\*)\[([a-z#/@][^[]*?)])")
_ESCAPE = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")


def escape(value: str) -> str:
    """``value`` as rich markup that prints it literally (rich's own ``rich.markup.escape``)."""

    def backslashes(match: re.Match[str]) -> str:
        slashes, tag = match.groups()
        return f"{slashes}{slashes}\\{tag}"

    value = _ESCAPE.sub(backslashes, value)
    if value.endswith("\\") and not value.endswith("\\\\"):
        return value + "\\"
    return value


def plain(markup: str, *, emoji: bool = False) -> str | None:
    """The text rich prints for ``markup`` when styles are off (``rich.markup.render(...).plain``);
    None for markup whose meaning only rich knows: a closing tag that does not close the last
    open tag as spelled there, a ``[@...]`` tag, or with ``emoji`` a ``:`` that could start an
    emoji code."""
    if emoji and ":" in markup:
        return None
    parts: list[str] = []
    opened: list[str] = []
    position = 0
    for match in _TAG.finditer(markup):
        full, slashes, tag = match.groups()
        start, end = match.span()
        if start > position:
            parts.append(markup[position:start].replace("\\[", "["))
        position = end
        pairs, escaped = divmod(len(slashes), 2)
        parts.append("\\" * pairs)
        if escaped:
            parts.append(full[len(slashes) :])
            continue
        name = tag.partition("=")[0]
        if name.startswith("@"):
            return None
        if not name.startswith("/"):
            opened.append(name)
            continue
        if not opened or name[1:].strip() not in ("", opened[-1]):
            return None
        opened.pop()
    parts.append(markup[position:].replace("\\[", "["))
    return "".join(parts)


def table(*columns: str, title: str | None = None) -> Table:
    """A borderless table with bold headers; add rows with :meth:`Table.add_row`."""
    return Table(columns, title)


def render(renderable: Any) -> None:
    """Print a :class:`Table` or a rich renderable; off a terminal without the padding at the
    ends of lines."""
    if isinstance(renderable, Table):
        if not _terminal():
            lines = renderable.plain_lines(WIDTH)
            if lines is not None:
                click.echo("\n".join(lines))
                return
        renderable = renderable.to_rich()
    out = console()
    if out.is_terminal:
        out.print(renderable)
        return
    with out.capture() as captured:
        out.print(renderable)
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


def _terminal() -> bool:
    """Whether rich takes stdout for a terminal (it does off one too when ``FORCE_COLOR`` or
    ``TTY_COMPATIBLE=1`` say so)."""
    if sys.stdout.isatty():
        return True
    return os.environ.get("TTY_COMPATIBLE") == "1" or bool(os.environ.get("FORCE_COLOR"))


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
    out = console() if sys.stdout.isatty() else None
    styled = out is not None and out.is_terminal and not out.no_color
    parts = [] if title is None else [safe(title)]
    for label, value in shown:
        if isinstance(value, Markup):
            body = _ansi(out, value) if out is not None and styled else _plain_markup(value)
        else:
            body = safe(str(value)).replace("\n", indent)
        head = click.style(label.ljust(width), bold=True) if styled else label.ljust(width)
        parts.append(f"{head}  {body}".rstrip())
    click.echo("\n".join(parts), color=styled)


def _ansi(out: Console, markup: str) -> str:
    """Short markup made here (a coloured status) as the terminal's escape sequences."""
    from rich.text import Text

    with out.capture() as captured:
        out.print(Text.from_markup(markup), end="", soft_wrap=True)
    return captured.get()


def _plain_markup(markup: str) -> str:
    """``Text.from_markup(markup).plain`` (emoji codes replaced), by rich only when needed."""
    text = plain(markup, emoji=True)
    if text is None:
        from rich.text import Text

        text = Text.from_markup(markup).plain
    return text


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
