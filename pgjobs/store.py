"""The store: the worker's operations on pgjobs' named statements (:mod:`pgjobs.named_queries`).

The CLI and the enqueue API use :class:`~pgjobs.named_queries.Queries` directly; the worker uses
:class:`WorkerStore`, which wraps the statements of its loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pgjobs.job import Dependency
from pgjobs.limits import RateLimit
from pgjobs.named_queries import Queries


@dataclass(slots=True)
class ClaimedRun:
    """A run this worker has just claimed and must execute."""

    id: int
    job: str
    trigger: str
    scheduled_for: datetime
    attempt: int
    max_attempts: int
    payload: dict[str, Any] | None
    parameters: dict[str, str] | None
    started_at: datetime
    #: Whether it holds what a waiting run may need (a slot of max_concurrency or a concurrency
    #: key, the run lock of a job that forbids overlap): its end may let that run start. (A rate
    #: limit's token is spent when the run starts; its end gives none back.)
    limited: bool = False
    #: Its queue (None where the statement that made it does not say: the job's queue).
    queue: str | None = None
    #: The trace context of the enqueue that queued it (see :mod:`pgjobs.tracing`), if any: the
    #: JSON object enqueue stores, or whatever a row written by hand holds.
    trace_context: object = None
    #: What the runs it waited for (``after`` / ``after_any``) ended with (``ctx.dependencies``),
    #: from the claim's reply; None for a run enqueued without any.
    dependencies: list[Dependency] | None = None

    @property
    def has_dependencies(self) -> bool:
        """It was enqueued to wait for other runs."""
        return self.dependencies is not None


@dataclass(slots=True)
class Outcome:
    """How a run ended, as the worker records it (made per run: slots, not frozen, are cheap)."""

    run_id: int
    status: str
    duration: float
    message: str | None = None
    data: Mapping[str, Any] | None = None
    processed: int | None = None
    failed: int | None = None
    error_type: str | None = None
    error_message: str | None = None
    error_traceback: str | None = None
    retry_delay: float | None = None
    logs: str | None = None
    start_delay: float | None = None  # seconds between its claim and its start (prefetched)


# The fields of an Outcome that finish_and_claim_runs reads from its JSON document.
_OUTCOME_FIELDS = tuple(f.name for f in dataclasses.fields(Outcome))


def _outcome_document(outcomes: Sequence[Outcome]) -> Jsonb:
    """The outcomes as one JSON array for ``jsonb_to_recordset``: a single parameter that
    json.dumps writes at C speed, instead of an array per field dumped element by element."""
    rows = []
    for outcome in outcomes:
        row = {}
        for name in _OUTCOME_FIELDS:
            value = getattr(outcome, name)
            if value is not None:
                row[name] = dict(value) if name == "data" else value
        rows.append(row)
    return Jsonb(rows)


@dataclass(frozen=True)
class RegisteredJob:
    """A job a worker's code registers, with the schedule (None: on demand only, or disabled)
    and timezone it has for it. Claims and ticks consider only a worker's registered jobs."""

    name: str
    schedule: str | None
    timezone: str


@dataclass(frozen=True)
class Batch:
    """What one finish-and-claim statement did."""

    started: list[ClaimedRun]
    finished: frozenset[int]
    retried: dict[int, int]
    wakeup_in: float | None
    #: Whether the statement was told the worker listens: one that came short then marked the
    #: worker waiting (a claim made before its LISTEN was up did not, whatever it hears since).
    listening: bool = False
    #: The runs whose outcomes it left for the next statement: still this worker's, their rows
    #: held by another transaction (asked for with ``defer``).
    deferred: frozenset[int] = frozenset()


@dataclass(frozen=True)
class DueJob:
    """A job whose next tick is due, locked for the duration of the tick's transaction."""

    name: str
    schedule: str
    timezone: str
    misfire: str
    backfill_cap: int
    next_fire_at: datetime
    db_now: datetime


