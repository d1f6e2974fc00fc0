"""Workflows in real worker processes: a run enqueued ``after`` others starts only once they
finished, runs once, hears how they ended (``ctx.dependencies``), and is cancelled with everything
after it when one it needed failed; a dependency whose worker dies is retried and waited for; a
run whose dependencies the worker could not load goes back to the queue and runs once.

The steps are ``tests.worker_apps.workflow``'s: each records its execution in
``workflow_executions`` and returns what ``ctx.dependencies`` held.
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgjobs
from benchmarks import history
from pgjobs import EnqueueRequest
from pgjobs.registry import Registry
from pgjobs.testing import JobHarness
from tests.workers import (
    ROOT,
    WorkerProcess,
    Workers,
    rows,
    scalar,
    wait_until,
    worker_pool,
)

APP = "tests.worker_apps.workflow:extension"
JOBS = ["w-step", "w-retried"]


@pytest.fixture
def workers(dsn: str, tmp_path: Path) -> Iterator[Workers]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE workflow_executions (run_id bigint NOT NULL, attempt integer NOT NULL,"
            " worker_id text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )
    with worker_pool(dsn, tmp_path) as pool:
        yield pool


def start(workers: Workers, count: int, *args: str) -> list[WorkerProcess]:
    procs = [workers.start(JOBS, *args, app=APP) for _ in range(count)]
    workers.wait_registered(*procs)
    return procs


def step(
    key: str,
    *,
    after: Sequence[int | str] = (),
    after_any: Sequence[int | str] = (),
    **payload: Any,
) -> EnqueueRequest:
    """A run of ``w-step`` with ``payload``, named ``key`` within its ``enqueue_many``."""
    return EnqueueRequest("w-step", payload, key=key, after=after, after_any=after_any)


def enqueue_graph(dsn: str, requests: list[EnqueueRequest]) -> list[int]:
    with psycopg.connect(dsn) as conn:
        return pgjobs.enqueue_many_sync(conn, requests)


def wait_all_ended(dsn: str, count: int, timeout: float) -> None:
    wait_until(
        lambda: (
            scalar(
                dsn,
                "SELECT count(*) FROM pgjobs.runs"
                " WHERE status NOT IN ('queued', 'running', 'blocked')",
            )
            >= count
            and not scalar(
                dsn,
                "SELECT count(*) FROM pgjobs.runs WHERE status IN ('queued', 'running', 'blocked')",
            )
        ),
        timeout,
        f"{count} runs to end",
    )


def run_of(dsn: str, run_id: int) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute("SELECT * FROM pgjobs.runs WHERE id = %s", [run_id])
        names = [c.name for c in cur.description or []]
        row = cur.fetchone()
        assert row is not None
        return dict(zip(names, row, strict=True))


def span_seconds(dsn: str, ids: list[int]) -> float:
    """First ``started_at`` to last ``finished_at`` of ``ids``."""
    return float(
        scalar(
            dsn,
            "SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8"
            " FROM pgjobs.runs WHERE id = ANY(%s)",
            ids,
        )
    )


# Dependants that started before one of their dependencies had finished: must be none.
_EARLY_STARTS = """
SELECT r.id, x.id
FROM pgjobs.run_dependencies d
JOIN pgjobs.runs r ON r.id = d.run_id
JOIN pgjobs.runs x ON x.id = d.depends_on
WHERE r.started_at IS NOT NULL AND (x.finished_at IS NULL OR r.started_at < x.finished_at)
"""


def random_dag(seed: int, nodes: int) -> tuple[list[list[int]], list[float]]:
    """Each node's dependencies (0 to 3 of the 10 nodes before it) and its seconds of work."""
    rng = random.Random(seed)
    deps: list[list[int]] = []
    for i in range(nodes):
        window = list(range(max(0, i - 10), i))
        deps.append(sorted(rng.sample(window, min(len(window), rng.randint(0, 3)))))
    return deps, [round(rng.uniform(0.05, 0.2), 3) for _ in range(nodes)]


def critical_path(deps: list[list[int]], seconds: list[float]) -> tuple[float, int]:
    """The heaviest path's seconds of work, and the most runs on any path (the depth)."""
    heaviest: list[float] = []
    depth: list[int] = []
    for i, before in enumerate(deps):
        heaviest.append(seconds[i] + max((heaviest[d] for d in before), default=0.0))
        depth.append(1 + max((depth[d] for d in before), default=0))
    return max(heaviest), max(depth)


