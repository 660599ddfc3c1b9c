"""originals of documents, staged chunks and reindex jobs

Revision ID: 0008
Revises: 0007

Every ingested file's bytes are kept content-addressed (``knowledge/originals.py``); a document
records which original it came from (digest, file name, media type, size), so ``ragvigil reindex``
can rebuild its chunks and vectors with the current chunker and model. Documents stored before
this release have no original (NULL): a reindex reports and skips them.

A reindex builds a new generation of chunks beside the served one: its rows carry the job's id in
``staged_by`` (NULL for served chunks) and are switched in by one transaction. ``reindex_jobs`` keeps
each job's state and progress, so the CLI and every replica see it and an interrupted job is known.
New nullable columns and a new table: a replica still on the previous release keeps working.
"""

from alembic import op
import sqlalchemy as sa


revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("original_digest", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("original_filename", sa.String(length=1024), nullable=True))
        batch_op.add_column(sa.Column("original_media_type", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("original_size", sa.Integer(), nullable=True))
        batch_op.create_index("ix_documents_original_digest", ["original_digest"], unique=False)
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("staged_by", sa.String(length=32), nullable=True))
        batch_op.create_index("ix_chunks_staged_by", ["staged_by"], unique=False)
    op.create_table(
        "reindex_jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kb", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("errors", sa.JSON(), nullable=False),
        sa.Column("requested_by", sa.String(length=160), nullable=False),
        sa.Column("runner", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_reindex_jobs_kb", "reindex_jobs", ["kb"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_reindex_jobs_kb", table_name="reindex_jobs")
    op.drop_table("reindex_jobs")
    with op.batch_alter_table("chunks", schema=None) as batch_op:
        batch_op.drop_index("ix_chunks_staged_by")
        batch_op.drop_column("staged_by")
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_index("ix_documents_original_digest")
        batch_op.drop_column("original_size")
        batch_op.drop_column("original_media_type")
        batch_op.drop_column("original_filename")
        batch_op.drop_column("original_digest")