@dataclass(frozen=True)
class DueSchedule:
    """A runtime schedule whose next tick is due (or not yet worked out: ``next_fire_at`` is
    None), locked for the duration of the tick's transaction."""

    job: str
    name: str
    cron: str
    timezone: str
    misfire: str
    backfill_cap: int
    next_fire_at: datetime | None
    updated_at: datetime
    payload: Any
    db_now: datetime


@dataclass(frozen=True)
class ScheduleTick:
    """One tick of a runtime schedule to insert as a run, with its run's concurrency key."""

    job: str
    schedule: str
    at: datetime
    concurrency_key: str | None


@dataclass(frozen=True)
class ScheduleWatermark:
    """Where a runtime schedule's ticking stands after a plan: its next tick and its last one,
    or the error that stops it (its cron or timezone could not be used)."""

    job: str
    name: str
    next_fire_at: datetime | None
    last_tick_at: datetime | None
    error: str | None = None


@dataclass(frozen=True)
class Heartbeat:
    """What a heartbeat learned: which of the runs this worker holds it still owns, which to
    cancel, how many jobs it has registered (none after a reaper took it for dead), and how many
    runs the database had it own that it did not hold (handed back to the queue)."""

    owned: frozenset[int]
    cancel_requested: frozenset[int]
    registered_jobs: int
    handed_back: int = 0


@dataclass(frozen=True)
class Reaped:
    """What one reap pass did."""

    reaped: int
    retried: int
    dead_workers: int
    statistics_stale: bool
    #: Runs queued because the runs they waited for were abandoned for good (after_any).
    released: int = 0


@dataclass(frozen=True)
class Settled:
    """What one sweep of blocked runs did (:meth:`WorkerStore.settle_blocked`)."""

    #: Blocked runs queued (their dependencies all satisfied) or cancelled (one failed), not
    #: counting the runs that such a cancel reaches in turn.
    settled: int
    #: The last blocked run read, where the next sweep goes on; 0: start over.
    last_id: int


