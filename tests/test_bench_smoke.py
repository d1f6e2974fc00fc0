"""The benchmark suite runs end to end: ``python -m benchmarks --quick --only drain,enqueue`` (and
``--only limits``, ``--only workflows``, ``--only latency``, ``--only cli``) against the test
server prints its table and writes its JSON; without a DSN it makes a throwaway cluster of its
own; the soak's cold start runs a few seconds. Figures are not judged here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import cluster

ROOT = Path(__file__).resolve().parent.parent


def quick_run(
    pg_admin_dsn: str | None, out: Path, only: str, env: dict[str, str] | None = None
) -> tuple[str, dict[str, Any]]:
    """``python -m benchmarks --quick --only <only>``: its table (stdout) and its JSON, once it
    exited 0. Without a DSN, the run makes its own throwaway cluster."""
    server = ["--dsn", pg_admin_dsn] if pg_admin_dsn else []
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--only",
            only,
            *server,
            "--json",
            str(out),
        ],
        cwd=ROOT,
        env={**(os.environ if env is None else env), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results: dict[str, Any] = json.loads(out.read_text())
    return done.stdout, results


def test_a_quick_run_prints_the_table_and_writes_json(pg_admin_dsn: str, tmp_path: Path) -> None:
    stdout, results = quick_run(pg_admin_dsn, tmp_path / "bench.json", "drain,enqueue")

    assert "baseline: pgbench -N" in stdout
    header = next(line for line in stdout.splitlines() if line.startswith("measure"))
    columns = ["measure", "case", "system", "metric", "value", "vs", "pgbench", "note"]
    assert header.split() == columns
    cases = (
        "W=1 C=10",
        "W=2 C=10",
        "W=1 C=100",
        "single, 4 clients, autocommit",
        "single, 4 clients, BEGIN/COMMIT",
        "single, 1 client, autocommit",
    )
    for case in (*cases, "enqueue_many"):
        assert case in stdout, stdout

    assert set(results) >= {"meta", "baseline", "peers", "measures", "figures"}
    assert results["baseline"]["tps"] > 0
    assert results["meta"]["quick"] is True
    drain = results["measures"]["drain"]
    assert [c["case"] for c in drain["cases"]] == ["W=1 C=10", "W=2 C=10", "W=1 C=100"]
    for case in drain["cases"]:
        assert case["succeeded"] == case["jobs"] == drain["jobs"]
        assert case["jobs_per_s"] > 0
    enqueue = results["measures"]["enqueue"]
    assert [(single["clients"], single["transaction"]) for single in enqueue["single"]] == [
        (4, "autocommit"),
        (4, "BEGIN/COMMIT"),
        (1, "autocommit"),
    ]
    assert all(single["jobs_per_s"] > 0 for single in enqueue["single"])
    assert enqueue["many"]["jobs_per_s"] > 0
    for figure in results["figures"]:
        assert set(figure) >= {"measure", "case", "system", "metric", "value", "unit", "ratio"}
        if figure["unit"] == "jobs/s":
            assert figure["ratio"] == figure["value"] / results["baseline"]["tps"]


def test_the_limits_measure_sets_each_limited_drain_against_unlimited_ones(
    pg_admin_dsn: str, tmp_path: Path
) -> None:
    stdout, results = quick_run(pg_admin_dsn, tmp_path / "bench.json", "limits")

    limits = results["measures"]["limits"]
    cases = ["max_concurrency=50", "concurrency_key, 1,000 keys x 1", "rate_limit=1000000/s"]
    assert [case["case"] for case in limits["cases"]] == cases
    for case in limits["cases"]:
        assert case["ratio"] > 0
        assert case["held"] is True, case
        for drained in case["limited"] + case["unlimited"]:
            assert drained["succeeded"] == drained["jobs"] == limits["jobs"]
        rows = [line for line in stdout.splitlines() if f"  {case['case']}  " in line]
        for metric in ("jobs/s", "jobs/s unlimited", "ratio", case["check"]):
            assert any(f"  {metric}  " in row for row in rows), stdout
    assert any("target >= 0.9" in line for line in stdout.splitlines()), stdout


@pytest.mark.skipif(cluster.available() is not None, reason=str(cluster.available()))
def test_without_a_dsn_the_benchmarks_run_on_a_throwaway_cluster_with_autovacuum(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PGJOBS_BENCH_DSN"}
    stdout, results = quick_run(None, tmp_path / "bench.json", "enqueue", env)

    assert "server: a throwaway cluster" in stdout, stdout
    assert results["meta"]["autovacuum"] == "on"
    assert results["measures"]["enqueue"]["many"]["jobs_per_s"] > 0


@pytest.mark.skipif(cluster.available() is not None, reason=str(cluster.available()))
def test_the_cold_start_prints_its_seconds_and_the_ramp_up_beside_the_steady_state(
    tmp_path: Path,
) -> None:
    out = tmp_path / "coldstart.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.soak", "--cold-start", "--seconds", "4", "--rate",
         "200", "--json", str(out)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr

    assert "ramp-up (first 30 s):" in done.stdout, done.stdout
    cold = json.loads(out.read_text())["cold_start"]
    assert cold["load"]["enqueued"] > 0
    assert sum(s["enqueued"] for s in cold["per_second"]) == cold["load"]["enqueued"]


def test_the_workflows_measure_sets_chains_against_independent_runs(
    pg_admin_dsn: str, tmp_path: Path
) -> None:
    stdout, results = quick_run(pg_admin_dsn, tmp_path / "bench.json", "workflows")

    workflows = results["measures"]["workflows"]
    assert workflows["ratio"] > 0
    assert workflows["fan_in_seconds"] and all(gap > 0 for gap in workflows["fan_in_seconds"])
    for metric in ("jobs/s", "jobs/s independent", "ratio", "last fan-out finish -> fan-in start"):
        assert any(f"  {metric}  " in line for line in stdout.splitlines()), stdout
    assert any("target >= 0.7" in line for line in stdout.splitlines()), stdout


def test_the_latency_measure_times_worker_starts_and_enqueues_into_an_idle_worker(
    pg_admin_dsn: str, tmp_path: Path
) -> None:
    stdout, results = quick_run(pg_admin_dsn, tmp_path / "bench.json", "latency")

    latency = results["measures"]["latency"]
    ours = latency["systems"]["pgjobs"]
    assert len(ours["starts_ms"]) == latency["starts"] == 2
    assert all(start > 0 for start in ours["starts_ms"])
    assert len(ours["latencies_ms"]) == latency["runs"] == 30
    assert 0 < ours["latency_p50_ms"] <= ours["latency_p99_ms"] <= ours["latency_max_ms"]
    rows = [line for line in stdout.splitlines() if line.startswith("latency ")]
    expected = {
        "worker start to ready, 1 x 10": ("median", "max"),
        "enqueue -> job entered, idle worker 1 x 10": ("p50", "p99", "max"),
    }
    for case, metrics in expected.items():
        for metric in metrics:
            assert any(
                f"  {case}  " in row and "  pgjobs  " in row and f"  {metric}  " in row
                for row in rows
            ), stdout


def test_the_cli_measure_sets_jobs_status_against_the_floor_of_its_imports(
    pg_admin_dsn: str, tmp_path: Path
) -> None:
    stdout, results = quick_run(pg_admin_dsn, tmp_path / "bench.json", "cli")

    cli = results["measures"]["cli"]
    times = cli["milliseconds"]
    assert 0 < times["python -c pass"] < times["import click, psycopg"]
    assert times["import click, psycopg"] < times["pgjobs jobs status"]
    assert [len(r) for r in cli["rounds"].values()] == [1, 1, 1]
    rows = [line for line in stdout.splitlines() if line.startswith("cli ")]
    for metric in ("wall time", "import click, psycopg", "floor / command"):
        assert any(f"  {metric}  " in row for row in rows), stdout
