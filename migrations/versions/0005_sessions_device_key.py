"""sessions.device_key, sessions.device_bound_at: a session bound to its device (DBSC)

The public key a Chrome browser registered for the session (its JWK, as JSON), and when.
Once set, the session's access cookie is renewed only with a proof from that key.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 13:00:00

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("device_key", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("device_bound_at", sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("device_bound_at")
        batch_op.drop_column("device_key")
