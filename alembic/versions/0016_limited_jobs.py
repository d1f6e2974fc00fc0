"""The jobs with a concurrency limit get an index: a claim probes their top slots alone.

Revision ID: 0016
Revises: 0015
"""

from pgjobs.migrations import sql_revision

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

upgrade, downgrade = sql_revision("0016_limited_jobs")
