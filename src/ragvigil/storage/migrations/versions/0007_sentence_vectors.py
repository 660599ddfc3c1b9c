"""sentence vectors of chunks

Revision ID: 0007
Revises: 0006

The extractive generator ranks a passage's sentences by cosine with the question's vector; the
sentences' own vectors are computed in the background with the passage vectors and kept here, one
row per (chunk, sentence key), so a turn reads its passages' sentences in one query. Rows go with
their chunk (``ON DELETE CASCADE``). A new table only: a replica on the previous release never reads it.
"""

from alembic import op
import sqlalchemy as sa


revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sentence_vectors",
        sa.Column("chunk_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["chunk_id"], ["chunks.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("chunk_id", "key"),
    )


def downgrade() -> None:
    op.drop_table("sentence_vectors")
