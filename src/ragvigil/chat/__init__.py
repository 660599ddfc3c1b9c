"""The conversation pipeline and its domain (sessions, turns, journal)."""
