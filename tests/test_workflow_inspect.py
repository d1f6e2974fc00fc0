"""Inspecting workflows: ``runs show`` lists a run's dependencies and dependants, ``runs graph``
prints the whole graph a run belongs to (bounded, nearest first), and the dashboard's run page
links both ways. The graphs are built with plain SQL, as any enqueue would leave them."""

from __future__ import annotations

import itertools
import re
import time
from typing import Any

import psycopg
import pytest

from tests.cli import add_run, invoke, parse_json
from tests.test_dashboard import call, serving
from tests.test_runlog import XSS

Conn = psycopg.Connection[Any]

HOSTILE = "ex-\x1b]0;pwned\x07\x1b[2J\x9b31m[bold]loud[/bold]"
"""A job name that would set the window title, clear the screen and style text if obeyed."""


def depend(conn: Conn, run_id: int, *dependencies: int, any_outcome: bool = False) -> None:
    """Edges: ``run_id`` waits for each of ``dependencies``."""
    for dependency in dependencies:
        conn.execute(
            "INSERT INTO pgjobs.run_dependencies (run_id, depends_on, any_outcome)"
            " VALUES (%s, %s, %s)",
            [run_id, dependency, any_outcome],
        )


def blocked(conn: Conn, job: str, waits_for: int) -> int:
    return add_run(conn, job, status="blocked", blocked_by=waits_for)


def diamond(conn: Conn) -> tuple[int, int, int, int]:
    """``a`` succeeded; ``b`` (after a) failed, ``c`` (after a) is running; ``d`` waits for
    ``b`` (after) and ``c`` (after_any), and was cancelled when ``b`` failed."""
    a = add_run(conn, "ex-resize", status="succeeded", message="resized 3")
    b = add_run(conn, "ex-resize", status="failed", error_message="disk full")
    c = add_run(conn, "ex-thumbs", status="running")
    d = add_run(
        conn,
        "ex-album",
        status="cancelled",
        blocked_by=1,
        error_type="DependencyFailed",
        error_message=f"dependency run {b} (ex-resize) ended failed",
    )
    depend(conn, b, a)
    depend(conn, c, a)
    depend(conn, d, b)
    depend(conn, d, c, any_outcome=True)
    return a, b, c, d


