"""Chaos scenarios: real worker processes against a PostgreSQL the test owns, through faults.

Each scenario is a plain function ``scenario(cluster, log_dir, scale) -> RoundResult`` on a
migrated :class:`~tests.pgcluster.PgCluster` prepared by :func:`prepare`; tests/test_chaos.py
runs a reduced set in CI, and ``python -m tests.chaos --rounds N`` (``make chaos``) runs the full
set N times and prints a table per fault.

A round: 3 workers (``--lease 5 -c 10``, app tests/worker_apps/chaos.py) work through thousands of
enqueued 60 ms runs while two jobs tick every second (one of them 2.5 s long, ``overlap=skip``),
the short one also by a runtime schedule (``pgjobs.schedule``) at the same seconds;
the fault strikes while runs are in flight; then the round checks, by SQL against the cluster,
what SPEC §9 promises:

- every enqueued run ends ``succeeded`` (its job allows 25 attempts);
- no run is left ``running`` or ``queued`` past a bounded settle time;
- no tick (of a job's own schedule or of the runtime one) executes twice (``chaos_effects``
  records every execution), no run row executes twice;
- every worker process is alive and claims again: each finishes one of a batch of probe runs
  enqueued after the fault, and stops cleanly on SIGTERM.

It reports the extra executions of enqueued work (executions minus enqueued runs: the cost of
at-least-once), the time from "server up" to "first run finished", and failed starts.
"""

from __future__ import annotations

import argparse
import fcntl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from pgjobs import EnqueueRequest, enqueue_many_sync
from tests.pgcluster import PgCluster, pg_cluster
from tests.tcpproxy import TcpProxy
from tests.worker_apps.chaos import EFFECTS_DDL, SLOW, TICK, WORK
from tests.workers import WorkerProcess, Workers

APP = "tests.worker_apps.chaos:extension"
LEASE = 5.0
WORKER_ARGS = ("--lease", str(LEASE), "-c", "10", "--poll-interval", "1", "--grace", "5")
REPLICAS = 3
JOBS = (WORK, TICK, SLOW)
# A run of these jobs lasts at most 2.5 s: running or due this long ago, it is stuck.
STUCK_AFTER = 15


@dataclass(frozen=True)
class Scale:
    """How big a round is; :data:`FULL` for ``make chaos``, :data:`CI` for the test suite."""

    enqueued: int = 3000
    probe: int = 1000
    storm_workers: int = 8
    terminate_for: float = 10.0
    outage: float = 30.0
    settle: float = 60.0


FULL = Scale()
CI = Scale(enqueued=600, probe=300, terminate_for=6.0, settle=45.0)


@dataclass
class RoundResult:
    fault: str
    failures: list[str] = field(default_factory=list)
    #: Executions of enqueued work minus enqueued runs; None when the round did not settle.
    extra_executions: int | None = None
    up_to_first_finish: float | None = None
    failed_starts: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    def report(self) -> str:
        return f"{self.fault}: " + "\n\n".join(self.failures)


# -- the database side ------------------------------------------------------------------------


