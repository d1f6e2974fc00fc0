"""Prometheus metrics: a worker's own (``--metrics-port``) and the cluster exporter's
(``pgjobs metrics``), with Prometheus names, in their own registries, read from a real database."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import pgjobs.metrics
from pgjobs.metrics import ClusterCollector, WorkerMetrics, cluster_registry, serve_metrics
from tests.test_runlog import enqueue
from tests.workers import ROOT, wait_until, worker_pool

NAME = re.compile(r"^pgjobs_[a-z_]+$")


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample at ``url``, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# -- a worker's metrics -------------------------------------------------------------------------


def test_worker_metrics_count_runs_by_job_and_status_with_prometheus_names() -> None:
    metrics = WorkerMetrics()
    metrics.worker_info(
        worker_id="w1", host="h", pid=7, version="0.1.0", queues=["default"], concurrency=4
    )
    metrics.claimed(2)
    metrics.run_started("ext-a", lag=0.02)
    metrics.run_started("ext-b", lag=1.5)
    metrics.run_finished("ext-a", "succeeded", 0.3)
    metrics.run_finished("ext-b", "failed", 12.0)
    metrics.reaped(1)
    metrics.retried(2)
    r = metrics.registry

    assert (
        r.get_sample_value("pgjobs_runs_finished_total", {"job": "ext-a", "status": "succeeded"})
        == 1
    )
    assert (
        r.get_sample_value("pgjobs_runs_finished_total", {"job": "ext-b", "status": "failed"}) == 1
    )
    assert r.get_sample_value("pgjobs_run_duration_seconds_count", {"job": "ext-b"}) == 1
    assert r.get_sample_value("pgjobs_run_duration_seconds_sum", {"job": "ext-b"}) == 12.0
    assert (
        r.get_sample_value("pgjobs_schedule_lag_seconds_bucket", {"job": "ext-b", "le": "1.0"}) == 0
    )
    assert (
        r.get_sample_value("pgjobs_schedule_lag_seconds_bucket", {"job": "ext-b", "le": "2.5"}) == 1
    )
    assert r.get_sample_value("pgjobs_runs_in_progress", {"job": "ext-a"}) == 0
    assert r.get_sample_value("pgjobs_runs_claimed_total") == 2
    assert r.get_sample_value("pgjobs_runs_reaped_total") == 1
    assert r.get_sample_value("pgjobs_retries_total") == 2
    info = {
        "worker_id": "w1",
        "host": "h",
        "pid": "7",
        "version": "0.1.0",
        "queues": "default",
        "concurrency": "4",
    }
    assert r.get_sample_value("pgjobs_worker_info", info) == 1
    names = {f.name for f in text_string_to_metric_families(generate_latest(r).decode())}
    assert all(NAME.match(n) for n in names), names
    # The process-wide registry is left alone.
    assert REGISTRY.get_sample_value("pgjobs_runs_claimed_total") is None


def test_a_run_handed_back_leaves_the_in_progress_gauge() -> None:
    metrics = WorkerMetrics()
    metrics.run_started("ext-a")
    assert metrics.registry.get_sample_value("pgjobs_runs_in_progress", {"job": "ext-a"}) == 1
    metrics.run_released("ext-a")
    assert metrics.registry.get_sample_value("pgjobs_runs_in_progress", {"job": "ext-a"}) == 0


def test_worker_metrics_are_served_on_http() -> None:
    metrics = WorkerMetrics()
    metrics.claimed(3)
    port = metrics.start_http(0, "127.0.0.1")
    try:
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        metrics.stop_http()
    assert samples[("pgjobs_runs_claimed_total", ())] == 3


def test_metrics_bind_to_loopback_unless_told_otherwise() -> None:
    metrics = WorkerMetrics()
    metrics.start_http(0)
    try:
        assert metrics._server is not None
        assert metrics._server.server_address[0] == "127.0.0.1"
    finally:
        metrics.stop_http()
    server = serve_metrics(metrics.registry, 0)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()
        server.server_close()


def test_a_silent_connection_to_metrics_is_closed(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(pgjobs.metrics, "METRICS_TIMEOUT", 0.5)
    server = serve_metrics(WorkerMetrics().registry, 0)
    try:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")  # and never the rest
            started = time.monotonic()
            assert sock.recv(1024) == b""
            assert time.monotonic() - started < 5
    finally:
        server.shutdown()
        server.server_close()
    assert "Traceback" not in capfd.readouterr().err


def test_a_worker_serves_metrics_and_logs_json_lines(dsn: str, tmp_path: Path) -> None:
    with worker_pool(dsn, tmp_path) as workers:
        run_id = enqueue(dsn, "obs-cleanup")
        proc = workers.start(
            [],
            "--app",
            "tests.test_runlog:extension",
            "--metrics-port",
            "0",
            "--log-format",
            "json",
            name="metrics-w",
        )
        workers.wait_registered(proc)

        def port() -> int | None:
            for line in proc.log().splitlines():
                if line.startswith("{") and "metrics" in (entry := json.loads(line))["message"]:
                    return int(entry["message"].rsplit(":", 1)[1].split("/")[0])
            return None

        url = f"http://127.0.0.1:{wait_until(port, 10, 'the metrics port in the log')}/metrics"
        ok = ("pgjobs_runs_finished_total", (("job", "obs-cleanup"), ("status", "succeeded")))
        samples = wait_until(lambda: (s := scrape(url)).get(ok) and s, 10, "the run's metrics")
        assert samples[("pgjobs_run_duration_seconds_count", (("job", "obs-cleanup"),))] == 1
        assert samples[("pgjobs_runs_claimed_total", ())] >= 1
        assert any(name == "pgjobs_worker_info" for name, _ in samples)
        proc.stop()

    lines = [json.loads(line) for line in proc.log().splitlines() if line.startswith("{")]
    run_lines = [e for e in lines if e.get("run_id") == run_id]
    assert [e["message"] for e in run_lines] == ["scanning sessions", "deleted expired sessions"]
    assert run_lines[1] | {"deleted": 42, "job": "obs-cleanup", "attempt": 1} == run_lines[1]
    assert run_lines[1]["worker_id"] == "metrics-w"


# -- the cluster exporter -----------------------------------------------------------------------


@pytest.fixture
def cluster(dsn: str) -> Iterator[str]:
    """Jobs, runs and workers in every state the exporter reports on."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO pgjobs.jobs (name, extension, schedule, paused, next_fire_at) VALUES
              ('obs-overdue', 'obs', '* * * * *', false, now() - interval '5 minutes'),
              ('obs-paused', 'obs', '* * * * *', true, now() - interval '1 hour'),
              ('obs-failing', 'obs', '0 * * * *', false, now() + interval '1 minute'),
              ('obs-recovered', 'obs', NULL, false, NULL);
            INSERT INTO pgjobs.runs (job, trigger, status, finished_at) VALUES
              ('obs-failing', 'manual', 'succeeded', '2026-01-01T00:00:00Z'),
              ('obs-failing', 'manual', 'timed_out', now()),
              ('obs-failing', 'manual', 'skipped', now()),
              ('obs-recovered', 'manual', 'failed', now()),
              ('obs-recovered', 'manual', 'succeeded', now()),
              ('obs-recovered', 'manual', 'cancelled', now());
            INSERT INTO pgjobs.runs (job, trigger, status, scheduled_for, queue) VALUES
              ('obs-recovered', 'enqueue', 'queued', now() - interval '30 seconds', 'default'),
              ('obs-recovered', 'enqueue', 'queued', now() - interval '10 seconds', 'default'),
              ('obs-recovered', 'enqueue', 'queued', now() + interval '1 hour', 'default'),
              ('obs-recovered', 'enqueue', 'running', now(), 'emails');
            INSERT INTO pgjobs.workers (id, host, pid, version, queues, concurrency, state,
                                        expires_at) VALUES
              ('alive', 'h1', 1, '0.1.0', '{default,reports}', 4, 'running', now() + '1m'),
              ('silent', 'h2', 2, '0.1.0', '{default}', 4, 'running', now() - interval '1 minute'),
              ('gone', 'h3', 3, '0.1.0', '{default}', 4, 'stopped', now() - interval '1 hour');
            """
        )
    yield dsn


def test_the_exporter_reads_queues_jobs_and_workers_from_the_database(cluster: str) -> None:
    r = cluster_registry(cluster)

    def value(name: str, **labels: str) -> Any:
        return r.get_sample_value(name, labels)

    assert value("pgjobs_up") == 1
    assert value("pgjobs_queue_depth", queue="default") == 2
    assert value("pgjobs_queue_delayed", queue="default") == 1
    assert value("pgjobs_queue_running", queue="emails") == 1
    assert 29 < value("pgjobs_queue_oldest_age_seconds", queue="default") < 60
    # A queue only a live worker names is listed, with nothing in it.
    assert value("pgjobs_queue_depth", queue="reports") == 0
    assert value("pgjobs_job_last_run_failed", job="obs-failing") == 1
    assert value("pgjobs_job_last_run_failed", job="obs-recovered") == 0
    assert value("pgjobs_job_last_run_failed", job="obs-overdue") == 0
    assert value("pgjobs_job_last_success_timestamp_seconds", job="obs-failing") == 1767225600
    assert value("pgjobs_job_last_success_timestamp_seconds", job="obs-overdue") is None
    assert value("pgjobs_job_overdue", job="obs-overdue") == 1
    assert 299 < value("pgjobs_job_overdue_seconds", job="obs-overdue") < 400
    assert value("pgjobs_job_overdue", job="obs-paused") == 0
    assert value("pgjobs_job_paused", job="obs-paused") == 1
    assert value("pgjobs_job_overdue", job="obs-failing") == 0
    assert value("pgjobs_workers_alive") == 1
    assert value("pgjobs_workers", state="dead") == 1
    assert value("pgjobs_workers", state="stopped") == 1
    assert value("pgjobs_workers", state="stopping") == 0


def test_the_exporter_reports_pauses_and_what_queued_runs_wait_for(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO pgjobs.jobs (name, extension, queue, paused, max_concurrency) VALUES
              ('obs-held', 'obs', 'reports', false, NULL),
              ('obs-paused', 'obs', 'default', true, NULL),
              ('obs-limited', 'obs', 'default', false, 1),
              ('obs-rated', 'obs', 'default', false, NULL),
              ('obs-free', 'obs', 'default', false, NULL);
            INSERT INTO pgjobs.queues (name, paused) VALUES ('reports', true), ('default', false);
            INSERT INTO pgjobs.rate_buckets (scope, name, rate, burst, tokens)
            VALUES ('job', 'obs-rated', 1.0 / 60, 1, 0);
            INSERT INTO pgjobs.runs (job, trigger, queue, scheduled_for) VALUES
              ('obs-held', 'schedule', 'reports', now()),
              ('obs-held', 'manual', 'reports', now()),
              ('obs-paused', 'enqueue', 'default', now()),
              ('obs-limited', 'enqueue', 'default', now()),
              ('obs-rated', 'enqueue', 'default', now()),
              ('obs-free', 'retry', 'default', now()),
              ('obs-free', 'enqueue', 'default', now() + interval '1 hour'),
              ('obs-free', 'enqueue', 'emails', now());
            INSERT INTO pgjobs.runs (job, trigger, status, worker_id, slot)
            VALUES ('obs-limited', 'enqueue', 'running', 'w', 1);
            """
        )
    r = cluster_registry(dsn)

    def value(name: str, **labels: str) -> Any:
        return r.get_sample_value(name, labels)

    assert value("pgjobs_queue_paused", queue="reports") == 1
    assert value("pgjobs_queue_paused", queue="default") == 0
    assert value("pgjobs_queue_paused", queue="emails") is None  # no row: running, unlimited
    waiting = {
        (s.labels["job"], s.labels["reason"]): s.value
        for family in r.collect()
        if family.name == "pgjobs_runs_waiting"
        for s in family.samples
    }
    assert waiting == {
        ("obs-held", "queue paused"): 2,
        ("obs-paused", "job paused"): 1,
        ("obs-limited", "concurrency"): 1,
        ("obs-rated", "rate limit"): 1,
        ("obs-free", "worker"): 2,  # the run not due yet is not waiting for anything
    }
    assert value("pgjobs_job_held", job="obs-held") == 1
    assert value("pgjobs_job_held", job="obs-paused") == 1
    assert value("pgjobs_job_paused", job="obs-held") == 0
    assert value("pgjobs_job_held", job="obs-limited") == 0
    assert value("pgjobs_job_held", job="obs-free") == 0


