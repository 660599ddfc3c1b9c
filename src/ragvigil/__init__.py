"""ragvigil: a knowledge-base chat service that runs itself in production."""

__version__ = "0.1.0"
