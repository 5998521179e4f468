"""What a user needs to try cowest without a strong model: a local OpenAI-compatible chat server with
deterministic replies (``python -m cowest.testing.openai_server --port 8080``). The project's own test
support (fault injection, a SIGKILL runner, a tiny model) lives in the repository's ``tests/support/``."""
