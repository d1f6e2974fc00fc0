"""Workflows on the command line: a run's dependencies and dependants (``runs show``) and the
whole graph a run belongs to (``runs graph``).

Both read ``run_dependencies``, whose edges always name a dependency's latest attempt, and both
are bounded: ``runs show`` lists the first :data:`SHOWN_NEIGHBOURS` of each side and counts the
rest, ``runs graph`` walks at most ``--limit`` runs, nearest first, and says when it stopped.
"""

from __future__ import annotations

import heapq
from collections import Counter
from typing import Any

import click

from pgjobs.cli import output
from pgjobs.cli.options import Database, database_options, json_option, open_database
from pgjobs.errors import PgJobsError

Row = dict[str, Any]

SHOWN_NEIGHBOURS = 50
"""How many dependencies, and how many dependants, ``runs show`` lists (the rest are counted)."""

GRAPH_LIMIT = 1000
"""How many runs ``runs graph`` shows by default; ``--limit`` goes up to :data:`GRAPH_MAXIMUM`."""

GRAPH_MAXIMUM = 10_000

NEIGHBOUR_JSON_KEYS = ("id", "job", "status", "blocked_by", "any_outcome")

GRAPH_RUN_JSON_KEYS = (
    "id",
    "job",
    "status",
    "blocked_by",
    "attempt",
    "retry_of",
    "created_at",
    "finished_at",
    "message",
    "error_type",
    "error_message",
    "dependencies",
    "dependants",
)


# -- runs show ----------------------------------------------------------------------------------


def fetch_neighbours(db: Database, run_id: int) -> Row:
    """The run's ``dependencies`` and ``dependants`` (at most :data:`SHOWN_NEIGHBOURS` of each,
    in id order: ``id``, ``job``, ``status``, ``blocked_by``, ``any_outcome``) and how many of
    each it has in all (``dependencies_total``, ``dependants_total``)."""
    row = db.one("run_dependency_lists", id=run_id, limit=SHOWN_NEIGHBOURS)
    assert row is not None  # one row, whatever the id
    return row


def neighbours_json(neighbours: Row) -> Row:
    """The lists and their totals for ``runs show --json``."""
    return {
        "dependencies": [output.pick(n, NEIGHBOUR_JSON_KEYS) for n in neighbours["dependencies"]],
        "dependencies_total": neighbours["dependencies_total"],
        "dependants": [output.pick(n, NEIGHBOUR_JSON_KEYS) for n in neighbours["dependants"]],
        "dependants_total": neighbours["dependants_total"],
    }


def neighbour_fields(run_id: int, neighbours: Row) -> list[tuple[str, str | None]]:
    """``depends on`` and ``dependants`` for ``runs show``: one aligned line per run, then
    ``… and N more`` pointing at ``runs graph`` when there are more than it lists."""
    return [
        (
            "depends on",
            _lines(run_id, neighbours["dependencies"], neighbours["dependencies_total"]),
        ),
        ("dependants", _lines(run_id, neighbours["dependants"], neighbours["dependants_total"])),
    ]


def _lines(run_id: int, rows: list[Row], total: int) -> str | None:
    if not rows:
        return None
    cells = [(str(r["id"]), r["job"], _state(r), _kind(r["any_outcome"])) for r in rows]
    widths = [max(len(cell[i]) for cell in cells) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, [*widths, 0], strict=True)).rstrip()
        for row in cells
    ]
    if total > len(rows):
        lines.append(f"… and {total - len(rows)} more: pgjobs runs graph {run_id}")
    return "\n".join(lines)


def _kind(any_outcome: bool) -> str:
    """The edge as the enqueue API names it."""
    return "after_any" if any_outcome else "after"


def _state(row: Row) -> str:
    """A run's status; a blocked run says how many of its dependencies it still waits for."""
    if row["status"] == "blocked" and row["blocked_by"] is not None:
        return f"blocked (waits for {row['blocked_by']})"
    return str(row["status"])


# -- runs graph ---------------------------------------------------------------------------------


