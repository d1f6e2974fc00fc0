"""Queue controls: pause that holds work, concurrency slots, rate buckets, run_waits.

Revision ID: 0005
Revises: 0004
"""

from pgjobs.migrations import sql_revision

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

upgrade, downgrade = sql_revision("0005_queue_controls")
