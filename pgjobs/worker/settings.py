"""How one worker runs: its settings and the constants of its loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pgjobs.db import DEFAULT_PREPARE_THRESHOLD

TICK_BATCH = 1000
"""Due jobs locked and ticked per transaction."""

TICK_FIRST_BATCH = 100
"""Due jobs locked and ticked in a round's first transaction: the oftenest come first (see
``lock_due_jobs``), and their runs start once it commits, without waiting for a thousand."""

REAP_AFTER_TICKS = 1000
"""A tick that inserts this many runs brings the next reap (and its statistics check) forward."""

REAP_AFTER_CLAIMS = 1000
"""So many runs claimed since the last reap bring the next one (and its statistics check)
forward: a queue that grew from empty leaves every worker's cached claim plan, made for an empty
table, reading all of it on every claim until the table is analysed."""

TICK_RETRY = 0.1
"""Seconds before looking again at due ticks another worker had locked (its NOTIFY comes first)."""

PREFETCH_WHEN_SHORTER = 0.05
"""Prefetch only while recent runs took less than this many seconds on average."""

PREFETCH_HOLD = 1.0
"""A prefetched run not started within this many seconds goes back to the queue."""

SETTLE_FIRST = 0.002
"""Seconds before a worker going idle looks again while an enqueue into its queues is still open
(see Wakeups._settle); then doubling up to SETTLE_MAX."""

SETTLE_MAX = 0.05
"""The longest such wait: how late a run queued by a long transaction may start once it commits,
when every worker of its queue had been busy when it was queued."""

DEFER_FIRST = 0.002
"""Seconds before the worker records again an outcome whose run's row another transaction held
(another worker's claim, most often, which commits within milliseconds); then doubling up to the
poll interval while it stays held."""

RECONNECT_FIRST = 0.2
"""Seconds before the second attempt to reach the database; then doubling to ``backoff_max``."""


@dataclass
class WorkerSettings:
    """How one worker runs. Every duration is in seconds.

    ``lease``: how long a claimed run stays ours without a heartbeat; a worker that dies loses
    its runs to the reaper after at most ``lease`` + ``reap_interval`` (default: ``lease``).
    Heartbeats come every ``lease / 3``. ``poll_interval`` caps every sleep, so polling alone
    runs everything when ``listen`` is off (PgBouncer in transaction mode). ``misfire_grace``:
    a tick older than this when it is materialised counts as missed and follows the job's
    misfire policy; the latest due tick of a coarse schedule is on time for up to 1% of its
    interval (15 minutes at most) if that is longer.

    ``backoff_max``: the longest wait between two attempts to reach the database, at start and
    after a lost connection; jobs resume within about this long of the server accepting
    connections again. ``db_timeout``: the longest a statement of the worker's loop may go
    without a reply before its connection is taken for dead (a half-open connection: a network
    partition, a frozen host); default ``max(10, lease / 3)``. ``tick_reserve``: slots beyond
    ``concurrency`` that only the runs of ticks may use (see :attr:`tick_slots`).

    ``listen_dsn``: where the worker LISTENs, when not on ``dsn`` (a direct connection beside a
    transaction pooler). ``prepare_threshold``: runs of a statement on a connection before psycopg
    prepares it on the server (None: never); ``"auto"`` is None when the worker is
    :attr:`pooled`, else psycopg's default.
    """

    dsn: str = ""
    schema: str = "pgjobs"
    concurrency: int = 10
    queues: tuple[str, ...] = ("default",)
    grace: float = 30.0
    lease: float = 30.0
    poll_interval: float = 5.0
    listen: bool = True
    worker_id: str | None = None
    misfire_grace: float = 5.0
    scheduler: bool = True
    reap_interval: float | None = None
    backoff_max: float = 2.0
    prefetch: int | None = None
    db_timeout: float | None = None
    tick_reserve: int | None = None
    listen_dsn: str | None = None
    prepare_threshold: int | Literal["auto"] | None = "auto"

    @property
    def pooled(self) -> bool:
        """Whether ``dsn`` is taken to be a transaction pooler (PgBouncer): the worker does not
        LISTEN on it (``listen`` off, or a ``listen_dsn`` of its own), the two setups for one.
        A server session then serves other clients between two of the worker's transactions,
        so the worker leaves no state in it."""
        return not self.listen or bool(self.listen_dsn)

    @property
    def prepare_after(self) -> int | None:
        """psycopg's ``prepare_threshold`` for every connection of the worker: off when
        :attr:`pooled` (a pooler before PgBouncer 1.21 cannot carry a prepared statement from
        one transaction to the next), psycopg's default otherwise, unless
        ``prepare_threshold`` says."""
        if self.prepare_threshold != "auto":
            return self.prepare_threshold
        return None if self.pooled else DEFAULT_PREPARE_THRESHOLD

    @property
    def tick_slots(self) -> int:
        """Slots beyond ``concurrency`` kept for the runs of ticks (default: a quarter of the
        concurrency, at least 2), so schedules start on time while bulk work fills the others."""
        if self.tick_reserve is not None:
            return self.tick_reserve
        return max(2, self.concurrency // 4)

    @property
    def prefetch_limit(self) -> int:
        """How many claimed runs may wait for a free slot (default: ``concurrency``)."""
        return self.concurrency if self.prefetch is None else self.prefetch

    @property
    def heartbeat_interval(self) -> float:
        return self.lease / 3

    @property
    def reap_every(self) -> float:
        return self.reap_interval if self.reap_interval is not None else self.lease

    @property
    def statement_deadline(self) -> float:
        """Seconds a statement of the loop may take before its connection is taken for dead."""
        return self.db_timeout if self.db_timeout is not None else max(10.0, self.lease / 3)
