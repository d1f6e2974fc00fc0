"""A run's end finds its dependants by a probe of the edges' index, not a join of every edge.

Revision ID: 0017
Revises: 0016
"""

from pgjobs.migrations import sql_revision

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

upgrade, downgrade = sql_revision("0017_release_by_key")
