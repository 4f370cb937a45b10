"""The OpenAI-compatible /v1 surfaces."""
