"""A run's progress, and the trace context it was enqueued in.

Revision ID: 0011
Revises: 0010
"""

from pgjobs.migrations import sql_revision

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

upgrade, downgrade = sql_revision("0011_progress_and_tracing")
