"""A run released by its dependency's end starts at once on the worker that recorded that end.

Revision ID: 0018
Revises: 0017
"""

from pgjobs.migrations import sql_revision

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

upgrade, downgrade = sql_revision("0018_hand_off")
