"""Initial schema: jobs, runs, run locks, workers, the job_status and run_history views.

Revision ID: 0001
Revises:
"""

from pgjobs.migrations import sql_revision

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

upgrade, downgrade = sql_revision("0001_initial")
