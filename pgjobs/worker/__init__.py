"""The worker: one process's loop over the queue and the schedules of its jobs.

:class:`Worker` and :class:`WorkerSettings` are the public face. Each concern has a module:

- :mod:`~pgjobs.worker.loop`: the loop itself, start-up, shutdown, errors;
- :mod:`~pgjobs.worker.registration`: the jobs' and the worker's rows, retried on conflict;
- :mod:`~pgjobs.worker.ticking`: due ticks become runs, once each;
- :mod:`~pgjobs.worker.dispatch`: claims, prefetch, starting runs, recording outcomes;
- :mod:`~pgjobs.worker.liveness`: the heartbeat (leases, reconciliation) and the reaper;
- :mod:`~pgjobs.worker.wakeups`: LISTEN/NOTIFY and sleeping;
- :mod:`~pgjobs.worker.connection`: connections, pools, and which errors mean a lost link.
"""

from pgjobs.worker.loop import Worker
from pgjobs.worker.settings import TICK_BATCH, WorkerSettings

__all__ = ["TICK_BATCH", "Worker", "WorkerSettings"]
