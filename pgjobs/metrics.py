"""Prometheus metrics: what one worker did (:class:`WorkerMetrics`) and what the whole cluster
looks like in the database (:class:`ClusterCollector`, served by ``pgjobs metrics``).

Each uses its own :class:`~prometheus_client.CollectorRegistry`, never the global one, so an
application embedding pgjobs keeps its own metrics apart. Names follow Prometheus conventions:
the ``pgjobs_`` prefix, counters end in ``_total``, durations are in seconds.

Worker metrics (``pgjobs worker --metrics-port P``):

- ``pgjobs_runs_finished_total{job,status}``: runs this worker finished, by outcome;
- ``pgjobs_run_duration_seconds{job}``: histogram of run durations;
- ``pgjobs_schedule_lag_seconds{job}``: histogram of the delay from a run's scheduled time to its
  start (how late the queue and the workers are);
- ``pgjobs_runs_in_progress{job}``: runs executing on this worker now;
- ``pgjobs_runs_claimed_total``, ``pgjobs_runs_reaped_total``, ``pgjobs_retries_total``: claims,
  runs whose expired lease this worker's reaper marked abandoned, retries this worker queued;
- ``pgjobs_worker_info{worker_id,host,pid,version,queues,concurrency}``: always 1.

Cluster metrics (``pgjobs metrics --port P``), read from the database on every scrape:

- ``pgjobs_up``: 1 if the database answered the scrape's queries, else 0 (and nothing else);
- ``pgjobs_queue_depth{queue}``, ``pgjobs_queue_delayed{queue}``, ``pgjobs_queue_running{queue}``,
  ``pgjobs_queue_oldest_age_seconds{queue}``: due queued runs, queued runs not due yet, running
  runs, and how long the oldest due run has waited;
- ``pgjobs_job_last_run_failed{job}``: 1 if the job's last decisive run (skipped and cancelled
  runs do not count) failed, timed out or was abandoned;
- ``pgjobs_job_last_success_timestamp_seconds{job}``: when the job last succeeded (Unix time);
- ``pgjobs_job_overdue_seconds{job}`` and ``pgjobs_job_overdue{job}``: how far an active job's next
  tick is past due, and 1 once that exceeds the exporter's ``overdue_after`` (60 s by default:
  no live worker has ticked it);
- ``pgjobs_job_paused{job}``: 1 if the job itself is paused (``jobs pause``);
- ``pgjobs_job_held{job}``: 1 if its runs are held by a pause, its own or its queue's;
- ``pgjobs_queue_paused{queue}``: 1 if the queue is paused, 0 if not, for the queues that have a
  row in ``queues`` (a queue without one is running and unlimited);
- ``pgjobs_runs_waiting{job,reason}``: due queued runs by what they wait for (the ``run_waits``
  view's ``waiting_for``: ``job paused``, ``queue paused``, ``concurrency``, ``rate limit``,
  ``worker``), and blocked runs (``dependencies``); a job and reason without such runs has no
  series;
- ``pgjobs_schedules{job,origin,state}``: the job's schedules by where they come from (``code``,
  ``profile``: its own or the profile's further ones; ``runtime``) and what they do
  (:data:`SCHEDULE_STATES`); every state of a job and origin that has schedules has a series, 0
  when none is in it;
- ``pgjobs_workers{state}`` (running, stopping, stopped, dead; a running worker whose heartbeat
  expired counts as dead) and ``pgjobs_workers_alive``.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import psycopg
from prometheus_client import CollectorRegistry, Counter, Info, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from psycopg.rows import dict_row

from pgjobs.db import connection_options, first_line
from pgjobs.errors import ConfigError
from pgjobs.named_queries import Queries

log = logging.getLogger("pgjobs.metrics")

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600)
"""Buckets of ``pgjobs_run_duration_seconds``: from sub-second queue jobs to hour-long batches."""

LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
"""Buckets of ``pgjobs_schedule_lag_seconds``."""

OVERDUE_AFTER = 60.0
"""Seconds past its next fire time after which an active job counts as overdue."""

WAIT_REASONS = (
    "dependencies",
    "scheduled",
    "job paused",
    "queue paused",
    "concurrency",
    "rate limit",
    "worker",
)
"""What a queued or blocked run waits for, as the ``run_waits`` view says (``waiting_for``), in
the order the view tries them: the first that applies is the run's (``dependencies``: a blocked
run's, the runs it waits for)."""

