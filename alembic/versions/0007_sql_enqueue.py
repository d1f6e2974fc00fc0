"""pgjobs.enqueue(...): the enqueue API as a SQL function, for SQL clients and triggers.

Revision ID: 0007
Revises: 0006
"""

from pgjobs.migrations import sql_revision

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

upgrade, downgrade = sql_revision("0007_sql_enqueue")
