"""Failover on a real HA engine: the primary's postmaster killed mid-drain, the sync standby
promoted, and the same worker processes carrying on against it.

A round, on a :class:`~tests.hacluster.HaCluster` (Patroni and etcd, two PostgreSQL 15 nodes in
synchronous replication), with the chaos jobs of tests/worker_apps/chaos.py:

- 3 workers (``--lease 5 -c 10``) and a producer process connect with the multi-host DSN and
  ``target_session_attrs=read-write``; the producer enqueues one run per transaction
  (:func:`pgjobs.enqueue`, with a ``dedup_key``), records the id of every enqueue that
  returned, and retries, on a new connection, an enqueue that failed or took over 5 s;
- a backlog of enqueued 60 ms runs drains while two jobs tick every second (one of them by a
  runtime schedule too);
- once a tenth of the backlog succeeded, the primary's postmaster gets SIGKILL and Patroni
  promotes the sync standby.

Then, with SQL on the new primary, it checks what failover must keep (a :class:`chaos.Round`
checks the rest, as after any chaos fault):

- no enqueue that returned is lost (the backlog's ids and each id the producer recorded);
- no tick has two runs (the runs table: one run per job, schedule and ``scheduled_for``) and
  none executed twice (``chaos_effects``); no run row executed twice;
- nothing is stranded: every enqueued run succeeds (with its retries), no run stays ``running``
  or ``queued``; no run of a live worker was reaped for the outage (``LeaseExpired``);
- the workers resume without a restart: the same processes (the pids the ``workers`` rows
  hold) reconnect, each finishes runs enqueued after the failover, and each stops cleanly.

It measures, and prints, the seconds from the kill to the first run finished on the new primary
(and to the first write the harness could make there), the enqueues that failed during the
outage and were retried by the producer, and how long the producer saw errors.

Two faults by default: ``postmaster`` (the primary's postmaster alone: Patroni fails over at its
next loop, in about 3 s) and ``host`` (its Patroni too, as when the host is lost: the standby
waits for the leader key to expire, about 20 s, an outage four times the workers' lease); a third,
``silent-host``, is opt-in (see :data:`FAULTS`).
``python -m tests.failover --rounds N`` (``make failover``) runs N rounds of each on one cluster,
each killing whichever node is the primary then (the old one rejoins as the sync standby in
between), and prints a table per fault; tests/test_failover.py runs one ``postmaster`` round at
the CI scale.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from pgjobs import EnqueueRequest, enqueue, enqueue_many_sync
from tests import chaos
from tests.hacluster import HaCluster, HaNode, ha_cluster
from tests.tcpproxy import TcpProxy
from tests.worker_apps.chaos import WORK

ROOT = Path(__file__).resolve().parent.parent
PRODUCER_RATE = 40.0
"""Enqueues a second the producer aims at (one transaction each)."""
PRODUCER_DEADLINE = 5.0
"""Seconds the producer gives one enqueue (connect, insert, commit) before it tries again."""


@dataclass(frozen=True)
class Scale:
    """How big a round is: :data:`FULL` for ``make failover``, :data:`CI` for the test suite."""

    chaos: chaos.Scale
    produce_after: float  # seconds the producer goes on once the new primary takes writes


FULL = Scale(chaos.FULL, produce_after=5.0)
CI = Scale(chaos.CI, produce_after=3.0)


@dataclass
class ProducerLog:
    """What the producer recorded: the ids that returned, by sequence number, and its errors
    (wall-clock time, sequence number, first line)."""

    ids: dict[int, int] = field(default_factory=dict)
    errors: list[tuple[float, int, str]] = field(default_factory=list)
    ok_times: list[float] = field(default_factory=list)

    @property
    def retried(self) -> int:
        """Enqueues that failed at least once and then returned."""
        return len({seq for _, seq, _ in self.errors} & self.ids.keys())

    def error_window(self) -> float | None:
        """Seconds from the first failed enqueue to the next one that returned after the last
        failure: how long the producer could not enqueue."""
        if not self.errors:
            return None
        first, last = self.errors[0][0], self.errors[-1][0]
        after = [t for t in self.ok_times if t > last]
        return (after[0] if after else last) - first


@dataclass
class FailoverResult:
    round: chaos.RoundResult
    killed: str = ""
    promoted: str = ""
    in_flight: tuple[int, ...] = (0, 0)  # enqueued runs queued and running at the kill
    kill_to_writable: float | None = None
    #: Seconds from the kill to the last commit the new primary replayed from the old one.
    old_timeline_after_kill: float = 0.0
    enqueued_ok: int = 0
    failed_attempts: int = 0
    retried: int = 0
    error_window: float | None = None
    duplicates: int | None = None
    live_reaped: int | None = None
    #: How the executions of enqueued work that were retried ended (the extra executions).
    wasted: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.round.ok

    @property
    def kill_to_first_finish(self) -> float | None:
        """Seconds from the kill to the first run finished on the new primary."""
        after = self.round.up_to_first_finish  # counted from the end of the old timeline
        return None if after is None else self.old_timeline_after_kill + after

    def summary(self) -> str:
        def s(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f}s"

        queued, running = self.in_flight
        return (
            f"{self.killed} -> {self.promoted} (killed with {queued} queued, {running} running):"
            f" kill -> writable {s(self.kill_to_writable)},"
            f" kill -> first run finished {s(self.kill_to_first_finish)};"
            f" producer: {self.enqueued_ok} enqueued, {self.failed_attempts} failed attempts,"
            f" {self.retried} enqueues retried, errors for {s(self.error_window)},"
            f" {self.duplicates} duplicated; extra executions {self.round.extra_executions},"
            f" runs of live workers reaped {self.live_reaped}"
            + (f" (retried after: {'; '.join(self.wasted)})" if self.wasted else "")
        )


# -- the producer -------------------------------------------------------------------------------


def produce(dsn: str, out: Path, rate: float) -> int:
    """The producer process: enqueue one run per transaction until SIGTERM, writing a line per
    outcome to ``out``: ``ok SEQ ID TIME`` once the commit returned, ``err SEQ TIME REASON``
    when it failed (then the same enqueue is tried again on a new connection)."""
    asyncio.run(_produce(dsn, out, rate))
    return 0


async def _produce(dsn: str, out: Path, rate: float) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    conn: psycopg.AsyncConnection[Any] | None = None
    seq = 0
    with out.open("a", buffering=1) as log:
        while not stop.is_set():
            try:
                # An application's own deadline: a host that went silent answers nothing, and
                # without one an enqueue waits for TCP to give up, many minutes later.
                async with asyncio.timeout(PRODUCER_DEADLINE):
                    if conn is None:
                        conn = await psycopg.AsyncConnection.connect(dsn, connect_timeout=2)
                    run_id = await enqueue(conn, WORK, {"seq": seq}, dedup_key=f"producer-{seq}")
                    await conn.commit()
            except (psycopg.Error, TimeoutError) as exc:
                reason = " ".join(str(exc).split())[:200] or type(exc).__name__
                log.write(f"err {seq} {time.time():.6f} {reason}\n")
                if conn is not None:
                    await conn.close()
                conn = None
                await asyncio.sleep(0.05)
                continue
            log.write(f"ok {seq} {run_id} {time.time():.6f}\n")
            seq += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1 / rate)
    if conn is not None:
        await conn.close()


class Producer:
    """The producer as a process of its own (``python -m tests.failover --produce``)."""

    def __init__(self, dsn: str, log_dir: Path, rate: float = PRODUCER_RATE) -> None:
        self.out = log_dir / "producer.txt"
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "tests.failover", "--produce", dsn,
                "--out", str(self.out), "--rate", str(rate),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stderr=(log_dir / "producer.err").open("wb"),
        )  # fmt: skip

    def read(self) -> ProducerLog:
        log = ProducerLog()
        if not self.out.exists():
            return log
        for line in self.out.read_text().splitlines():
            kind, seq, rest = line.split(" ", 2)
            if kind == "ok":
                run_id, at = rest.split(" ", 1)
                log.ids[int(seq)] = int(run_id)
                log.ok_times.append(float(at))
            elif kind == "err":
                at, reason = rest.split(" ", 1)
                log.errors.append((float(at), int(seq), reason))
        return log

    def stop(self) -> ProducerLog:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.read()


# -- the checks ---------------------------------------------------------------------------------

# A tick (job, schedule, scheduled time) with more than one run: the unique key forbids it.
_TICK_RUNS_TWICE = """
SELECT job, coalesce(schedule, ''), scheduled_for, count(*) FROM pgjobs.runs
WHERE trigger = 'schedule'
GROUP BY 1, 2, 3 HAVING count(*) > 1 ORDER BY 3 LIMIT 10
"""

# Runs reaped for an expired lease while their worker lived on (every worker of the round does).
_LIVE_REAPED = """
SELECT count(*) FROM pgjobs.runs
WHERE error_type = 'LeaseExpired' AND worker_id = ANY(%s)
"""

# The backlog at the kill: enqueued runs still queued, and running.
_IN_FLIGHT = """
SELECT count(*) FILTER (WHERE status = 'queued'), count(*) FILTER (WHERE status = 'running')
FROM pgjobs.runs WHERE job = %s
"""

_DUPLICATES = """
SELECT count(*) - count(DISTINCT payload->>'seq') FROM pgjobs.runs
WHERE job = %s AND trigger = 'enqueue' AND payload ? 'seq'
"""


# Why enqueued work executed more than once: each run of it that executed (it has an effect)
# without succeeding was retried, by how it ended.
_WASTED = """
SELECT r.status || ': ' || left(coalesce(r.error_type || ' ', '')
                                || split_part(coalesce(r.error_message, r.message, ''), E'\\n', 1),
                                120),
       count(*)
