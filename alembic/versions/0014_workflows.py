"""Workflows: runs that wait for other runs (run_dependencies, the status blocked).

Revision ID: 0014
Revises: 0013
"""

from pgjobs.migrations import sql_revision

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

upgrade, downgrade = sql_revision("0014_workflows")
