"""turn analysis on messages, and the hand-off queue

Revision ID: 0005
Revises: 0004

A user message keeps what was understood of it (``analysis``: safety, emotion, intent as JSON)
and, when the safety check flagged it, the category (``flagged``, indexed: an operator asks for
the flagged turns, never scans the text). ``handoffs`` is the queue of turns handed to a person,
one open record per session and reason. Every new column is nullable, so a replica still running
the previous release keeps writing during an upgrade.
"""

from alembic import op
import sqlalchemy as sa


revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("analysis", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("flagged", sa.String(length=32), nullable=True))
        batch_op.create_index("ix_messages_flagged", ["flagged"], unique=False)
    op.create_table(
        "handoffs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=True),
        sa.Column("message_id", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(length=160), nullable=True),
        sa.Column("closed_by", sa.String(length=160), nullable=True),
        sa.Column("note", sa.String(length=1000), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_handoffs_session_reason", "handoffs", ["session_id", "reason"], unique=False)
    op.create_index("ix_handoffs_status_priority", "handoffs", ["status", "priority"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_handoffs_status_priority", table_name="handoffs")
    op.drop_index("ix_handoffs_session_reason", table_name="handoffs")
    op.drop_table("handoffs")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_flagged")
        batch_op.drop_column("flagged")
        batch_op.drop_column("analysis")
