"""Concurrency slots on runs: a running run of a limited job holds its slot in runs.slot.

Revision ID: 0006
Revises: 0005
"""

from pgjobs.migrations import sql_revision

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

upgrade, downgrade = sql_revision("0006_slots_on_runs")
