"""Errors a user can act on. The CLI prints them as one line and exits with code 2 (no traceback)."""


class CowestError(Exception):
    """Base class: a message that names what is wrong and where (file:line, config key, endpoint)."""

    exit_code = 2


class ConfigError(CowestError):
    """An unknown key, a wrong type or value, or a missing file in a recipe or override."""


class DataError(CowestError):
    """Malformed or missing task data or predictions."""


class ModelError(CowestError):
    """A model path that does not exist or cannot be loaded."""


class StrongAPIError(CowestError):
    """The strong-model endpoint failed after all retries (or with a non-retryable status)."""

    def __init__(self, message: str, *, endpoint: str = "", status: int | None = None):
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status


class ServerCrashed(StrongAPIError):
    """The strong-model server that cowest started (the managed llama.cpp server) exited: not retried."""


class NotReadyError(CowestError):
    """A stage needs the output of an earlier one (SFT, feedback, or a previous align round) that is missing."""
