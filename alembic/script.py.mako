"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

The DDL lives in sql/<name>.up.sql and sql/<name>.down.sql; write both, then name them here.
"""

from pgjobs.migrations import sql_revision

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}

upgrade, downgrade = sql_revision("${up_revision}_TODO")
