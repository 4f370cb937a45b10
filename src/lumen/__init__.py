"""Lumen: a self-hosted, OpenAI-compatible AI gateway for research institutions."""

__version__ = "0.1.0"
