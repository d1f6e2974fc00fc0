"""A statement queueing runs wakes the waiting workers it needs, each on a channel of its own.

Revision ID: 0010
Revises: 0009
"""

from pgjobs.migrations import sql_revision

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

upgrade, downgrade = sql_revision("0010_wake_one")
