"""An enqueue no waiting worker can take sends no NOTIFY; a worker going idle settles instead.

Revision ID: 0015
Revises: 0014
"""

from pgjobs.migrations import sql_revision

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

upgrade, downgrade = sql_revision("0015_quiet_enqueue")
