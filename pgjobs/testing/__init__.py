"""Testing jobs: a migrated throwaway database per test, jobs run in-process through the real
execution path, and checks of what application code enqueued.

:class:`Databases` is a PostgreSQL server for tests (one you name, else an embedded one): it
migrates one template database once, and each :meth:`Databases.database` is a copy of it, made
in milliseconds and dropped afterwards. :class:`JobHarness` works on one such database:

- :meth:`~JobHarness.run_job` runs a job now, in this process, as ``pgjobs jobs run`` does (a
  ``manual`` run with its context, pool, timeout, lock and stored outcome) and returns the run;
- :meth:`~JobHarness.drain` runs the queue until it is empty, one run at a time, with the
  workers' own claim and finish statements: runs that jobs enqueue, and retries, run too;
- :meth:`~JobHarness.enqueued_runs` and :meth:`~JobHarness.assert_enqueued` read what
  application code put in the queue.

The pytest plugin (:mod:`pgjobs.pytest_plugin`) hands these out as ``pgjobs_*`` fixtures; they
work without pytest too. A sync method called inside a running event loop raises: await its
``*_async`` twin there.
"""

from pgjobs.testing.databases import TEST_DSN_ENV, Databases
from pgjobs.testing.drain import DEFAULT_MAX_RUNS, DRAIN_LEASE
from pgjobs.testing.harness import JobHarness, JobRef, Run

__all__ = [
    "DEFAULT_MAX_RUNS",
    "DRAIN_LEASE",
    "TEST_DSN_ENV",
    "Databases",
    "JobHarness",
    "JobRef",
    "Run",
]
