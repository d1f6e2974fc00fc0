"""The peers' sides of the workloads, run with the peers' own virtualenv (no pgjobs in it)."""
