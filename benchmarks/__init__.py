"""pgjobs benchmarks: ``python -m benchmarks`` (or ``make bench``); see benchmarks/README.md.

Every measure runs real worker processes against its own fresh database on the server, and every
figure is also reported as a ratio to pgbench measured on the same server in the same run.

This package imports nothing at the top level: the peers' worker processes import
``benchmarks.peer_apps`` from a virtualenv that has no pgjobs.
"""