@pytest.mark.serial
def test_a_random_graph_of_100_runs_keeps_its_order_runs_each_once_along_its_critical_path(
    dsn: str, workers: Workers
) -> None:
    """A seeded random DAG of 100 runs (each sleeps 50-200 ms, waits for 0 to 3 of the 10 runs
    before it) over 4 worker processes of 30 slots each, so that slots never hold a run back.

    The queue's overhead is measured in the same test: a chain of no-op runs as long as the
    DAG's deepest path, on the same workers; its time (first start to last finish) is what the
    queue adds per level, times the levels. The DAG's time (first start to last finish) must be
    at most 1.2 x (its critical path's seconds of work + that chain's time)."""
    deps, seconds = random_dag(17, 100)
    heaviest, depth = critical_path(deps, seconds)
    start(workers, 4, "--concurrency", "30")

    chain = enqueue_graph(
        dsn,
        [step(f"c{i}", after=[f"c{i - 1}"] if i else [], value=i) for i in range(depth)],
    )
    wait_all_ended(dsn, depth, 30)
    overhead = span_seconds(dsn, chain)

    dag = enqueue_graph(
        dsn,
        [
            step(f"n{i}", after=[f"n{d}" for d in before], seconds=seconds[i], value=i)
            for i, before in enumerate(deps)
        ],
    )
    wait_all_ended(dsn, depth + 100, 60)
    wall = span_seconds(dsn, dag)

    assert rows(dsn, _EARLY_STARTS) == []
    edges = rows(
        dsn,
        "SELECT run_id, depends_on FROM pgjobs.run_dependencies WHERE run_id = ANY(%s)"
        " ORDER BY 1, 2",
        dag,
    )
    assert edges == [(dag[i], dag[d]) for i, before in enumerate(deps) for d in before]
    # Every run succeeded at its first attempt, executed exactly once, and saw its own
    # dependencies as they ended, in the order of their ids.
    done = {
        run_id: (status, attempt, data)
        for run_id, status, attempt, data in rows(
            dsn, "SELECT id, status, attempt, data FROM pgjobs.runs WHERE id = ANY(%s)", dag
        )
    }
    for i, before in enumerate(deps):
        status, attempt, data = done[dag[i]]
        assert (status, attempt) == ("succeeded", 1), (i, status, attempt)
        assert data["dependencies"] == [[dag[d], "w-step", "succeeded"] for d in before]
        assert data["inputs"] == before
    executions = rows(
        dsn, "SELECT run_id, count(*) FROM workflow_executions GROUP BY run_id HAVING count(*) > 1"
    )
    assert executions == []
    assert scalar(dsn, "SELECT count(DISTINCT run_id) FROM workflow_executions") == depth + 100
    assert wall >= heaviest
    allowed = 1.2 * (heaviest + overhead)
    assert wall <= allowed, (
        f"{wall:.2f}s for a critical path of {heaviest:.2f}s and {depth} levels"
        f" (chain of {depth}: {overhead:.2f}s)"
    )


@pytest.mark.serial
def test_a_fan_in_after_500_runs_starts_within_100_ms_of_the_last_one(
    dsn: str, workers: Workers
) -> None:
    start(workers, 2, "--concurrency", "50")
    fan_out = [step(f"out{i}", value=i) for i in range(500)]
    ids = enqueue_graph(dsn, [*fan_out, step("in", after=[f"out{i}" for i in range(500)])])
    fan_in = ids[-1]
    wait_all_ended(dsn, 501, 60)

    gap = scalar(
        dsn,
        "SELECT extract(epoch FROM (SELECT started_at FROM pgjobs.runs WHERE id = %s)"
        " - (SELECT max(finished_at) FROM pgjobs.runs WHERE id <> %s))::float8",
        fan_in,
        fan_in,
    )
    assert 0 <= gap <= 0.1, f"the fan-in started {gap * 1000:.0f} ms after the last fan-out run"
    row = run_of(dsn, fan_in)
    assert row["status"] == "succeeded"
    assert row["data"]["dependencies"] == [[i, "w-step", "succeeded"] for i in ids[:-1]]
    assert row["data"]["inputs"] == list(range(500))
    assert scalar(dsn, "SELECT count(*) FROM workflow_executions") == 501


