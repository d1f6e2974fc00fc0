"""Run logs: the last lines each run logged, in ``runs.logs``.

Revision ID: 0002
Revises: 0001
"""

from pgjobs.migrations import sql_revision

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

upgrade, downgrade = sql_revision("0002_run_logs")