SCHEDULE_STATES = ("error", "disabled", "paused", "job paused", "ticking")
"""What a schedule does, as the ``schedule_states`` query says (``state``), in the order it tries
them: ``error`` (a worker could not use its cron or timezone), ``disabled``, ``paused`` (its own
pause), ``job paused`` (its job's), else ``ticking``."""

METRICS_HOST = "127.0.0.1"
"""Where ``/metrics`` binds unless told otherwise: loopback, since the endpoint has no
authentication and names every job, queue and worker. Expose it with an explicit host
(``0.0.0.0``, or the address of the interface the scraper reaches)."""


@dataclass
class _JobSeries:
    """What one job's runs did on this worker, as plain numbers the scrape reads."""

    running: int = 0
    finished: dict[str, int] = field(default_factory=dict)
    duration: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    duration_sum: float = 0.0
    lag: list[int] = field(default_factory=lambda: [0] * (len(LAG_BUCKETS) + 1))
    lag_sum: float = 0.0


class _RunCollector(Collector):
    """The per-job metrics of a worker's runs, kept as plain counts and turned into Prometheus
    families when scraped.

    A prometheus_client histogram child costs ~150 us and ~8 KB to make and takes a lock per
    observation; with thousands of jobs on a worker, making them was most of the work of a
    minute's ticks. Here a job costs a few lists of integers, and observing a run is a bisect and
    two additions on the event loop's thread; the scrape, on another thread, only reads.
    """

    def __init__(self) -> None:
        self.jobs: dict[str, _JobSeries] = {}

    def series(self, job: str) -> _JobSeries:
        series = self.jobs.get(job)
        if series is None:
            series = self.jobs[job] = _JobSeries()
        return series

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        finished, duration, lag, running = self._families()
        for job, series in list(self.jobs.items()):
            for status, count in list(series.finished.items()):
                finished.add_metric([job, status], count)
            duration.add_metric(
                [job],
                _cumulative(_DURATION_LE, series.duration),
                sum_value=series.duration_sum,
            )
            if any(series.lag):
                lag.add_metric([job], _cumulative(_LAG_LE, series.lag), sum_value=series.lag_sum)
            running.add_metric([job], series.running)
        yield from (finished, duration, lag, running)

    @staticmethod
    def _families() -> tuple[
        CounterMetricFamily, HistogramMetricFamily, HistogramMetricFamily, GaugeMetricFamily
    ]:
        return (
            CounterMetricFamily(
                "pgjobs_runs_finished",
                "Runs this worker finished, by job and status.",
                labels=["job", "status"],
            ),
            HistogramMetricFamily(
                "pgjobs_run_duration_seconds",
                "Duration of the runs this worker finished.",
                labels=["job"],
            ),
            HistogramMetricFamily(
                "pgjobs_schedule_lag_seconds",
                "Seconds from a run's scheduled time to its start on this worker.",
                labels=["job"],
            ),
            GaugeMetricFamily(
                "pgjobs_runs_in_progress", "Runs executing on this worker now.", labels=["job"]
            ),
        )


def _le(bound: float) -> str:
    """A bucket's ``le`` label as Prometheus writes it: ``0.25``, ``1.0``, ``+Inf``."""
    return "+Inf" if bound == math.inf else repr(float(bound))


_DURATION_LE = [_le(b) for b in (*DURATION_BUCKETS, math.inf)]
_LAG_LE = [_le(b) for b in (*LAG_BUCKETS, math.inf)]


def _cumulative(bounds: list[str], counts: list[int]) -> list[tuple[str, float]]:
    return list(zip(bounds, itertools.accumulate(counts), strict=True))