def test_a_failure_cancels_exactly_its_transitive_dependants_and_after_any_runs_anyway(
    dsn: str, workers: Workers
) -> None:
    start(workers, 1)
    #  a -> b (fails) -> c -> d        x -> y       (unrelated: untouched)
    #       b -> e       c -> f
    #       b ~> g       c ~> h        (~> after_any: runs whatever the end)
    ids = dict(
        zip(
            "abcdefghxy",
            enqueue_graph(
                dsn,
                [
                    step("a", value="a"),
                    step("b", after=["a"], fail=True, value="b"),
                    step("c", after=["b"], value="c"),
                    step("d", after=["c"], value="d"),
                    step("e", after=["b"], value="e"),
                    step("f", after=["c"], value="f"),
                    step("g", after_any=["b"], value="g"),
                    step("h", after_any=["c"], value="h"),
                    step("x", value="x"),
                    step("y", after=["x"], value="y"),
                ],
            ),
            strict=True,
        )
    )
    wait_all_ended(dsn, 10, 30)

    status = {name: run_of(dsn, run_id)["status"] for name, run_id in ids.items()}
    assert status == {
        "a": "succeeded",
        "b": "failed",
        "c": "cancelled",
        "d": "cancelled",
        "e": "cancelled",
        "f": "cancelled",
        "g": "succeeded",
        "h": "succeeded",
        "x": "succeeded",
        "y": "succeeded",
    }
    for name, failed in (("c", "b"), ("e", "b"), ("d", "c"), ("f", "c")):
        row = run_of(dsn, ids[name])
        assert row["error_type"] == "DependencyFailed"
        assert f"dependency run {ids[failed]} (w-step)" in row["error_message"], row
        assert row["started_at"] is None and row["finished_at"] is not None
    # Cancelled runs never executed; the others executed once.
    executed = dict(rows(dsn, "SELECT run_id, count(*) FROM workflow_executions GROUP BY 1"))
    assert executed == {ids[n]: 1 for n in "abghxy"}
    assert run_of(dsn, ids["g"])["data"]["dependencies"] == [[ids["b"], "w-step", "failed"]]
    assert run_of(dsn, ids["h"])["data"]["dependencies"] == [[ids["c"], "w-step", "cancelled"]]


def test_a_dependency_whose_worker_is_killed_is_retried_and_its_dependants_run_once(
    dsn: str, workers: Workers
) -> None:
    victim = workers.start(JOBS, "--lease", "1.5", name="victim", app=APP)
    workers.wait_registered(victim)
    first, *dependants = enqueue_graph(
        dsn,
        [
            EnqueueRequest("w-retried", {"first_seconds": 60, "value": 7}, key="dep"),
            step("after1", after=["dep"]),
            step("after2", after=["dep"]),
        ],
    )
    wait_until(lambda: run_of(dsn, first)["status"] == "running", 15, "the dependency to start")
    survivor = workers.start(JOBS, "--lease", "1.5", name="survivor", app=APP)
    workers.wait_registered(survivor)
    assert {run_of(dsn, d)["status"] for d in dependants} == {"blocked"}
    victim.signal(signal.SIGKILL)

    retry = wait_until(
        lambda: scalar(dsn, "SELECT id FROM pgjobs.runs WHERE retry_of = %s", first),
        20,
        "the dependency's retry",
    )
    wait_all_ended(dsn, 4, 20)

    assert run_of(dsn, first)["status"] == "abandoned"
    retried = run_of(dsn, retry)
    assert (retried["status"], retried["attempt"]) == ("succeeded", 2)
    for dependant in dependants:
        row = run_of(dsn, dependant)
        assert (row["status"], row["attempt"]) == ("succeeded", 1)
        assert row["started_at"] > retried["finished_at"]
        assert row["data"]["dependencies"] == [[retry, "w-retried", "succeeded"]]
        assert row["data"]["inputs"] == [7]
    executed = dict(rows(dsn, "SELECT run_id, count(*) FROM workflow_executions GROUP BY 1"))
    assert executed == {first: 1, retry: 1, **{d: 1 for d in dependants}}
    assert scalar(dsn, "SELECT count(*) FROM pgjobs.runs") == 4
    assert survivor.stop() == 0, survivor.log()


