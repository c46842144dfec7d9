"""Backends: where requests go (OpenAI-compatible HTTP servers, litellm providers)."""
