"""security_events.acknowledged_at: an alert the user has dealt with

A stolen-token alert stays on the devices page until its owner says "This was me" or
secures the account; the event itself stays in the activity list.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 11:00:00

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("security_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table("security_events", schema=None) as batch_op:
        batch_op.drop_column("acknowledged_at")