class WorkerMetrics:
    """The metrics of one worker process, in their own registry.

    The worker calls :meth:`claimed` after each claim, :meth:`run_started` and
    :meth:`run_finished` around each run (or :meth:`run_released` if it hands the run back),
    :meth:`reaped` and :meth:`retried` after reaping and finishing, all from its event loop's
    thread. Every method is cheap (no I/O); :meth:`start_http` serves ``/metrics`` from another
    thread, which only reads.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self._runs = _RunCollector()
        r.register(self._runs)
        self._claimed = Counter("pgjobs_runs_claimed", "Runs this worker claimed.", registry=r)
        self._reaped = Counter(
            "pgjobs_runs_reaped",
            "Runs with an expired lease that this worker's reaper marked abandoned.",
            registry=r,
        )
        self._retried = Counter(
            "pgjobs_retries", "Retries this worker queued, after a failure or a reap.", registry=r
        )
        self._info = Info("pgjobs_worker", "This worker process.", registry=r)
        self._server: WSGIServer | None = None

    def worker_info(
        self,
        *,
        worker_id: str,
        host: str,
        pid: int,
        version: str,
        queues: Iterable[str],
        concurrency: int,
    ) -> None:
        """Describe this worker in ``pgjobs_worker_info``."""
        self._info.info(
            {
                "worker_id": worker_id,
                "host": host,
                "pid": str(pid),
                "version": version,
                "queues": ",".join(queues),
                "concurrency": str(concurrency),
            }
        )

    def claimed(self, n: int) -> None:
        """This worker claimed ``n`` runs."""
        if n:
            self._claimed.inc(n)

    def run_started(self, job: str, lag: float | None = None) -> None:
        """A run of ``job`` started ``lag`` seconds after its scheduled time."""
        series = self._runs.series(job)
        series.running += 1
        if lag is not None:
            lag = max(0.0, lag)
            series.lag[bisect.bisect_left(LAG_BUCKETS, lag)] += 1
            series.lag_sum += lag

    def run_finished(self, job: str, status: str, duration: float) -> None:
        """A run of ``job`` ended as ``status`` after ``duration`` seconds."""
        series = self._runs.series(job)
        series.running -= 1
        series.finished[status] = series.finished.get(status, 0) + 1
        duration = max(0.0, duration)
        series.duration[bisect.bisect_left(DURATION_BUCKETS, duration)] += 1
        series.duration_sum += duration

    def run_released(self, job: str) -> None:
        """A run of ``job`` left this worker unfinished (handed back at shutdown)."""
        self._runs.series(job).running -= 1

    def reaped(self, n: int) -> None:
        """This worker's reaper marked ``n`` runs with expired leases abandoned."""
        if n:
            self._reaped.inc(n)

    def retried(self, n: int = 1) -> None:
        """This worker queued ``n`` retries."""
        if n:
            self._retried.inc(n)

    def start_http(self, port: int, host: str = METRICS_HOST) -> int:
        """Serve ``/metrics`` on ``host:port`` (loopback unless told otherwise) from a daemon
        thread; return the bound port."""
        self._server = serve_metrics(self.registry, port, host)
        return int(self._server.server_port)

    def serve_for_worker(self, port: int, host: str) -> None:
        """:meth:`start_http` for a worker starting up: a port it cannot bind is a
        :class:`ConfigError` (one line), and the address served is logged."""
        try:
            bound = self.start_http(port, host)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
            ) from exc
        log.info("serving metrics on http://%s:%d/metrics", host, bound)

    def stop_http(self) -> None:
        """Stop serving ``/metrics``."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class ClusterCollector(Collector):
    """Reads the cluster's state from the database on every scrape (see the module docstring).

    Each scrape opens one short connection, runs five read-only queries and closes it; if the
    database does not answer, the scrape reports ``pgjobs_up 0`` and nothing else. The count of
    waiting runs reads every queued run through ``run_waits`` (about half a second for 200,000
    queued runs).
    """

    def __init__(
        self, dsn: str, schema: str = "pgjobs", *, overdue_after: float = OVERDUE_AFTER
    ) -> None:
        self.dsn = dsn
        self.queries = Queries(schema)
        self.overdue_after = overdue_after
        self.connection_options = connection_options()

    def describe(self) -> list[Metric]:
        """Nothing up front: the registry must not scrape the database when it is registered."""
        return []

    def collect(self) -> Iterator[Metric]:
        """One scrape: the metrics of the module docstring, from the database's state now."""
        started = time.perf_counter()
        try:
            families = self._families()
        except psycopg.Error as exc:
            log.warning("scrape failed: %s", first_line(exc))
            families = []
        up = GaugeMetricFamily("pgjobs_up", "1 if the pgjobs database answered this scrape.")
        up.add_metric([], 1.0 if families else 0.0)
        yield up
        yield from families
        took = GaugeMetricFamily(
            "pgjobs_scrape_duration_seconds", "Time this scrape spent reading the database."
        )
        took.add_metric([], time.perf_counter() - started)
        yield took

    def _families(self) -> list[Metric]:
        with (
            psycopg.connect(
                self.dsn,
                autocommit=True,
                connect_timeout=5,
                application_name="pgjobs-metrics",
                **self.connection_options,
            ) as conn,
            conn.cursor(row_factory=dict_row) as cur,
        ):
            queues = cur.execute(self.queries["metrics_queues"]).fetchall()
            jobs = cur.execute(self.queries["metrics_jobs"]).fetchall()
            waits = cur.execute(self.queries["waiting_runs"], {"job": None}).fetchall()
            workers = cur.execute(self.queries["metrics_workers"]).fetchall()
            schedules = cur.execute(self.queries["schedule_states"], {"job": None}).fetchall()
        return [
            *_queue_families(queues),
            *self._job_families(jobs),
            _waiting_family(waits),
            _schedule_family(schedules),
            *_worker_families(workers),
        ]

    def _job_families(self, rows: list[dict[str, Any]]) -> list[Metric]:
        failed = _gauge("pgjobs_job_last_run_failed", "1 if the job's last decisive run failed.")
        success = _gauge(
            "pgjobs_job_last_success_timestamp_seconds", "When the job last succeeded (Unix time)."
        )
        overdue_s = _gauge(
            "pgjobs_job_overdue_seconds", "How far the job's next tick is past due (0 if not)."
        )
        overdue = _gauge(
            "pgjobs_job_overdue",
            f"1 if the job's next tick is more than {self.overdue_after:g}s past due.",
        )
        paused = _gauge("pgjobs_job_paused", "1 if the job is paused.")
        held = _gauge("pgjobs_job_held", "1 if a pause holds the job's runs: its own or its queue.")
        for row in rows:
            labels = [row["name"]]
            failed.add_metric(labels, float(row["last_failed"]))
            if row["last_success_at"] is not None:
                success.add_metric(labels, row["last_success_at"])
            overdue_s.add_metric(labels, row["overdue_seconds"])
            overdue.add_metric(labels, float(row["overdue_seconds"] > self.overdue_after))
            paused.add_metric(labels, float(row["paused"]))
            held.add_metric(labels, float(row["paused"] or row["queue_paused"]))
        return [failed, success, overdue_s, overdue, paused, held]


