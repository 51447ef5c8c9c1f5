"""index sessions.expires_at, for flask prune

`flask prune` deletes sessions whose absolute end passed long ago; without this index
that condition would scan the whole table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 00:30:00

"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sessions_expires_at"), ["expires_at"], unique=False)


def downgrade():
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sessions_expires_at"))
