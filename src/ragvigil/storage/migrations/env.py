"""Alembic environment: runs on the connection handed over by ``storage.db.migrate``."""

from alembic import context
from sqlalchemy import create_engine

from ragvigil.storage import sentence_vectors as _sentence_vectors  # noqa: F401  (its table is in Base.metadata)
from ragvigil.storage.models import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    conn = config.attributes.get("connection")
    if conn is None:
        engine = create_engine(config.get_main_option("sqlalchemy.url"))
        with engine.begin() as conn:
            _run_on(conn)
    else:
        _run_on(conn)


def _run_on(conn) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run()
