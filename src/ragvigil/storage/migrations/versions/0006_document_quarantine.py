"""document quality and quarantine

Revision ID: 0006
Revises: 0005

A document whose mojibake repair lost characters is quarantined at ingest: kept, listed, never
retrieved until an operator releases it (``released_by``/``released_at``) or a clean copy replaces
it. ``quality`` (clean / repaired / damaged) is what a source of an answer says about its document.
The new columns have server defaults (documents stored before this release are clean and served),
so a replica still running the previous release keeps writing during an upgrade.
"""

from alembic import op
import sqlalchemy as sa


revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("quality", sa.String(length=16), server_default="clean", nullable=False))
        batch_op.add_column(sa.Column("quarantined", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("quarantine_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("released_by", sa.String(length=160), nullable=True))
        batch_op.add_column(sa.Column("released_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_documents_quarantined", ["quarantined"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_index("ix_documents_quarantined")
        batch_op.drop_column("released_at")
        batch_op.drop_column("released_by")
        batch_op.drop_column("quarantine_reason")
        batch_op.drop_column("quarantined")
        batch_op.drop_column("quality")
