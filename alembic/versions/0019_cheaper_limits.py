"""A claim debits a rate bucket, and rechecks the fresh slots it took, with a query less each.

Revision ID: 0019
Revises: 0018
"""

from pgjobs.migrations import sql_revision

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

upgrade, downgrade = sql_revision("0019_cheaper_limits")
