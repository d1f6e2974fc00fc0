"""A steady stream of enqueues: client processes, each enqueueing at its share of a target rate.

Each client has a connection of its own and, every ``interval`` seconds (default 10 ms), enqueues
the runs that are due by then in one ``enqueue_many_sync`` transaction (at 1,500 runs/s a client
sends 15 runs a transaction, 100 transactions a second): the runs of a second arrive spread over
it, and the load generator keeps its CPU small beside the workers and the server on a machine of
two cores. A client that falls behind sends what it owes in the next transaction (at most
``MAX_BATCH``), so the rate holds as long as the server takes it; ``behind`` says by how much it
fell back at worst. Processes, not threads: their Python code runs in parallel.
"""

from __future__ import annotations

import math
import multiprocessing
import queue
import signal
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from typing import Any

import psycopg

MAX_BATCH = 2_000
_START_TIMEOUT = 120.0  # seconds for every client to start and connect
_REPORT_TIMEOUT = 60.0


@dataclass(frozen=True)
class LoadReport:
    """What the clients did: runs enqueued, over how long, and the worst backlog of a client."""

    rate: float
    clients: int
    enqueued: int
    seconds: float
    behind: int

    @property
    def achieved(self) -> float:
        return self.enqueued / self.seconds if self.seconds else 0.0


class SteadyLoad:
    """``clients`` processes enqueueing ``rate`` runs/s of ``job`` in all, from :meth:`start`
    until :meth:`stop` (or ``seconds``, if given); as a context manager, prepared on entry (the
    clients connected, waiting for :meth:`start`) and ended on exit."""

    def __init__(
        self,
        dsn: str,
        job: str,
        rate: float,
        *,
        clients: int = 2,
        interval: float = 0.01,
        seconds: float | None = None,
    ) -> None:
        self.rate = rate
        self.clients = clients
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited sockets
        self._go = context.Event()
        self._stop = context.Event()
        self._results = context.Queue()
        share = rate / clients
        self._children = [
            context.Process(
                target=_client,
                args=(dsn, job, share, interval, seconds, self._go, self._stop, self._results),
                daemon=True,
            )
            for _ in range(clients)
        ]

    def prepare(self) -> None:
        """Start the clients and return once each is connected, waiting for :meth:`start`."""
        for child in self._children:
            child.start()
        try:
            for _ in self._children:
                self._expect("ready", _START_TIMEOUT)
        except BaseException:
            self._end()
            raise

    def start(self) -> None:
        """The clients start enqueueing now (prepared first if they are not)."""
        if not any(child.is_alive() for child in self._children):
            self.prepare()
        self._go.set()

    def stop(self) -> LoadReport:
        """Stop the clients; what they did."""
        self._stop.set()
        try:
            reports = [self._expect("report", _REPORT_TIMEOUT) for _ in self._children]
        finally:
            self._end()
        began = min(r[1] for r in reports)
        ended = max(r[2] for r in reports)
        return LoadReport(
            self.rate,
            self.clients,
            sum(r[0] for r in reports),
            ended - began,
            max(r[3] for r in reports),
        )

    def __enter__(self) -> SteadyLoad:
        self.prepare()
        return self

    def __exit__(self, *exc: object) -> None:
        self._end()  # stopped already, or ended by an error: no client outlives the block

    def _end(self) -> None:
        for child in self._children:
            if child.is_alive():
                child.terminate()
            child.join(10)

    def _expect(self, kind: str, timeout: float) -> Any:
        """The next message of a client, which must be of ``kind``."""
        try:
            message = self._results.get(timeout=timeout)
        except queue.Empty:
            codes = [child.exitcode for child in self._children]
            raise RuntimeError(f"enqueue clients did not report (exit codes {codes})") from None
        if message[0] != kind:
            raise RuntimeError(f"an enqueue client failed: {message[1]}")
        return message[1]


def _client(
    dsn: str,
    job: str,
    rate: float,
    interval: float,
    seconds: float | None,
    go: Event,
    stop: Event,
    results: multiprocessing.Queue[Any],
) -> None:
    import pgjobs

    # Ctrl-C reaches the whole process group: the parent ends the load (stop, or terminate).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            results.put(("ready", None))
            if not go.wait(_START_TIMEOUT):
                raise TimeoutError("not told to start")
            sent = behind = 0
            began = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes
            deadline = math.inf if seconds is None else began + seconds
            next_at = began
            while not stop.is_set() and time.monotonic() < deadline:
                now = time.monotonic()
                due = int(rate * (now - began)) - sent
                behind = max(behind, due)
                if due > 0:
                    count = min(due, MAX_BATCH)
                    with conn.transaction():
                        pgjobs.enqueue_many_sync(conn, [{"job": job}] * count)
                    sent += count
                next_at += interval
                pause = next_at - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                else:
                    next_at = time.monotonic()
            results.put(("report", (sent, began, time.monotonic(), behind)))
    except Exception as exc:
        results.put(("error", f"{type(exc).__name__}: {exc}"))
