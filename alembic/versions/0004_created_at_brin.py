"""runs.created_at: a BRIN index instead of a B-tree, so a run's updates skip it.

Revision ID: 0004
Revises: 0003
"""

from pgjobs.migrations import sql_revision

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

upgrade, downgrade = sql_revision("0004_created_at_brin")