def lines(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


# -- runs show ----------------------------------------------------------------------------------


def test_runs_show_lists_dependencies_and_dependants_with_their_states(
    conn: Conn, dsn: str
) -> None:
    a, b, c, d = diamond(conn)

    shown = invoke(dsn, "runs", "show", str(d))
    assert shown.exit_code == 0, shown.output
    assert f"depends on     {b}  ex-resize  failed   after\n" in shown.stdout
    assert f"               {c}  ex-thumbs  running  after_any\n" in shown.stdout
    assert "dependants" not in shown.stdout

    middle = invoke(dsn, "runs", "show", str(b)).stdout
    assert f"depends on     {a}  ex-resize  succeeded  after\n" in middle
    assert f"dependants     {d}  ex-album  cancelled  after\n" in middle

    as_json = parse_json(invoke(dsn, "runs", "show", str(d), "--json"))
    assert as_json["blocked_by"] == 1
    assert as_json["dependencies"] == [
        {"id": b, "job": "ex-resize", "status": "failed", "blocked_by": None, "any_outcome": False},
        {"id": c, "job": "ex-thumbs", "status": "running", "blocked_by": None, "any_outcome": True},
    ]
    assert as_json["dependencies_total"] == 2
    assert as_json["dependants"] == [] and as_json["dependants_total"] == 0

    root = parse_json(invoke(dsn, "runs", "show", str(a), "--json"))
    assert [n["id"] for n in root["dependants"]] == [b, c] and root["dependencies"] == []


def test_runs_show_lists_the_first_fifty_of_each_side_and_counts_the_rest(
    conn: Conn, dsn: str
) -> None:
    export = add_run(conn, "ex-export", status="succeeded")
    email = blocked(conn, "ex-email", 60)
    conn.execute(
        "WITH fan AS (INSERT INTO pgjobs.runs (job, trigger, status, blocked_by)"
        " SELECT 'ex-part', 'enqueue', 'blocked', 1 FROM generate_series(1, 60) RETURNING id),"
        " up AS (INSERT INTO pgjobs.run_dependencies (run_id, depends_on)"
        " SELECT id, %(export)s FROM fan)"
        " INSERT INTO pgjobs.run_dependencies (run_id, depends_on) SELECT %(email)s, id FROM fan",
        {"export": export, "email": email},
    )

    text = invoke(dsn, "runs", "show", str(export)).stdout
    assert "ex-part  blocked (waits for 1)  after" in text
    assert text.count("ex-part") == 50
    assert f"… and 10 more: pgjobs runs graph {export}" in text

    as_json = parse_json(invoke(dsn, "runs", "show", str(email), "--json"))
    parts = [n["id"] for n in as_json["dependencies"]]
    assert len(parts) == 50 and parts == sorted(parts) and as_json["dependencies_total"] == 60
    assert as_json["waiting_for"] == "dependencies" and as_json["blocked_by"] == 60


# -- runs graph ---------------------------------------------------------------------------------


def test_runs_graph_prints_a_diamond_in_dependency_order_from_any_of_its_runs(
    conn: Conn, dsn: str
) -> None:
    a, b, c, d = diamond(conn)
    add_run(conn, "ex-resize", status="succeeded")  # not in the workflow

    result = invoke(dsn, "runs", "graph", str(c))
    assert result.exit_code == 0, result.output
    header, columns, *rows = result.stdout.splitlines()
    assert header == f"workflow of run {c}: 4 runs, 4 edges"
    assert columns.split() == ["RUN", "JOB", "STATUS", "DEPENDS", "ON", "MESSAGE"]
    assert [row.split()[:3] for row in rows] == [
        [str(a), "ex-resize", "succeeded"],
        [str(b), "ex-resize", "failed"],
        ["→", str(c), "ex-thumbs"],
        [str(d), "ex-album", "cancelled"],
    ]
    assert re.fullmatch(rf" +{b} +ex-resize +failed +{a} +disk full", rows[1])
    assert re.fullmatch(
        rf" +{d} +ex-album +cancelled +{b}, {c} \(after_any\) +dependency run {b} \(ex-re.*",
        rows[3],
    )

    graphs = [parse_json(invoke(dsn, "runs", "graph", str(r), "--json")) for r in (a, b, c, d)]
    for graph in graphs:
        assert [run["id"] for run in graph["runs"]] == [a, b, c, d]
        assert graph["edges"] == [
            {"run_id": b, "depends_on": a, "any_outcome": False},
            {"run_id": c, "depends_on": a, "any_outcome": False},
            {"run_id": d, "depends_on": b, "any_outcome": False},
            {"run_id": d, "depends_on": c, "any_outcome": True},
        ]
        assert graph["cut"] is False and graph["limit"] == 1000
    assert [g["run"] for g in graphs] == [a, b, c, d]
    last = graphs[0]["runs"][3]
    assert last["status"] == "cancelled" and last["error_type"] == "DependencyFailed"
    assert (last["dependencies"], last["dependants"]) == (2, 0)


def test_runs_graph_follows_a_chain_both_ways_and_lists_its_runs_in_order(
    conn: Conn, dsn: str
) -> None:
    # Ids do not follow the order of the chain: a workflow may name a later request first.
    last = blocked(conn, "ex-step", 1)
    first = add_run(conn, "ex-step", status="succeeded")
    second = add_run(conn, "ex-step", status="queued", blocked_by=0)
    third = blocked(conn, "ex-step", 1)
    depend(conn, second, first)
    depend(conn, third, second)
    depend(conn, last, third)

    graph = parse_json(invoke(dsn, "runs", "graph", str(second), "--json"))
    assert [run["id"] for run in graph["runs"]] == [first, second, third, last]

    text = invoke(dsn, "runs", "graph", str(last)).stdout
    body = lines(text)[2:]
    assert [row[0] for row in body] == [str(first), str(second), str(third), "→"]
    assert body[3] == ["→", str(last), "ex-step", "blocked", "(waits", "for", "1)", str(third)]

    alone = add_run(conn, "ex-step")
    single = invoke(dsn, "runs", "graph", str(alone))
    assert single.stdout == f"run {alone} (ex-step) has no dependencies and no dependants\n"
    assert [
        r["id"] for r in parse_json(invoke(dsn, "runs", "graph", str(alone), "--json"))["runs"]
    ] == [alone]


def test_runs_list_filters_blocked_runs(conn: Conn, dsn: str) -> None:
    first = add_run(conn, "ex-step", status="running")
    waiting = blocked(conn, "ex-step", 1)
    depend(conn, waiting, first)

    listed = parse_json(invoke(dsn, "runs", "list", "--status", "blocked", "--json"))
    assert [run["id"] for run in listed] == [waiting]


def test_runs_graph_of_an_unknown_run_is_one_line(dsn: str) -> None:
    for args in ((), ("--json",)):
        missing = invoke(dsn, "runs", "graph", "999", *args)
        assert missing.exit_code == 1 and missing.stderr == "error: no run with id 999\n"
        assert missing.stdout == ""


def test_runs_graph_shows_the_nearest_runs_up_to_its_limit_and_says_it_cut(
    conn: Conn, dsn: str
) -> None:
    steps = [add_run(conn, "ex-step", status="succeeded") for _ in range(5)]
    for before, after in itertools.pairwise(steps):
        depend(conn, after, before)
    middle = steps[2]

    text = invoke(dsn, "runs", "graph", str(middle), "--limit", "3").stdout
    body = [line for line in text.splitlines()[2:] if line.strip()]
    assert [row.split()[0] for row in body[:3]] == [str(steps[1]), "→", str(steps[3])]
    assert body[0].endswith("+1 dependency not shown")
    assert body[2].endswith(f"{middle}, +1 dependant not shown")
    assert body[3] == (
        f"showing the 3 runs nearest to run {middle}: the workflow has more (--limit shows more)"
    )

    cut = parse_json(invoke(dsn, "runs", "graph", str(middle), "--limit", "3", "--json"))
    assert [run["id"] for run in cut["runs"]] == steps[1:4]
    assert cut["cut"] is True and cut["limit"] == 3 and len(cut["edges"]) == 2

    whole = parse_json(invoke(dsn, "runs", "graph", str(middle), "--limit", "5", "--json"))
    assert whole["cut"] is False and len(whole["runs"]) == 5


def test_runs_graph_stops_at_a_thousand_runs_of_a_large_fan_out(conn: Conn, dsn: str) -> None:
    root = add_run(conn, "ex-export", status="succeeded")
    conn.execute(
        "WITH fan AS (INSERT INTO pgjobs.runs (job, trigger, status)"
        " SELECT 'ex-part', 'enqueue', 'queued' FROM generate_series(1, 1100) RETURNING id)"
        " INSERT INTO pgjobs.run_dependencies (run_id, depends_on) SELECT id, %s FROM fan",
        [root],
    )

    started = time.monotonic()
    graph = parse_json(invoke(dsn, "runs", "graph", str(root), "--json"))
    took = time.monotonic() - started
    assert len(graph["runs"]) == 1000 and graph["cut"] is True
    assert graph["runs"][0]["id"] == root and graph["runs"][0]["dependants"] == 1100
    assert len(graph["edges"]) == 999
    assert took < 10, took

    text = invoke(dsn, "runs", "graph", str(root)).stdout
    assert text.startswith(f"workflow of run {root}: 1000 runs, 999 edges\n")
    assert "+101 dependants not shown" in text
    assert "showing the 1000 runs nearest to run" in text


# -- hostile text -------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["show", "graph"])
def test_job_names_and_messages_are_shown_not_obeyed(conn: Conn, dsn: str, command: str) -> None:
    first = add_run(conn, HOSTILE, status="failed", error_message="\x1b[31mred\x9b2J")
    then = blocked(conn, HOSTILE, 1)
    depend(conn, then, first)

    for run in (first, then):
        text = invoke(dsn, "runs", command, str(run)).stdout
        assert "\x1b" not in text and "\x9b" not in text and "\x07" not in text
        assert "ex-\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m[bold]loud[/bold]" in text

        raw = invoke(dsn, "runs", command, str(run), "--json").stdout
        assert "\x1b" not in raw and "\x9b" not in raw
        document = parse_json(invoke(dsn, "runs", command, str(run), "--json"))
        jobs = (
            [n["job"] for n in document["dependencies"] + document["dependants"]]
            if command == "show"
            else [n["job"] for n in document["runs"]]
        )
        assert HOSTILE in jobs


# -- the dashboard ------------------------------------------------------------------------------


def test_the_run_page_links_dependencies_and_dependants_with_their_states(
    conn: Conn, dsn: str
) -> None:
    a, b, c, d = diamond(conn)
    hostile = add_run(conn, XSS, status="succeeded")
    waiting = blocked(conn, "ex-email", 2)
    depend(conn, waiting, d, hostile)
    conn.execute(
        "WITH fan AS (INSERT INTO pgjobs.runs (job, trigger, status)"
        " SELECT 'ex-part', 'enqueue', 'queued' FROM generate_series(1, 55) RETURNING id)"
        " INSERT INTO pgjobs.run_dependencies (run_id, depends_on) SELECT id, %s FROM fan",
        [a],
    )

    with serving(dsn) as server:
        album = call(server, f"/runs/{d}").text
        email = call(server, f"/runs/{waiting}").text
        resize = call(server, f"/runs/{a}").text
        plain = call(server, f"/runs/{add_run(conn, 'ex-alone')}").text

    depends = album.split("<h2>Depends on</h2>")[1].split("</section>")[0]
    assert re.search(
        rf'<a href="/runs/{b}">#{b}</a>.*?ex-resize.*?st-failed.*?>after</span>', depends
    )
    assert re.search(
        rf'<a href="/runs/{c}">#{c}</a>.*?ex-thumbs.*?st-running.*?>after_any</span>', depends
    )
    dependants = album.split("<h2>Dependants</h2>")[1].split("</section>")[0]
    assert f'<a href="/runs/{waiting}">#{waiting}</a>' in dependants
    assert "st-blocked" in dependants and "waits for 2" in dependants

    assert "<dt>Waits for</dt><dd>2 of 2 dependencies</dd>" in email
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;" in email
    assert "<script>document" not in email and email.count("<script") == 1

    assert resize.count('<a href="/runs/') >= 50
    assert f"… and 7 more: <code>pgjobs runs graph {a}</code>" in resize
    assert "Depends on" not in plain and "Dependants" not in plain