@click.command("graph")
@click.argument("run_id", metavar="ID", type=int)
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(min=1, max=GRAPH_MAXIMUM),
    default=GRAPH_LIMIT,
    show_default=True,
    help="Show at most this many runs, the nearest to ID first.",
)
@json_option
@database_options
def graph(run_id: int, limit: int, as_json: bool, dsn: str, schema: str) -> None:
    """The workflow run ID belongs to: every run reached from it along dependencies, either way,
    with its status and what it waits for."""
    with open_database(dsn, schema) as db, db.conn.transaction():
        db.value("walk_planner_settings")
        rows = db.all("run_graph", id=run_id, limit=limit)
    if not rows:
        raise PgJobsError(f"no run with id {run_id}")
    cut = bool(rows[0]["cut"])
    ordered = topological(rows)
    edges = [
        {"run_id": row["id"], "depends_on": dep, "any_outcome": any_outcome}
        for row in ordered
        for any_outcome, deps in ((False, row["after"]), (True, row["after_any"]))
        for dep in deps
    ]
    if as_json:
        output.emit_json(
            {
                "run": run_id,
                "runs": [output.pick(row, GRAPH_RUN_JSON_KEYS) for row in ordered],
                "edges": sorted(edges, key=lambda e: (e["run_id"], e["depends_on"])),
                "cut": cut,
                "limit": limit,
            }
        )
        return
    if len(ordered) == 1 and not cut:
        output.echo(f"run {run_id} ({ordered[0]['job']}) has no dependencies and no dependants")
        return
    size = f"{_count(len(ordered), 'run', 'runs')}, {_count(len(edges), 'edge', 'edges')}"
    click.echo(f"workflow of run {run_id}: {size}")
    dependants_shown = Counter(edge["depends_on"] for edge in edges)
    t = output.table("", "RUN", "JOB", "STATUS", "DEPENDS ON", "MESSAGE")
    for row in ordered:
        t.add_row(
            "→" if row["id"] == run_id else "",
            str(row["id"]),
            output.text(row["job"]),
            _status_cell(row),
            output.text(_depends_cell(row, dependants_shown[row["id"]])),
            output.text(output.truncate(row["error_message"] or row["message"])),
        )
    output.render(t)
    if cut:
        click.echo(
            f"\nshowing the {len(ordered)} runs nearest to run {run_id}: the workflow has more "
            "(--limit shows more)"
        )


def topological(rows: list[Row]) -> list[Row]:
    """The runs with each after the runs it depends on, ties (and runs on a cycle, which the
    enqueue API refuses but plain SQL could make) in id order."""
    by_id = {row["id"]: row for row in rows}
    waiting = {row["id"]: len(row["after"]) + len(row["after_any"]) for row in rows}
    dependants: dict[int, list[int]] = {}
    for row in rows:
        for dep in (*row["after"], *row["after_any"]):
            dependants.setdefault(dep, []).append(row["id"])
    ready = [run for run, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    ordered: list[Row] = []
    while len(ordered) < len(rows):
        if not ready:  # a cycle: take its lowest id and go on
            ready = [min(run for run, count in waiting.items() if count > 0)]
        run = heapq.heappop(ready)
        waiting[run] = -1
        ordered.append(by_id[run])
        for dependant in dependants.get(run, ()):
            if waiting[dependant] > 0:
                waiting[dependant] -= 1
                if waiting[dependant] == 0:
                    heapq.heappush(ready, dependant)
    return ordered


def _status_cell(row: Row) -> str:
    return output.status(row["status"]) + output.text(_state(row)[len(row["status"]) :])


def _depends_cell(row: Row, dependants_shown: int) -> str:
    """``40, 41, 39 (after_any)``, then how many of the run's dependencies and dependants are
    not shown (only in a cut graph)."""
    parts = [
        *(str(dep) for dep in row["after"]),
        *(f"{dep} (after_any)" for dep in row["after_any"]),
    ]
    hidden_dependencies = row["dependencies"] - len(row["after"]) - len(row["after_any"])
    hidden_dependants = row["dependants"] - dependants_shown
    if hidden_dependencies > 0:
        parts.append(f"+{_count(hidden_dependencies, 'dependency', 'dependencies')} not shown")
    if hidden_dependants > 0:
        parts.append(f"+{_count(hidden_dependants, 'dependant', 'dependants')} not shown")
    return ", ".join(parts)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"