def sql(dsn: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        named = len(params) == 1 and isinstance(params[0], dict)
        cur = conn.execute(statement, params[0] if named else (params or None))
        return cur.fetchall() if cur.description is not None else []


def one(dsn: str, statement: str, *params: Any) -> Any:
    result = sql(dsn, statement, *params)
    return result[0][0] if result else None


def db_now(dsn: str) -> datetime:
    value: datetime = one(dsn, "SELECT clock_timestamp()")
    return value


def prepare(cluster: PgCluster, log_dir: Path) -> None:
    """The effects table, the chaos jobs' rows (a worker registers them), so that runs can be
    enqueued before any worker of a round starts, and the runtime schedule of the tick job."""
    sql(cluster.dsn, EFFECTS_DDL)
    workers = Workers(cluster.dsn, log_dir)
    try:
        proc = workers.start([], *WORKER_ARGS, name="prepare", app=APP)
        _wait(lambda: _registered(cluster.dsn, [proc]), 60, "the chaos jobs to register")
        if proc.stop() != 0:
            raise AssertionError(f"the preparing worker did not stop cleanly:\n{proc.log()}")
        sql(cluster.dsn, "SELECT pgjobs.schedule(%s, '* * * * * *', name => 'runtime')", TICK)
    finally:
        workers.kill_all()


def _reset(dsn: str) -> None:
    sql(
        dsn,
        "TRUNCATE pgjobs.runs, pgjobs.run_locks, pgjobs.run_dependencies, public.chaos_effects",
    )
    sql(dsn, "DELETE FROM pgjobs.workers")


def enqueue(dsn: str, count: int, payload: dict[str, Any] | None = None) -> None:
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        enqueue_many_sync(conn, [EnqueueRequest(WORK, payload) for _ in range(count)])
        conn.commit()


def _registered(dsn: str, procs: list[WorkerProcess]) -> bool:
    for p in procs:
        if p.proc.poll() is not None:
            raise _Exited(p)
    count = one(
        dsn,
        "SELECT count(*) FROM pgjobs.workers WHERE id = ANY(%s) AND state = 'running'",
        [p.id for p in procs],
    )
    return bool(count == len(procs))


class _Exited(AssertionError):
    def __init__(self, proc: WorkerProcess) -> None:
        super().__init__(f"worker {proc.id} exited {proc.proc.returncode}")
        self.proc = proc


def _wait(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.1,
    procs: list[WorkerProcess] | None = None,
) -> Any:
    """Poll ``predicate`` until truthy; a database that refuses connections counts as not yet.
    Gives up at once when every one of ``procs`` has exited: nothing will change any more."""
    deadline = time.monotonic() + timeout
    while True:
        if procs and all(p.proc.poll() is not None for p in procs):
            raise AssertionError(f"every worker exited while waiting for {what}")
        try:
            value = predicate()
        except psycopg.OperationalError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# Every enqueued run with the attempts that retried it (retry_of is the previous attempt).
_CHAINS = """
WITH RECURSIVE chain AS (
    SELECT id AS root, id, status FROM pgjobs.runs WHERE job = %(work)s AND trigger = 'enqueue'
    UNION ALL
    SELECT c.root, r.id, r.status FROM pgjobs.runs r JOIN chain c ON r.retry_of = c.id
), roots AS (
    SELECT root, bool_or(status = 'succeeded') AS succeeded, count(*) AS attempts
    FROM chain GROUP BY root
)
"""

_UNFINISHED = (
    _CHAINS
    + """
SELECT count(*) FILTER (WHERE NOT succeeded), count(*) FROM roots
"""
)

_STUCK = """
SELECT id, job, trigger, status, attempt, worker_id, started_at, lease_expires_at, scheduled_for
FROM pgjobs.runs
WHERE job = ANY(%(jobs)s)
  AND ((status = 'running' AND started_at < now() - make_interval(secs => %(after)s))
       OR (status = 'queued' AND scheduled_for < now() - make_interval(secs => %(after)s)))
ORDER BY id LIMIT 10
"""

_STATUSES = """
SELECT job, trigger, status, count(*) FROM pgjobs.runs WHERE job = ANY(%(jobs)s)
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""

# Ticks (job, scheduled_for) that executed more than once, counting every attempt.
_TICKS_TWICE = """
SELECT r.job || coalesce(' (' || r.schedule || ')', ''), r.scheduled_for, count(*),
       array_agg(DISTINCT e.worker_id)
FROM public.chaos_effects e JOIN pgjobs.runs r ON r.id = e.run_id
WHERE r.trigger = 'schedule'
GROUP BY 1, 2 HAVING count(*) > 1 ORDER BY 2 LIMIT 10
"""

_RUNTIME_TICKED = """
SELECT EXISTS (SELECT 1 FROM public.chaos_effects e JOIN pgjobs.runs r ON r.id = e.run_id
               WHERE r.schedule = 'runtime')
"""

_RUNS_TWICE = """
SELECT run_id, count(*), array_agg(worker_id ORDER BY id)
FROM public.chaos_effects GROUP BY 1 HAVING count(*) > 1 ORDER BY 1 LIMIT 10
"""

_EXTRA = (
    _CHAINS
    + """
SELECT (SELECT count(*) FROM public.chaos_effects WHERE job = %(work)s)
       - (SELECT count(*) FROM roots)
"""
)


# -- one round --------------------------------------------------------------------------------


class Round:
    """One fault's round: fresh tables, its workers (logs under ``log_dir``), its checks."""

    def __init__(
        self,
        cluster: PgCluster,
        fault: str,
        log_dir: Path,
        scale: Scale,
        *,
        worker_dsn: str | None = None,
    ) -> None:
        self.cluster = cluster
        self.dsn = cluster.dsn
        self.scale = scale
        self.result = RoundResult(fault)
        self.log_dir = log_dir / f"{fault}-{time.strftime('%H%M%S')}-{time.monotonic_ns()}"
        self.log_dir.mkdir(parents=True)
        self.workers = Workers(worker_dsn or cluster.dsn, self.log_dir)
        self.procs: list[WorkerProcess] = []
        self._started = time.monotonic()
        _reset(self.dsn)

    def start_workers(self, count: int, env: dict[str, str] | None = None) -> list[WorkerProcess]:
        fault = self.result.fault
        procs = [
            self.workers.start(
                [], *WORKER_ARGS, name=f"{fault}-w{len(self.procs) + i + 1}", env=env, app=APP
            )
            for i in range(count)
        ]
        self.procs.extend(procs)
        return procs

    def wait_registered(self, procs: list[WorkerProcess], timeout: float = 60) -> None:
        _wait(lambda: _registered(self.dsn, procs), timeout, "the workers to register")

    def wait_succeeded(self, count: int, timeout: float = 60) -> None:
        _wait(
            lambda: one(
                self.dsn,
                "SELECT count(*) >= %s FROM pgjobs.runs WHERE job = %s AND status = 'succeeded'",
                count,
                WORK,
            ),
            timeout,
            f"{count} runs to succeed before the fault",
        )

    def fail(self, message: str) -> None:
        self.result.failures.append(message)

    def run_with_queue(self, fault: Callable[[Round], None]) -> RoundResult:
        """The common round: workers up, work enqueued and in flight, ``fault``, then checks
        from the moment the database serves again."""
        procs = self.start_workers(REPLICAS)
        self.wait_registered(procs)
        enqueue(self.dsn, self.scale.enqueued)
        self.wait_succeeded(self.scale.enqueued // 10)
        fault(self)
        return self.verify(self.server_up())

    def server_up(self) -> datetime:
        """The database clock once the harness can connect again: "server up"."""
        self.cluster.wait_ready()
        return db_now(self.dsn)

    # -- checks ---------------------------------------------------------------------------

    def verify(self, up: datetime) -> RoundResult:
        try:
            self._first_finish(up)
            settled = self._settle()
            self._probe()
            if settled:  # once more, for the probe runs
                settled = self._settle()
            self._effects(settled)
        except AssertionError as exc:
            self.fail(str(exc))
        self._alive()
        self._stop_all()
        self.result.seconds = time.monotonic() - self._started
        if self.result.failures:
            self.fail(f"worker logs: {self.log_dir}\n{self.log_excerpt()}")
        return self.result

    def _first_finish(self, up: datetime) -> None:
        try:
            # A one-element list: a first finish 0.0 s after "up" is still an answer.
            (self.result.up_to_first_finish,) = _wait(
                lambda: [
                    value
                    for (value,) in sql(
                        self.dsn,
                        "SELECT extract(epoch FROM min(finished_at) - %s)::float FROM pgjobs.runs"
                        " WHERE status = 'succeeded' AND finished_at >= %s AND job = ANY(%s)",
                        up,
                        up,
                        list(JOBS),
                    )
                    if value is not None
                ],
                self.scale.settle,
                "a run to finish after the server was up",
                procs=self.procs,
            )
        except AssertionError as exc:
            self.fail(f"no run finished within {self.scale.settle:.0f}s of server up ({exc})")

    def _settle(self) -> bool:
        """Wait until every enqueued run succeeded and no run is stuck; False if it never was."""
        params = {"work": WORK, "jobs": list(JOBS), "after": STUCK_AFTER}

        def settled() -> bool:
            unfinished, _ = sql(self.dsn, _UNFINISHED, params)[0]
            return unfinished == 0 and not sql(self.dsn, _STUCK, params)

        try:
            _wait(settled, self.scale.settle, "the runs to settle", interval=0.5, procs=self.procs)
        except AssertionError as exc:
            unfinished, total = sql(self.dsn, _UNFINISHED, params)[0]
            stuck = sql(self.dsn, _STUCK, params)
            statuses = sql(self.dsn, _STATUSES, params)
            lines = [
                f"not settled {self.scale.settle:.0f}s after the fault: {unfinished} of {total}"
                f" enqueued runs never succeeded; {len(stuck)}+ runs stuck running/queued for"
                f" over {STUCK_AFTER}s ({exc})",
                "runs by job/trigger/status: "
                + ", ".join(f"{j}/{t}/{s}={n}" for j, t, s, n in statuses),
            ]
            lines += [
                "  stuck: id={} job={} trigger={} status={} attempt={} worker={} started={}"
                " lease_expires={} scheduled_for={}".format(*row)
                for row in stuck
            ]
            self.fail("\n".join(lines))
            return False
        return True

    def _probe(self) -> None:
        """Every worker claims again: each finishes one of a batch enqueued now."""
        start = db_now(self.dsn)
        enqueue(self.dsn, self.scale.probe, {"probe": True})
        ids = [p.id for p in self.procs]

        def idle() -> list[str]:
            done = {
                row[0]
                for row in sql(
                    self.dsn,
                    "SELECT DISTINCT worker_id FROM pgjobs.runs"
                    " WHERE status = 'succeeded' AND finished_at >= %s AND worker_id = ANY(%s)",
                    start,
                    ids,
                )
            }
            return [i for i in ids if i not in done]

        try:
            _wait(
                lambda: not idle(),
                30,
                "every worker to finish a probe run",
                interval=0.2,
                procs=self.procs,
            )
        except AssertionError:
            self.fail(
                f"workers that finished none of {self.scale.probe} runs enqueued after the"
                f" fault (claiming stopped): {idle()}"
            )

    def _effects(self, settled: bool) -> None:
        params = {"work": WORK}
        ticks = sql(self.dsn, _TICKS_TWICE)
        if ticks:
            self.fail(
                "ticks executed more than once: "
                + "; ".join(f"{j} {s.isoformat()} x{n} on {w}" for j, s, n, w in ticks)
            )
        if settled and not sql(self.dsn, _RUNTIME_TICKED)[0][0]:
            self.fail("the runtime schedule executed no tick in the round")
        twice = sql(self.dsn, _RUNS_TWICE)
        if twice:
            self.fail(
                "run rows executed more than once (one attempt, two executions): "
                + "; ".join(f"run {r} x{n} on {w}" for r, n, w in twice)
            )
        if settled:
            self.result.extra_executions = int(sql(self.dsn, _EXTRA, params)[0][0])

    def _alive(self) -> None:
        for p in self.procs:
            if p.proc.poll() is not None:
                self.result.failed_starts += 1
                self.fail(f"worker {p.id} exited with {p.proc.returncode} during the round")

    def _stop_all(self) -> None:
        for p in self.procs:
            if p.proc.poll() is not None:
                continue
            try:
                code = p.stop(timeout=20)
            except AssertionError:
                self.fail(f"worker {p.id} did not stop within 20s of SIGTERM after the fault")
                continue
            if code != 0:
                self.fail(f"worker {p.id} exited {code} on SIGTERM after the fault")

    def close(self) -> None:
        self.workers.kill_all()

    def log_excerpt(self, per_worker: int = 12) -> str:
        """The lines of each worker's log that say what went wrong."""
        keys = ("Traceback", "Error", "ERROR", "WARNING", "exited", "deadlock")
        out = []
        for p in self.procs:
            text = p.log_path.read_text(errors="replace").splitlines()
            hits = [line for line in text if any(k in line for k in keys)]
            if hits:
                shown = hits[:per_worker]
                if len(hits) > per_worker:
                    shown.append(f"... {len(hits) - per_worker} more")
                out.append(f"--- {p.id} ({p.log_path.name}) ---\n" + "\n".join(shown))
        return "\n".join(out)


@contextmanager
def _round(
    cluster: PgCluster, fault: str, log_dir: Path, scale: Scale, **kwargs: Any
) -> Iterator[Round]:
    r = Round(cluster, fault, log_dir, scale, **kwargs)
    try:
        yield r
    except (AssertionError, psycopg.Error) as exc:  # the round could not even reach its fault
        r.fail(f"{exc}\nworker logs: {r.log_dir}\n{r.log_excerpt()}")
    finally:
        r.close()
        if not r.result.seconds:
            r.result.seconds = time.monotonic() - r._started


# -- the faults -------------------------------------------------------------------------------


def fast_restart(cluster: PgCluster, log_dir: Path, scale: Scale) -> RoundResult:
    """``pg_ctl restart -m fast`` while runs are in flight."""
    with _round(cluster, "fast-restart", log_dir, scale) as r:
        r.run_with_queue(lambda r: cluster.restart("fast"))
    return r.result


def crash(cluster: PgCluster, log_dir: Path, scale: Scale) -> RoundResult:
    """``pg_ctl stop -m immediate`` (a crash: recovery at the next start), started 2 s later."""

    def fault(r: Round) -> None:
        cluster.stop("immediate")
        time.sleep(2)  # the length of the outage, not a wait for something
        cluster.start()

    with _round(cluster, "crash", log_dir, scale) as r:
        r.run_with_queue(fault)
    return r.result


def restart_at_startup(cluster: PgCluster, log_dir: Path, scale: Scale) -> RoundResult:
    """A fast restart while the workers start: after the first one connected, before all of
    them registered. The work is enqueued before they start."""
    with _round(cluster, "restart-at-startup", log_dir, scale) as r:
        enqueue(r.dsn, scale.enqueued)
        procs = r.start_workers(REPLICAS)
        _wait(
            lambda: one(
                r.dsn,
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
            ),
            60,
            "a worker to connect",
            interval=0.01,
        )
        registered = one(r.dsn, "SELECT count(*) FROM pgjobs.workers WHERE state = 'running'")
        cluster.restart("fast")
        up = r.server_up()
        if registered == len(procs):
            r.fail("the restart came after every worker had registered: not a start-up fault")
        try:
            r.wait_registered(procs, timeout=scale.settle)
        except AssertionError as exc:  # an exit is counted as a failed start by verify
            r.fail(f"start-up did not survive the restart: {exc}")
        r.verify(up)
    return r.result


def terminate_backends(cluster: PgCluster, log_dir: Path, scale: Scale) -> RoundResult:
    """``pg_terminate_backend`` of every client backend, every second, for 10 s."""

    def fault(r: Round) -> None:
        until = time.monotonic() + scale.terminate_for
        while time.monotonic() < until:
            cluster.terminate_all_backends()
            time.sleep(1)  # the fault's rhythm

    with _round(cluster, "terminate-backends", log_dir, scale) as r:
        r.run_with_queue(fault)
    return r.result


def outage(cluster: PgCluster, log_dir: Path, scale: Scale) -> RoundResult:
    """The database down (fast stop) for longer than the lease: 30 s in the full run."""

    def fault(r: Round) -> None:
        cluster.stop("fast")
        time.sleep(scale.outage)  # the length of the outage
        cluster.start()

    with _round(cluster, "outage", log_dir, scale) as r:
        r.run_with_queue(fault)
    return r.result


def _black_hole(cluster: PgCluster, log_dir: Path, scale: Scale, *, thaw: bool) -> RoundResult:
    proxy = TcpProxy(cluster.port)
    via = cluster.dsn_via(proxy.port)
    fault_name = "black-hole" if thaw else "black-hole-stale"
    try:
        with _round(cluster, fault_name, log_dir, scale, worker_dsn=via) as r:

            def fault(r: Round) -> None:
                proxy.black_hole()
                time.sleep(LEASE + 3)  # the length of the partition
                proxy.pass_through(thaw=thaw)

            r.run_with_queue(fault)
    finally:
        proxy.close()
    return r.result


def black_hole(cluster: PgCluster, log_dir: Path, scale: Scale) -> RoundResult:
    """The workers reach the database through a proxy that black-holes every connection for
    longer than the lease (lease + 3 s), then passes again: the frozen connections go on."""
    return _black_hole(cluster, log_dir, scale, thaw=True)


def black_hole_stale(cluster: PgCluster, log_dir: Path, scale: Scale) -> RoundResult:
    """As :func:`black_hole`, but the connections open during the black hole stay dead for
    good (half-open: nothing closes them); only new connections pass. The workers must notice
    by their own timeouts. The proxy's kernel answers TCP keepalives, so only timeouts above TCP
    detect it here."""
    return _black_hole(cluster, log_dir, scale, thaw=False)


def start_storm(cluster: PgCluster, log_dir: Path, scale: Scale) -> RoundResult:
    """``storm_workers`` workers released at the same instant (a lock they all wait on), the
    jobs' rows already present. A failed start: an exit, a traceback, or no registration."""
    with _round(cluster, "start-storm", log_dir, scale) as r:
        gate_dir = Path(tempfile.mkdtemp(prefix="gate-", dir=r.log_dir))
        with (gate_dir / "gate").open("wb") as gate:
            fcntl.flock(gate, fcntl.LOCK_EX)
            procs = r.start_workers(scale.storm_workers, env={"PGJOBS_CHAOS_GATE": str(gate_dir)})

            def all_ready() -> bool:
                for p in procs:
                    if p.proc.poll() is not None:
                        raise _Exited(p)
                return len(list(gate_dir.glob("ready-*"))) == len(procs)

            _wait(all_ready, 60, "the workers to reach the gate", interval=0.02)
            time.sleep(0.1)  # let the last one that marked itself ready block on the lock
            up = db_now(r.dsn)
            fcntl.flock(gate, fcntl.LOCK_UN)

        def started(p: WorkerProcess) -> bool:
            return one(
                r.dsn,
                "SELECT count(*) FROM pgjobs.workers WHERE id = %s AND state = 'running'",
                p.id,
            ) == 1 or (p.proc.poll() is not None)

        with suppress(AssertionError):
            _wait(lambda: all(started(p) for p in procs), 30, "the storm's workers to start")
        failed = []
        for p in procs:
            log = p.log_path.read_text(errors="replace")
            if p.proc.poll() is not None:
                failed.append(f"{p.id} exited {p.proc.returncode}")
            elif "Traceback" in log:
                failed.append(f"{p.id} logged a traceback")
            elif not started(p):
                failed.append(f"{p.id} did not register within 30s")
        r.result.failed_starts = len(failed)
        if failed:
            r.fail(f"failed starts out of {len(procs)}: " + "; ".join(failed))
        r.result.up_to_first_finish = None
        r.procs = [p for p in procs if p.proc.poll() is None]
        r.verify(up)
        r.result.failed_starts = len(failed)
    return r.result


Scenario = Callable[[PgCluster, Path, Scale], RoundResult]

SCENARIOS: dict[str, Scenario] = {
    "fast-restart": fast_restart,
    "crash": crash,
    "restart-at-startup": restart_at_startup,
    "terminate-backends": terminate_backends,
    "start-storm": start_storm,
    "black-hole": black_hole,
    "black-hole-stale": black_hole_stale,
    "outage": outage,
}


# -- the runner -------------------------------------------------------------------------------


def _table(results: dict[str, list[RoundResult]]) -> str:
    header = (
        "fault",
        "rounds passed",
        "extra executions (total/max)",
        "up -> first run finished s (median/max)",
        "failed starts",
    )
    lines = [header]
    for fault, rounds in results.items():
        passed = sum(r.ok for r in rounds)
        extra = [r.extra_executions for r in rounds if r.extra_executions is not None]
        times = [r.up_to_first_finish for r in rounds if r.up_to_first_finish is not None]
        timing = f"{statistics.median(times):.2f} / {max(times):.2f}" if times else "-"
        missing = len(rounds) - len(times)
        if missing and fault != "start-storm":
            timing += f" ({missing} never)"
        lines.append(
            (
                fault,
                f"{passed}/{len(rounds)}",
                f"{sum(extra)} / {max(extra)}" if extra else "-",
                timing,
                str(sum(r.failed_starts for r in rounds)),
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = []
    for n, row in enumerate(lines):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--rounds", type=int, default=20, help="rounds of each fault")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated faults to run: " + ", ".join(SCENARIOS),
    )
    parser.add_argument("--ci", action="store_true", help="the reduced sizes of the test suite")
    parser.add_argument("--log-dir", type=Path, help="where worker logs go (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    only = [name.strip() for name in args.only.split(",") if name.strip()] or list(SCENARIOS)
    unknown = [name for name in only if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown fault(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    scale = CI if args.ci else FULL
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="pgjobs-chaos-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"worker logs under {log_dir}", flush=True)
    results: dict[str, list[RoundResult]] = {name: [] for name in only}
    with pg_cluster() as cluster:
        prepare(cluster, log_dir)
        for name in only:
            for n in range(args.rounds):
                result = SCENARIOS[name](cluster, log_dir, scale)
                results[name].append(result)
                status = "ok" if result.ok else "FAILED"
                print(f"{name} round {n + 1}/{args.rounds}: {status} ({result.seconds:.0f}s)")
                if not result.ok:
                    print(result.report(), flush=True)
    print()
    print(_table(results))
    return 0 if all(r.ok for rounds in results.values() for r in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
