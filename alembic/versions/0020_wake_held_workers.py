"""An enqueue that cannot take a waiting worker's mark (its row held) tells every listener.

Revision ID: 0020
Revises: 0019
"""

from pgjobs.migrations import sql_revision

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

upgrade, downgrade = sql_revision("0020_wake_held_workers")
