"""SPEC §9 under faults, with real workers and a PostgreSQL cluster this module owns.

The reduced set of tests/chaos.py: one round of each fault at the CI scale, the start storm
``PGJOBS_CHAOS_ROUNDS`` times (default 3). The 30 s outage and the half-open connections (whose
round lasts its whole settle time when the worker never notices) run only with
``PGJOBS_CHAOS_FULL=1``, which also switches to the full scale; ``make chaos`` runs everything,
many rounds.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests import chaos
from tests.pgcluster import PgCluster, available, pg_cluster
from tests.tcpproxy import TcpProxy
from tests.workers import wait_until

FULL = os.environ.get("PGJOBS_CHAOS_FULL") == "1"
SCALE = chaos.FULL if FULL else chaos.CI
STORM_ROUNDS = int(os.environ.get("PGJOBS_CHAOS_ROUNDS", "3"))

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))


@pytest.fixture(scope="module")
def chaos_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chaos-logs")


@pytest.fixture(scope="module")
def cluster(chaos_logs: Path) -> Iterator[PgCluster]:
    """A migrated cluster with the chaos jobs registered; stopped and removed afterwards."""
    with pg_cluster() as c:
        chaos.prepare(c, chaos_logs)
        yield c


def _check(result: chaos.RoundResult) -> None:
    assert result.ok, result.report()


class _QueryInThread:
    """``SELECT 1`` on ``conn`` in a thread of its own; ``done`` is set once it returned."""

    def __init__(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        self.done = threading.Event()
        self._conn = conn
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._conn.execute("SELECT 1").fetchone()
        except psycopg.Error:
            return  # the proxy closed under it at the end of the test
        self.done.set()

    def join(self) -> bool:
        """Once the proxy is closed: wait for the query to fail; False if it is still running."""
        self._thread.join(10)
        return not self._thread.is_alive()


def _close_after(
    query: _QueryInThread | None, conn: psycopg.Connection[tuple[object, ...]]
) -> None:
    """Close ``conn`` once ``query``'s thread is out of it: closing a connection while another
    thread is in libpq with it crashes the process."""
    if query is None or query.join():
        conn.close()


def test_the_black_hole_holds_bytes_without_closing_and_a_pass_lets_them_through(
    cluster: PgCluster,
) -> None:
    proxy = TcpProxy(cluster.port)
    conn = psycopg.connect(cluster.dsn_via(proxy.port), autocommit=True)
    query = None
    try:
        proxy.black_hole()
        query = _QueryInThread(conn)
        assert not query.done.wait(1.5), "a query went through the black hole"
        assert not conn.closed
        proxy.pass_through()
        wait_until(query.done.is_set, 10, "the held query to complete after the pass")
    finally:
        proxy.close()
        _close_after(query, conn)


def test_a_pass_without_thaw_leaves_old_connections_dead_and_lets_new_ones_through(
    cluster: PgCluster,
) -> None:
    proxy = TcpProxy(cluster.port)
    stale = psycopg.connect(cluster.dsn_via(proxy.port), autocommit=True)
    query = None
    try:
        proxy.black_hole()
        proxy.pass_through(thaw=False)
        query = _QueryInThread(stale)
        with psycopg.connect(cluster.dsn_via(proxy.port), autocommit=True) as fresh:
            assert fresh.execute("SELECT 2").fetchone() == (2,)
        assert not query.done.wait(1.5), "a query went through a connection left for dead"
    finally:
        proxy.close()
        _close_after(query, stale)


def test_workers_recover_from_a_fast_restart(cluster: PgCluster, chaos_logs: Path) -> None:
    _check(chaos.fast_restart(cluster, chaos_logs, SCALE))


def test_workers_recover_from_a_crash(cluster: PgCluster, chaos_logs: Path) -> None:
    _check(chaos.crash(cluster, chaos_logs, SCALE))


def test_workers_survive_a_restart_during_their_start(cluster: PgCluster, chaos_logs: Path) -> None:
    _check(chaos.restart_at_startup(cluster, chaos_logs, SCALE))


def test_workers_survive_their_backends_terminated_every_second(
    cluster: PgCluster, chaos_logs: Path
) -> None:
    _check(chaos.terminate_backends(cluster, chaos_logs, SCALE))


@pytest.mark.parametrize("round_", range(1, STORM_ROUNDS + 1))
def test_eight_workers_starting_at_the_same_instant_all_start(
    cluster: PgCluster, chaos_logs: Path, round_: int
) -> None:
    _check(chaos.start_storm(cluster, chaos_logs, SCALE))


def test_workers_recover_from_a_black_holed_network(cluster: PgCluster, chaos_logs: Path) -> None:
    _check(chaos.black_hole(cluster, chaos_logs, SCALE))


@pytest.mark.skipif(not FULL, reason="runs with PGJOBS_CHAOS_FULL=1 (make chaos)")
def test_workers_give_up_connections_that_stay_half_open(
    cluster: PgCluster, chaos_logs: Path
) -> None:
    _check(chaos.black_hole_stale(cluster, chaos_logs, SCALE))


@pytest.mark.skipif(not FULL, reason="the 30 s outage runs with PGJOBS_CHAOS_FULL=1 (make chaos)")
def test_workers_recover_from_an_outage_longer_than_the_lease(
    cluster: PgCluster, chaos_logs: Path
) -> None:
    _check(chaos.outage(cluster, chaos_logs, SCALE))
