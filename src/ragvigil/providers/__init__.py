"""Answer generators: the model-free extractive one and OpenAI-compatible endpoints."""