def test_the_exporter_counts_schedules_by_origin_and_state(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO pgjobs.jobs (name, extension, schedule, schedule_source, paused) VALUES
              ('obs-nightly', 'obs', '0 0 3 * * *', 'profile', false),
              ('obs-held', 'obs', '0 * * * * *', 'code', true),
              ('obs-adhoc', 'obs', NULL, 'code', false);
            SELECT pgjobs.schedule('obs-nightly', '0 */5 * * * *', name => 'often');
            SELECT pgjobs.schedule('obs-nightly', '0 0 6 * * *', name => 'morning');
            SELECT pgjobs.alter_schedule('obs-nightly', 'morning', paused => true);
            SELECT pgjobs.schedule('obs-nightly', '@daily', name => 'off', enabled => false);
            INSERT INTO pgjobs.schedules (job, name, cron, error)
            VALUES ('obs-nightly', 'typo', '0 99 * * * *', 'minute field out of range'),
                   ('obs-held', 'extra', '0 30 * * * *', NULL);
            INSERT INTO pgjobs.schedules (job, name, cron, origin)
            VALUES ('obs-nightly', 'weekly', '@weekly', 'profile');
            """
        )
    series = {
        tuple(s.labels[k] for k in ("job", "origin", "state")): s.value
        for family in cluster_registry(dsn).collect()
        if family.name == "pgjobs_schedules"
        for s in family.samples
    }
    states = ("error", "disabled", "paused", "job paused", "ticking")
    assert series == {
        # Its own schedule and the further one its profile lists.
        **{("obs-nightly", "profile", state): 2.0 * (state == "ticking") for state in states},
        **{("obs-nightly", "runtime", state): float(state != "job paused") for state in states},
        **{("obs-held", "code", state): float(state == "job paused") for state in states},
        **{("obs-held", "runtime", state): float(state == "job paused") for state in states},
    }  # an on-demand job without runtime schedules has none


def test_the_overdue_threshold_is_the_exporters_setting(cluster: str) -> None:
    r = cluster_registry(cluster, overdue_after=600)
    assert r.get_sample_value("pgjobs_job_overdue", {"job": "obs-overdue"}) == 0


def test_an_unreachable_database_reads_as_down(caplog: pytest.LogCaptureFixture) -> None:
    collector = ClusterCollector("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")

    names = {family.name: family for family in collector.collect()}

    assert names["pgjobs_up"].samples[0].value == 0
    assert "pgjobs_queue_depth" not in names
    assert "scrape failed" in caplog.text


def test_pgjobs_metrics_serves_the_cluster_on_http(cluster: str) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pgjobs",
            "metrics",
            "--dsn",
            cluster,
            "--port",
            "0",
            "--host",
            "127.0.0.1",
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line)
        assert match, line
        samples = scrape(f"http://127.0.0.1:{match[1]}/metrics")
    finally:
        proc.terminate()
        proc.wait(10)
    assert samples[("pgjobs_up", ())] == 1
    assert samples[("pgjobs_job_overdue", (("job", "obs-overdue"),))] == 1


def test_pgjobs_metrics_binds_to_loopback_by_default(cluster: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgjobs", "metrics", "--dsn", cluster, "--port", "0"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
    finally:
        proc.terminate()
        proc.wait(10)
    assert re.match(r"pgjobs metrics on http://127\.0\.0\.1:\d+/metrics$", line), line


def test_pgjobs_metrics_on_a_database_without_the_schema_says_how_to_fix_it(
    empty_dsn: str,
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pgjobs", "metrics", "--dsn", empty_dsn, "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        'error: pgjobs schema "pgjobs" is missing: run `pgjobs db upgrade`'
    ]