FROM pgjobs.runs r
WHERE r.job = %s AND r.status <> 'succeeded'
  AND EXISTS (SELECT 1 FROM public.chaos_effects e WHERE e.run_id = r.id)
GROUP BY 1 ORDER BY 2 DESC LIMIT 5
"""


def _missing(dsn: str, ids: list[int]) -> list[int]:
    found = {r for (r,) in chaos.sql(dsn, "SELECT id FROM pgjobs.runs WHERE id = ANY(%s)", ids)}
    return sorted(set(ids) - found)


def _backlog(dsn: str, count: int) -> list[int]:
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        ids = enqueue_many_sync(conn, [EnqueueRequest(WORK, {"backlog": i}) for i in range(count)])
        conn.commit()
    return ids


FAULTS = ("postmaster", "host", "silent-host")
"""``postmaster``: the primary's postmaster dies, and Patroni (``master_start_timeout: 0``) fails
over at its next loop. ``host``: the primary's host dies, Patroni with it, so the standby waits
for the leader key to expire (``ttl``, 20 s): an outage longer than the workers' lease.
``silent-host`` (opt-in, and it does not pass yet): as ``host``, but the host's address goes
silent rather than refusing: the workers and the producer reach each node through a proxy, and
the dead node's proxy black-holes every connection, open or new (a host that lost power answers
nothing, not even a reset). Each new connection then waits ``connect_timeout`` on the silent host
before it tries the next, and jobs of 10 s time out again and again for a minute or more after
the new primary takes writes."""


class _Proxies:
    """A :class:`TcpProxy` in front of each node, and the multi-host DSN through them."""

    def __init__(self, cluster: HaCluster) -> None:
        self.by_node = {node.name: TcpProxy(node.port) for node in cluster.nodes}
        hosts = ",".join(f"127.0.0.1:{proxy.port}" for proxy in self.by_node.values())
        self.dsn = f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write"

    def close(self) -> None:
        for proxy in self.by_node.values():
            proxy.close()


def _kill(cluster: HaCluster, node: HaNode, fault: str, proxies: _Proxies | None) -> datetime:
    """Strike the primary with ``fault``; returns the moment of the postmaster's SIGKILL, by the
    cluster's clock (the same host's)."""
    if fault in ("host", "silent-host"):
        cluster.kill_patroni(node)  # first, so that nobody releases the leader key
    if proxies is not None:
        proxies.by_node[node.name].black_hole()  # before the backends' ends could be seen
    killed_at = datetime.now(UTC)
    cluster.kill_postmaster(node)
    return killed_at


# -- one round ----------------------------------------------------------------------------------


def failover_round(
    cluster: HaCluster, log_dir: Path, scale: Scale, fault: str = "postmaster"
) -> FailoverResult:
    """Kill the primary's postmaster (its Patroni too, for the host faults) mid-drain, with a
    producer enqueueing; check and measure."""
    for node in cluster.nodes:
        cluster.revive(node)  # a node whose host was lost in the last round
    cluster.wait_replicated()
    proxies = _Proxies(cluster) if fault == "silent-host" else None
    # The workers and the producer go through the proxies; the harness's own SQL does not.
    client_dsn = proxies.dsn if proxies is not None else cluster.dsn
    try:
        with _round(cluster, log_dir, scale, fault, client_dsn) as (r, result):
            _strike_and_check(cluster, r, result, scale, fault, proxies, client_dsn)
    finally:
        if proxies is not None:
            proxies.close()
    return result


def _strike_and_check(
    cluster: HaCluster,
    r: chaos.Round,
    result: FailoverResult,
    scale: Scale,
    fault: str,
    proxies: _Proxies | None,
    client_dsn: str,
) -> None:
    procs = r.start_workers(chaos.REPLICAS)
    r.wait_registered(procs)
    pids = {p.id: p.proc.pid for p in procs}
    backlog = _backlog(r.dsn, scale.chaos.enqueued)
    producer = Producer(client_dsn, r.log_dir)
    try:
        r.wait_succeeded(scale.chaos.enqueued // 10)
        chaos._wait(lambda: len(producer.read().ids) >= 20, 30, "the producer to enqueue")
        old = cluster.leader()
        assert old is not None
        result.killed = old.name
        result.in_flight = tuple(chaos.sql(r.dsn, _IN_FLIGHT, WORK)[0])
        killed_at = _kill(cluster, old, fault, proxies)

        def promoted() -> HaNode | None:
            node = cluster.writable_node()
            return node if node is not None and node is not old else None

        new = chaos._wait(promoted, 60, "the standby to be promoted", interval=0.05)
        result.kill_to_writable = (datetime.now(UTC) - killed_at).total_seconds()
        result.promoted = new.name
        time.sleep(scale.produce_after)  # the producer goes on against the new primary
    finally:
        log = producer.stop()
    # A backend of the killed postmaster may commit for a few milliseconds more, until it
    # notices, and its walsender ship that: a run finished on the new primary is one whose
    # transaction began after the last commit replayed from the old primary.
    replayed = chaos.one(r.dsn, "SELECT pg_last_xact_replay_timestamp()") or killed_at
    end_of_old = max(killed_at, replayed)
    result.old_timeline_after_kill = (end_of_old - killed_at).total_seconds()
    r.verify(end_of_old)  # first finish, settle, probe, effects, clean stops
    _check(r, result, cluster, backlog, log, pids, killed_at)


@contextmanager
def _round(
    cluster: HaCluster, log_dir: Path, scale: Scale, fault: str, worker_dsn: str
) -> Iterator[tuple[chaos.Round, FailoverResult]]:
    # chaos.Round needs of its cluster only a DSN and wait_ready(): the multi-host DSN here.
    name = f"failover-{fault}"
    with chaos._round(cluster, name, log_dir, scale.chaos, worker_dsn=worker_dsn) as r:
        result = FailoverResult(r.result)
        yield r, result


def _check(
    r: chaos.Round,
    result: FailoverResult,
    cluster: HaCluster,
    backlog: list[int],
    log: ProducerLog,
    pids: dict[str, int],
    killed_at: datetime,
) -> None:
    dsn = cluster.dsn
    result.enqueued_ok = len(log.ids)
    result.failed_attempts = len(log.errors)
    result.retried = log.retried
    result.error_window = log.error_window()
    lost = _missing(dsn, backlog)
    if lost:
        r.fail(f"{len(lost)} backlog runs lost in the failover: {lost[:10]}")
    lost = _missing(dsn, list(log.ids.values()))
    if lost:
        r.fail(f"{len(lost)} enqueues that returned are not on the new primary: {lost[:10]}")
    if not log.ids:
        r.fail("the producer enqueued nothing")
    elif log.ok_times[-1] < (log.errors[-1][0] if log.errors else 0):
        r.fail("the producer never enqueued again after its errors")
    elif log.ok_times[-1] < killed_at.timestamp():
        r.fail("the producer enqueued nothing after the kill (stuck on the old primary?)")
    twice = chaos.sql(dsn, _TICK_RUNS_TWICE)
    if twice:
        r.fail(
            "ticks with more than one run: "
            + "; ".join(f"{j}/{s} {at.isoformat()} x{n}" for j, s, at, n in twice)
        )
    result.duplicates = int(chaos.one(dsn, _DUPLICATES, WORK))
    result.wasted = [f"{why} x{n}" for why, n in chaos.sql(dsn, _WASTED, WORK)]
    result.live_reaped = int(chaos.one(dsn, _LIVE_REAPED, list(pids)))
    if result.live_reaped:
        r.fail(f"{result.live_reaped} runs of live workers were reaped for the failover")
    rows = dict(chaos.sql(dsn, "SELECT id, pid FROM pgjobs.workers WHERE id = ANY(%s)", list(pids)))
    if rows != pids:
        r.fail(f"worker rows on the new primary {rows} are not the processes started {pids}")
    for p in r.procs:
        text = p.log_path.read_text(errors="replace")
        if "database connection restored" not in text:
            r.fail(f"worker {p.id} never logged that its connection was restored")
        if "was taken for dead" in text:
            r.fail(f"worker {p.id} was taken for dead during the failover")


# -- the runner ---------------------------------------------------------------------------------


def _table(results: dict[str, list[FailoverResult]]) -> str:
    def figures(values: list[float | None]) -> str:
        seen = [v for v in values if v is not None]
        return f"{statistics.median(seen):.2f} / {max(seen):.2f}" if seen else "-"

    header = (
        "fault",
        "rounds passed",
        "kill -> writable s",
        "kill -> first run finished s",
        "producer errors for s",
        "enqueues retried",
        "failed attempts",
        "duplicated",
        "extra executions",
    )
    lines = [header, ("", "", "(median / max)", "(median / max)", "(median / max)", "", "", "", "")]
    for fault, rounds in results.items():
        lines.append(
            (
                fault,
                f"{sum(r.ok for r in rounds)}/{len(rounds)}",
                figures([r.kill_to_writable for r in rounds]),
                figures([r.kill_to_first_finish for r in rounds]),
                figures([r.error_window for r in rounds]),
                str(sum(r.retried for r in rounds)),
                str(sum(r.failed_attempts for r in rounds)),
                str(sum(r.duplicates or 0 for r in rounds)),
                str(sum(r.round.extra_executions or 0 for r in rounds)),
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in lines]
    out.insert(2, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.failover", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="failovers, on one cluster")
    parser.add_argument(
        "--fault",
        default="postmaster,host",
        help="comma-separated faults, each run --rounds times (default: postmaster,host): "
        + ", ".join(FAULTS),
    )
    parser.add_argument("--ci", action="store_true", help="the reduced sizes of the test suite")
    parser.add_argument("--log-dir", type=Path, help="where logs go (default: a temp dir)")
    parser.add_argument("--produce", metavar="DSN", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=PRODUCER_RATE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.produce:
        return produce(args.produce, args.out, args.rate)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    faults = [name.strip() for name in args.fault.split(",") if name.strip()]
    unknown = [name for name in faults if name not in FAULTS]
    if unknown or not faults:
        parser.error(f"unknown fault(s) {', '.join(unknown)}; choose from {', '.join(FAULTS)}")
    scale = CI if args.ci else FULL
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="pgjobs-failover-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"logs under {log_dir}", flush=True)
    started = time.monotonic()
    results: dict[str, list[FailoverResult]] = {fault: [] for fault in faults}
    with ha_cluster() as cluster:
        print(f"HA cluster up in {time.monotonic() - started:.0f}s", flush=True)
        chaos.prepare(cluster, log_dir)
        for fault in faults:
            for n in range(args.rounds):
                result = failover_round(cluster, log_dir, scale, fault)
                results[fault].append(result)
                status = "ok" if result.ok else "FAILED"
                took = result.round.seconds
                print(f"{fault} round {n + 1}/{args.rounds}: {status} ({took:.0f}s)")
                print(f"  {result.summary()}", flush=True)
                if not result.ok:
                    print(result.round.report(), flush=True)
    print()
    print(_table(results))
    print(f"\n{time.monotonic() - started:.0f}s in all")
    return 0 if all(r.ok for rounds in results.values() for r in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
