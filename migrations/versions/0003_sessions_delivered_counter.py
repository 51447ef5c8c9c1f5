"""sessions.delivered_counter: the last rotation known to have reached the browser

A retired refresh token that comes back is theft only if its successor was delivered
(a request carried the successor or the access token issued with it); a rotation whose
answer was lost is not. Existing sessions count their current token as delivered, so
their behaviour does not change at deploy.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 10:40:00

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delivered_counter", sa.Integer(), nullable=False, server_default="0"))
    op.execute("UPDATE sessions SET delivered_counter = counter")


def downgrade():
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("delivered_counter")