def _gauge(name: str, documentation: str, label: str = "job") -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=[label])


def _queue_families(rows: list[dict[str, Any]]) -> list[Metric]:
    depth = _gauge("pgjobs_queue_depth", "Queued runs that are due.", "queue")
    delayed = _gauge("pgjobs_queue_delayed", "Queued runs not due yet.", "queue")
    running = _gauge("pgjobs_queue_running", "Runs executing now.", "queue")
    oldest = _gauge(
        "pgjobs_queue_oldest_age_seconds", "How long the oldest due run has waited.", "queue"
    )
    paused = _gauge("pgjobs_queue_paused", "1 if the queue is paused (queues with a row).", "queue")
    for row in rows:
        labels = [row["queue"]]
        depth.add_metric(labels, row["due"])
        delayed.add_metric(labels, row["delayed"])
        running.add_metric(labels, row["running"])
        oldest.add_metric(labels, row["oldest_age_seconds"])
        if row["paused"] is not None:
            paused.add_metric(labels, float(row["paused"]))
    return [depth, delayed, running, oldest, paused]


def count_waits(rows: Iterable[dict[str, Any]], by: str) -> dict[str, dict[str, int]]:
    """The ``runs`` of ``waiting_runs`` rows summed per ``by`` (``job`` or ``queue``) and
    reason; every reason of :data:`WAIT_REASONS` is there, 0 when no run waits for it."""
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        per = counts.setdefault(row[by], dict.fromkeys(WAIT_REASONS, 0))
        per[row["waiting_for"]] = per.get(row["waiting_for"], 0) + row["runs"]
    return counts


