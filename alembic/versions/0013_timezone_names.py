"""A schedule's timezone is checked against a table of zone names, not the zone files.

Revision ID: 0013
Revises: 0012
"""

from pgjobs.migrations import sql_revision

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

upgrade, downgrade = sql_revision("0013_timezone_names")
