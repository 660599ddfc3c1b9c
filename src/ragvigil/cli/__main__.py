"""``python -m ragvigil.cli``: the same app as the ``ragvigil`` script."""

from ragvigil.cli import app

app()