def _waiting_family(rows: list[dict[str, Any]]) -> Metric:
    waiting = GaugeMetricFamily(
        "pgjobs_runs_waiting",
        "Due queued runs by what they wait for (run_waits: a pause, a limit, a worker).",
        labels=["job", "reason"],
    )
    for job, reasons in count_waits(rows, "job").items():
        for reason, runs in reasons.items():
            if runs and reason != "scheduled":
                waiting.add_metric([job, reason], runs)
    return waiting


def _schedule_family(rows: list[dict[str, Any]]) -> Metric:
    schedules = GaugeMetricFamily(
        "pgjobs_schedules",
        "Schedules by job, origin (code, profile, runtime) and state "
        "(error, disabled, paused, job paused, ticking).",
        labels=["job", "origin", "state"],
    )
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for row in rows:
        per = counts.setdefault((row["job"], row["origin"]), dict.fromkeys(SCHEDULE_STATES, 0))
        per[row["state"]] += 1
    for (job, origin), states in counts.items():
        for state, n in states.items():
            schedules.add_metric([job, origin, state], n)
    return schedules


NO_EXTRA_SCHEDULES = {"more_schedules": 0, "schedules_in_error": 0}
"""What :func:`count_extra_schedules` says of a job without schedules."""


def count_extra_schedules(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per job of the ``schedule_states`` rows: ``more_schedules`` (how many it has besides its
    own, named ``default``: the profile's further ones and those added at runtime) and
    ``schedules_in_error`` (of all of them); a job without schedules is left out."""
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        per = counts.setdefault(row["job"], dict(NO_EXTRA_SCHEDULES))
        per["more_schedules"] += row["name"] != "default"
        per["schedules_in_error"] += row["state"] == "error"
    return counts


def _worker_families(rows: list[dict[str, Any]]) -> list[Metric]:
    counts = {state: 0 for state in ("running", "stopping", "stopped", "dead")}
    counts.update({row["state"]: row["workers"] for row in rows})
    by_state = _gauge("pgjobs_workers", "Worker rows by state.", "state")
    for state, count in counts.items():
        by_state.add_metric([state], count)
    alive = GaugeMetricFamily(
        "pgjobs_workers_alive", "Workers whose heartbeat is current (state running)."
    )
    alive.add_metric([], counts["running"])
    return [by_state, alive]


METRICS_TIMEOUT = 10.0
"""Seconds a scraper's connection may stay silent before ``/metrics`` closes it."""


class _MetricsHandler(WSGIRequestHandler):
    """prometheus_client's handler, silent, with a timeout on the socket: a client that opens
    connections and sends nothing cannot keep a thread each for ever."""

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(METRICS_TIMEOUT)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _MetricsServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A scraper that timed out or went away is not worth a traceback on stderr.
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            log.debug("metrics connection from %s ended: %s", client_address[0], error)
        else:
            log.exception("error serving metrics to %s", client_address[0])


class _MetricsServer6(_MetricsServer):
    address_family = socket.AF_INET6


def serve_metrics(registry: CollectorRegistry, port: int, host: str = METRICS_HOST) -> WSGIServer:
    """Serve ``registry`` on ``http://host:port/metrics`` (loopback unless told otherwise) from
    a daemon thread; the server (``server_port`` is the bound port, ``shutdown()`` stops it).
    Raises OSError if it cannot bind."""
    server_class = _MetricsServer6 if ":" in host else _MetricsServer
    server = make_server(host, port, make_wsgi_app(registry), server_class, _MetricsHandler)
    threading.Thread(target=server.serve_forever, name="pgjobs-metrics", daemon=True).start()
    return server


def cluster_registry(
    dsn: str, schema: str = "pgjobs", *, overdue_after: float = OVERDUE_AFTER
) -> CollectorRegistry:
    """A registry holding only a :class:`ClusterCollector` for ``dsn`` and ``schema``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(dsn, schema, overdue_after=overdue_after))
    return registry
