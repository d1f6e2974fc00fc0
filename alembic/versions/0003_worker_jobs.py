"""Worker jobs: the jobs (and schedules) each worker's code registers, one row each.

Revision ID: 0003
Revises: 0002
"""

from pgjobs.migrations import sql_revision

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

upgrade, downgrade = sql_revision("0003_worker_jobs")
