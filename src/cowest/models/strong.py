"""The strong model: an OpenAI-compatible chat client with cache, one retry layer and usage counts.

INTERFACE STUB — implemented by the strong-client work. Contract:

    usage = Usage()
    client = StrongClient(cfg.strong, cache_path=run_dir / "strong_cache.sqlite", usage=usage)
    results = client.chat_batch(
        [ChatRequest(messages=[...], sample_index=0), ...], tag="collab", desc="strong refine",
        on_result=lambda i, r: ...)           # called as each finishes (in completion order)
    results[i].text, results[i].cached, results[i].prompt_tokens
    usage.by_tag()["collab"] -> {"calls": .., "cached": .., "prompt_tokens": .., "completion_tokens": .., "retries": .., "cost_usd": ..}
    client.close()
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cowest.config import StrongConfig

Messages = list[dict[str, str]]


@dataclass
class ChatRequest:
    messages: Messages
    sample_index: int = 0  # distinct samples of the same request are cached separately
    temperature: float | None = None  # None = cfg.temperature
    max_tokens: int | None = None  # None = cfg.max_tokens


@dataclass
class ChatResult:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False


@dataclass
class Usage:
    """Calls, tokens, retries and cost per tag (system or stage). Cache hits cost nothing."""

    tags: dict[str, dict[str, float]] = field(default_factory=dict)


class StrongClient:
    def __init__(self, cfg: StrongConfig, *, cache_path: str | Path | None = None, usage: Usage | None = None):
        raise NotImplementedError