class WorkerStore:
    """The worker's statements, on one async connection owned by the worker loop.

    Every method is one round trip (plus BEGIN/COMMIT where a transaction is needed) and every
    change of a run is guarded by the state and owner it expects.
    """

    def __init__(self, conn: psycopg.AsyncConnection[Any], queries: Queries, worker_id: str):
        self.conn = conn
        self.q = queries
        self.worker_id = worker_id

    async def register_worker(
        self,
        *,
        host: str,
        pid: int,
        version: str,
        queues: list[str],
        concurrency: int,
        jobs: Sequence[RegisteredJob],
        ttl: float,
    ) -> datetime:
        """Upsert the worker's row, then its registered jobs (the worker's rows of others go).
        Returns when the worker registered, by the database clock."""
        cur = await self.conn.execute(
            self.q["register_worker"],
            {
                "worker": self.worker_id,
                "host": host,
                "pid": pid,
                "version": version,
                "queues": queues,
                "concurrency": concurrency,
                "ttl": ttl,
            },
        )
        row = await cur.fetchone()
        assert row is not None
        await self.conn.execute(
            self.q["register_worker_jobs"],
            {
                "worker": self.worker_id,
                "jobs": [j.name for j in jobs],
                "schedules": [j.schedule for j in jobs],
                "timezones": [j.timezone for j in jobs],
            },
        )
        return row[0]  # type: ignore[no-any-return]

    async def mark_registering(self) -> None:
        """Let this transaction write the jobs' own schedules (see ``jobs_schedule_guard``)."""
        await self.conn.execute(self.q["mark_registering"])

    async def sync_profile_schedules(
        self, jobs: Sequence[str], schedules: Sequence[Mapping[str, Any]]
    ) -> None:
        """Write the further schedules the profile gives ``jobs`` (each a mapping of the
        ``schedules`` columns job, name, cron, timezone, payload, parameters, enabled and
        misfire), and remove those it no longer lists."""
        await self.conn.execute(
            self.q["sync_profile_schedules"],
            {"schedules": Jsonb(list(map(dict, schedules))), "jobs": list(jobs)},
        )

    async def lock_registered_jobs(
        self, names: list[str]
    ) -> tuple[datetime, dict[str, dict[str, Any]]]:
        """Inside a transaction: lock existing rows of ``names``; return the db clock and rows."""
        cur = self.conn.cursor(row_factory=dict_row)
        rows = await (
            await cur.execute(self.q["lock_registered_jobs"], {"names": names})
        ).fetchall()
        if rows:
            return rows[0]["db_now"], {r["name"]: r for r in rows}
        now_row = await (await self.conn.execute(self.q["db_now"])).fetchone()
        assert now_row is not None
        return now_row[0], {}

    async def upsert_jobs(self, rows: Iterable[Mapping[str, Any]]) -> None:
        async with self.conn.cursor() as cur:
            await cur.executemany(
                self.q["upsert_job"], [dict(r, worker=self.worker_id) for r in rows]
            )

    async def sync_rate_limits(self, scope: str, limits: Mapping[str, RateLimit | None]) -> None:
        """Give each job or queue (``scope``) of ``limits`` the token bucket of its rate limit,
        or none; for queues, record the limits on their rows too."""
        names = sorted(limits)
        chosen = [limits[n] for n in names]
        rates = [limit.rate if limit else None for limit in chosen]
        bursts = [limit.burst if limit else None for limit in chosen]
        await self.conn.execute(
            self.q["sync_rate_buckets"],
            {"scope": scope, "names": names, "rates": rates, "bursts": bursts},
        )
        if scope == "queue":
            texts = [str(limit) if limit else None for limit in chosen]
            await self.conn.execute(
                self.q["sync_queue_rate_limits"], {"names": names, "rate_limits": texts}
            )
            cleared = [n for n in names if limits[n] is None]
            await self.conn.execute(self.q["clear_queue_rate_limits"], {"names": cleared})

    async def lock_due_jobs(self, limit: int, *, oftenest_first: bool = False) -> list[DueJob]:
        """Lock up to ``limit`` due jobs of this worker: in due order, or, for a round's first
        batch, with the oftenest first among those due at one instant."""
        query = self.q["lock_due_jobs_oftenest_first" if oftenest_first else "lock_due_jobs"]
        cur = self.conn.cursor(row_factory=dict_row)
        await cur.execute(query, {"worker": self.worker_id, "limit": limit})
        return [DueJob(**row) for row in await cur.fetchall()]

    async def insert_ticks_advance_watermarks(
        self,
        ticks: list[tuple[str, datetime]],
        watermarks: list[tuple[str, datetime | None, datetime | None]],
    ) -> list[int]:
        """Insert the ticks' runs and advance the watermarks; the ids of the runs inserted (a
        tick that existed already is not among them), earliest tick first."""
        row = await (
            await self.conn.execute(
                self.q["insert_ticks_advance_watermarks"],
                {
                    "tick_jobs": [job for job, _ in ticks],
                    "tick_times": [tick for _, tick in ticks],
                    "names": [name for name, _, _ in watermarks],
                    "next_fire_ats": [nxt for _, nxt, _ in watermarks],
                    "last_ticks": [last for _, _, last in watermarks],
                },
            )
        ).fetchone()
        assert row is not None
        return list(row[0])

    async def lock_due_schedules(
        self, limit: int, *, oftenest_first: bool = False
    ) -> list[DueSchedule]:
        """Lock up to ``limit`` due runtime schedules of this worker's jobs, ordered as
        :meth:`lock_due_jobs` orders jobs."""
        name = "lock_due_schedules_oftenest_first" if oftenest_first else "lock_due_schedules"
        cur = self.conn.cursor(row_factory=dict_row)
        await cur.execute(self.q[name], {"worker": self.worker_id, "limit": limit})
        return [DueSchedule(**row) for row in await cur.fetchall()]

    async def insert_schedule_ticks(
        self, ticks: list[ScheduleTick], watermarks: list[ScheduleWatermark]
    ) -> list[int]:
        """Insert runtime schedules' ticks as runs and advance their watermarks (or record their
        errors); the ids of the runs inserted, earliest tick first."""
        row = await (
            await self.conn.execute(
                self.q["insert_schedule_ticks"],
                {
                    "tick_jobs": [t.job for t in ticks],
                    "tick_schedules": [t.schedule for t in ticks],
                    "tick_times": [t.at for t in ticks],
                    "tick_keys": [t.concurrency_key for t in ticks],
                    "jobs": [w.job for w in watermarks],
                    "names": [w.name for w in watermarks],
                    "next_fire_ats": [w.next_fire_at for w in watermarks],
                    "last_ticks": [w.last_tick_at for w in watermarks],
                    "errors": [w.error for w in watermarks],
                },
            )
        ).fetchone()
        assert row is not None
        return list(row[0])

    async def finish_and_claim_runs(
        self,
        outcomes: Sequence[Outcome],
        *,
        queues: list[str],
        limit: int,
        lease: float,
        ticks: Sequence[int] = (),
        listening: bool = False,
        defer: Collection[int] = (),
    ) -> Batch:
        """Record ``outcomes`` and claim up to ``limit`` due runs, in one statement and commit;
        ``ticks``, runs of ticks this worker just made, are claimed too, ahead of the queue.
        ``listening``: the worker hears its wake-up channel, so a claim that comes short marks it
        waiting, to be woken alone by the next run it can take. ``defer``: the runs whose
        outcomes are left out (``Batch.deferred``) rather than waited for while another
        transaction holds their rows."""
        params = {
            "worker": self.worker_id,
            "queues": queues,
            "limit": limit,
            "lease": lease,
            "listening": listening,
            "defer": list(defer),
            "outcomes": _outcome_document(outcomes),
            "ticks": list(ticks),
        }
        cur = await self.conn.execute(self.q["finish_and_claim_runs"], params)
        started: list[ClaimedRun] = []
        finished: set[int] = set()
        retried: dict[int, int] = {}
        deferred: set[int] = set()
        wakeup_in: float | None = None
        # Rows as tuples: (kind, id, job, trigger, scheduled_for, attempt, max_attempts, payload,
        # parameters, started_at, ref, seconds, limited, queue, trace_context, dependencies).
        for row in await cur.fetchall():
            kind = row[0]
            if kind == "started":
                run = ClaimedRun(*row[1:10])
                run.limited, run.queue, run.trace_context = row[12:15]
                if row[15] is not None:
                    run.dependencies = _dependencies(row[15])
                started.append(run)
            elif kind == "finished":
                finished.add(row[1])
            elif kind == "retried":
                retried[row[10]] = row[1]
            elif kind == "deferred":
                deferred.add(row[1])
            else:
                wakeup_in = row[11]
        return Batch(
            started, frozenset(finished), retried, wakeup_in, listening, frozenset(deferred)
        )

    async def finish_run_if_running(self, outcome: Outcome) -> tuple[bool, int | None]:
        """Record one run's outcome; return (whether this worker still owned it, retry run id)."""
        batch = await self.finish_and_claim_runs([outcome], queues=[], limit=0, lease=0)
        return outcome.run_id in batch.finished, batch.retried.get(outcome.run_id)

    async def heartbeat(
        self, *, held: Sequence[int], since: datetime | None, ttl: float, lease: float
    ) -> Heartbeat:
        """Extend the worker's row and the leases of the runs it ``held``; hand back the runs
        the database says it claimed since ``since`` that it does not hold (a claim whose reply
        was lost with the connection)."""
        cur = await self.conn.execute(
            self.q["heartbeat"],
            {
                "worker": self.worker_id,
                "held": list(held),
                "since": since,
                "ttl": ttl,
                "lease": lease,
            },
        )
        rows = await cur.fetchall()
        return Heartbeat(
            owned=frozenset(r[0] for r in rows if r[0] is not None),
            cancel_requested=frozenset(r[0] for r in rows if r[1]),
            registered_jobs=int(rows[0][2]),
            handed_back=int(rows[0][3]),
        )

    async def reap_expired_leases(self, limit: int = 500) -> Reaped:
        row = await (
            await self.conn.execute(self.q["reap_expired_leases"], {"limit": limit})
        ).fetchone()
        assert row is not None
        return Reaped(*row)

    async def settle_blocked(self, *, after_id: int = 0, batch: int = 1000) -> Settled:
        """The safety net of workflows: read at most ``batch`` blocked runs after ``after_id``
        and queue (or cancel) those whose dependencies have all ended, which a release missed
        (an enqueue that committed after the end of its dependency began)."""
        row = await (
            await self.conn.execute(
                self.q["settle_blocked"], {"batch": batch, "after_id": after_id}
            )
        ).fetchone()
        assert row is not None
        return Settled(int(row[0]), int(row[1]))

    async def runs_statistics_behind_ticks(self, inserted: int, since: datetime) -> bool:
        """Whether ``inserted`` runs of ticks, made since ``since`` (database time), leave runs'
        planner statistics far behind, with no ANALYZE since."""
        cur = await self.conn.execute(
            self.q["runs_statistics_behind_ticks"], {"inserted": inserted, "since": since}
        )
        row = await cur.fetchone()
        return bool(row and row[0])

    async def analyze_runs(self) -> bool:
        """ANALYZE runs, unless another worker is doing it; True if this one did.

        Called when a reap found the statistics missing or far behind: autovacuum normally keeps
        them fresh; this covers servers where it is off or lagging, which would otherwise see
        every claim sort the whole queue.

        False, without trying, when the worker's role may not analyze the table (it is not the
        owner's, as a least-privilege worker role is not): PostgreSQL would skip the ANALYZE
        with a mere warning. The owner keeps the statistics fresh then (docs/security.md).
        """
        allowed = await (await self.conn.execute(self.q["can_analyze_runs"])).fetchone()
        if not allowed or not allowed[0]:
            return False
        table = f"{self.q.schema}.runs"
        async with self.conn.transaction():
            cur = await self.conn.execute(self.q["analyze_runs_once"], {"table": table})
            got = await cur.fetchone()
            if not got or not got[0]:
                return False
            await self.conn.execute(self.q["analyze_runs"])
        return True

    async def hand_back_runs(self, ids: list[int], message: str) -> int:
        row = await (
            await self.conn.execute(
                self.q["hand_back_runs"], {"ids": ids, "worker": self.worker_id, "message": message}
            )
        ).fetchone()
        await self.notify("run")
        return int(row[0]) if row else 0

    async def deregister_worker(self) -> None:
        """Mark this worker stopped and remove its registered jobs."""
        await self.conn.execute(self.q["deregister_worker"], {"worker": self.worker_id})

    async def notify(self, message: str) -> None:
        await self.conn.execute(self.q["notify"], {"channel": self.q.channel, "message": message})

    async def settle_idle(self, queues: list[str]) -> str:
        """Before a listening worker whose claim came short sleeps: ``busy``, ``queued`` or
        ``idle`` (see the query ``settle_idle``)."""
        cur = await self.conn.execute(
            self.q["settle_idle"], {"worker": self.worker_id, "queues": queues}
        )
        row = await cur.fetchone()
        assert row is not None
        return str(row[0])


def _dependencies(rows: list[list[Any]]) -> list[Dependency]:
    """``ctx.dependencies`` from the claim's JSON: ``[id, job, status, message, data]`` each.
    ``data`` that is not a JSON object (written by hand) is empty."""
    return [
        Dependency(int(i), job, status, message, data if isinstance(data, dict) else {})
        for i, job, status, message, data in rows
    ]
