"""Failover on a real HA engine: the reduced round of tests/failover.py.

One round at the CI scale on a Patroni + etcd cluster this module owns (two PostgreSQL 15 nodes in
synchronous replication): the primary's postmaster is killed mid-drain while a producer enqueues
and two jobs tick every second, Patroni promotes the sync standby, and the same worker processes
carry on against it. ``make failover`` runs more rounds, and the host-loss fault (an outage longer
than the workers' lease). Skipped where Patroni or etcd is not installed
(``apt-get install patroni etcd-server``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import chaos, failover
from tests.hacluster import HaCluster, available, ha_cluster

pytestmark = [
    pytest.mark.skipif(available() is not None, reason=str(available())),
    # Failover times are measured: it runs alone, after the tests that share the machine.
    pytest.mark.serial,
]


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("failover-logs")


@pytest.fixture(scope="module")
def cluster(logs: Path) -> Iterator[HaCluster]:
    """A migrated HA cluster with the chaos jobs registered; ended and removed afterwards."""
    with ha_cluster() as c:
        chaos.prepare(c, logs)  # of a cluster it needs only the DSN
        yield c


def test_workers_resume_on_the_promoted_standby_and_no_returned_enqueue_is_lost(
    cluster: HaCluster, logs: Path
) -> None:
    result = failover.failover_round(cluster, logs, failover.CI, "postmaster")
    print(result.summary())
    assert result.ok, result.round.report()
    assert result.kill_to_first_finish is not None
