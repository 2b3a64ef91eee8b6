"""The `llm` backend: decoder-only language models served with continuous batching."""
