"""Many schedules per job: runtime schedules in pgjobs.schedules, ticks keyed by schedule.

Revision ID: 0009
Revises: 0008
"""

from pgjobs.migrations import sql_revision

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

upgrade, downgrade = sql_revision("0009_schedules")
