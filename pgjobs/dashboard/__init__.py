"""The web dashboard (``pgjobs dashboard``): jobs, a timeline of runs, run detail, workers and
queues, served from the database by the standard library's HTTP server.

Pages are rendered on the server with escaping by default (:mod:`~pgjobs.dashboard.markup`) and
refresh themselves with a few lines of JavaScript; there is no build step. Actions exist only
when enabled and always need the dashboard's token (see :mod:`~pgjobs.dashboard.app`).
"""

from __future__ import annotations

from pgjobs.dashboard.app import Dashboard, DashboardSettings
from pgjobs.dashboard.guards import check_bind, check_token, is_loopback
from pgjobs.dashboard.server import Server, make_server

__all__ = [
    "Dashboard",
    "DashboardSettings",
    "Server",
    "check_bind",
    "check_token",
    "is_loopback",
    "make_server",
]
