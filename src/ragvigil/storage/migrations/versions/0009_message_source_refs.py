"""sources of an answer kept by reference

Revision ID: 0009
Revises: 0008

An answer used to copy its sources (title, source, anchor, a 300-character snippet, warnings) into
``messages.sources``: most of a stored turn's bytes. New answers keep references in
``messages.source_refs`` instead (chunk id, document id, the document's content hash, the citation
number, the scores, a short title), resolved against ``chunks``/``documents`` when a conversation is
read. Existing rows keep their copied ``sources`` and read as before: nothing is converted. A nullable
column only: a replica on the previous release still reads and writes ``sources``.
"""

from alembic import op
import sqlalchemy as sa


revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("source_refs", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("source_refs")
