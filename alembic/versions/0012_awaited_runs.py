"""A run someone waits for notifies when it ends.

Revision ID: 0012
Revises: 0011
"""

from pgjobs.migrations import sql_revision

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

upgrade, downgrade = sql_revision("0012_awaited_runs")
