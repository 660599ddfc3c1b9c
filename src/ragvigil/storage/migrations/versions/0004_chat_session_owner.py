"""chat session owner

Revision ID: 0004
Revises: 0003

Sessions get the caller that opened them ("anonymous" or "key:<api key id>"). Rows that
exist already were opened by a caller nobody recorded: they get "legacy", an owner no
caller has, so they stay readable by operators and admins (audited) and cannot be continued.
The server default also covers a replica still running the previous release during an upgrade.
"""

from alembic import op
import sqlalchemy as sa


revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("chat_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=64), server_default="legacy", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("chat_sessions", schema=None) as batch_op:
        batch_op.drop_column("owner")
