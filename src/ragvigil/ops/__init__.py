"""Operations: metrics, logging, health. Observes the rest through small interfaces."""
