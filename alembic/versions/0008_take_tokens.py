"""A claim debits a rate bucket with pgjobs.take_tokens, in a snapshot of its own.

Revision ID: 0008
Revises: 0007
"""

from pgjobs.migrations import sql_revision

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

upgrade, downgrade = sql_revision("0008_take_tokens")