def test_a_step_reads_what_the_steps_before_it_returned(dsn: str, workers: Workers) -> None:
    start(workers, 1)
    resize_a, resize_b, album = enqueue_graph(
        dsn,
        [
            step("resize-a", value={"path": "a.jpg", "bytes": 1200}),
            step("resize-b", value={"path": "b.jpg", "bytes": 800}),
            step("album", after=["resize-b", "resize-a"], value="album"),
        ],
    )
    wait_all_ended(dsn, 3, 20)

    data = run_of(dsn, album)["data"]
    # In the order of the dependencies' ids, whatever the order of `after`.
    assert data["dependencies"] == [
        [resize_a, "w-step", "succeeded"],
        [resize_b, "w-step", "succeeded"],
    ]
    assert data["inputs"] == [{"path": "a.jpg", "bytes": 1200}, {"path": "b.jpg", "bytes": 800}]
    assert data["messages"] == [
        "step {'path': 'a.jpg', 'bytes': 1200}",
        "step {'path': 'b.jpg', 'bytes': 800}",
    ]
    # A run without dependencies has none.
    assert run_of(dsn, resize_a)["data"]["dependencies"] == []


def test_the_album_example_builds_the_album_from_the_resized_images(
    dsn: str, workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    examples = ROOT / "examples"
    monkeypatch.syspath_prepend(str(examples))
    from workflow import queue_album  # examples/workflow.py

    worker = workers.start(
        ["album-resize", "album-build"],
        "--poll-interval",
        "0.5",
        app="workflow:extension",
        env={"PYTHONPATH": f"{examples}{os.pathsep}{ROOT}"},
    )
    workers.wait_registered(worker)
    with psycopg.connect(dsn) as conn:
        album = queue_album(conn, "holidays", ["beach.jpg", "hills.jpg", "harbour.jpg"])
    wait_all_ended(dsn, 4, 20)

    row = run_of(dsn, album)
    assert (row["status"], row["message"]) == ("succeeded", "album holidays: 3 pages")
    assert row["data"] == {
        "album": "holidays",
        "pages": [
            f"thumbnails/1024/{image}" for image in ("beach.jpg", "hills.jpg", "harbour.jpg")
        ],
    }
    assert worker.stop() == 0, worker.log()


def test_the_test_harness_drains_a_workflow_with_its_dependencies(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    from workflow import AlbumExtension, queue_album  # examples/workflow.py

    harness = JobHarness(dsn, Registry.build([AlbumExtension()], None))
    harness.register()
    with harness.connect() as conn:
        album = queue_album(conn, "city", ["bridge.jpg", "tower.jpg"])

    ran = harness.drain()

    assert [run.job for run in ran] == ["album-resize", "album-resize", "album-build"]
    assert ran[-1].id == album
    assert ran[-1].data == {
        "album": "city",
        "pages": ["thumbnails/1024/bridge.jpg", "thumbnails/1024/tower.jpg"],
    }


def test_the_claim_reads_dependencies_by_key_in_the_workers_generic_plan(
    conn: psycopg.Connection[Any],
) -> None:
    # 20,000 runs in chains: whatever the batch, the plan the worker caches for its claim must
    # find each claimed run's dependencies by key, not read (or hash) the whole of runs. The
    # edges have no statistics yet (autovacuum has not come round).
    conn.execute(
        "INSERT INTO pgjobs.runs (job, trigger, status, data)"
        " SELECT 'w-step', 'enqueue', 'succeeded', '{}' FROM generate_series(1, 20000)"
    )
    conn.execute(
        "INSERT INTO pgjobs.run_dependencies (run_id, depends_on)"
        " SELECT g + 1, g FROM generate_series(1, 19999) g"
    )
    conn.execute("ANALYZE pgjobs.runs")
    _, query = history.claim_query(history.queries())
    plan = history.explain(conn, query, history.claim_params(query, ["w-step"]), generic=True)

    scans = [(n["Node Type"], n.get("Relation Name")) for n in history.plan_nodes(plan)]
    assert ("Seq Scan", "runs") not in scans, scans
    assert ("Seq Scan", "run_dependencies") not in scans, scans
