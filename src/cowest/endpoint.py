"""The strong model's client for a stage, opened one way for all of them.

:func:`open_strong` starts the managed local server when ``strong.local.gguf`` is set, points the client at
the run's answer cache, journals each paid call under the stage's name (so a killed stage still accounts
for it) and adds the stage's usage to ``usage.json`` on exit. :func:`strong_client` is the same client on
another endpoint (feedback's judge).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

from cowest.config import RunConfig, StrongConfig
from cowest.rundir import RunDir


def strong_client(cfg: RunConfig, endpoint: StrongConfig, *, usage: Any = None, cache: bool = True,
                  progress: bool = True) -> Any:
    """A StrongClient on ``endpoint`` with the run's answer cache (unless ``strong.cache`` or ``cache`` is off)."""
    from cowest.models.strong import StrongClient

    path = RunDir(cfg).cache_path if cfg.strong.cache and cache else None
    return StrongClient(endpoint, cache_path=path, usage=usage, progress=progress)


@contextlib.contextmanager
def open_strong(cfg: RunConfig, *, stage: str | None = None, factory: Callable[[], Any] | None = None,
                cache: bool = True, progress: bool = True, max_concurrency: int | None = None,
                logprobs: bool = False) -> Iterator[Any]:
    """A StrongClient for a stage: ``factory()`` when given (tests), else one on the configured endpoint.
    With ``stage``, usage is journaled as it happens and saved to ``usage.json`` on exit. ``logprobs``: the
    stage asks for token log-probs (a managed local server computes them only then)."""
    rd = RunDir(cfg)
    with contextlib.ExitStack() as stack:
        if factory is not None:
            client = factory()
        else:
            from cowest.models.local_server import strong_endpoint
            from cowest.models.usage import Usage

            rd.root.mkdir(parents=True, exist_ok=True)  # the managed server logs here
            endpoint = stack.enter_context(strong_endpoint(cfg.strong, rd.root, logprobs=logprobs))
            if not cache:
                endpoint = dataclasses.replace(endpoint, cache=False)
            if max_concurrency is not None:
                endpoint = dataclasses.replace(endpoint, max_concurrency=min(endpoint.max_concurrency, max_concurrency))
            usage = Usage(journal=rd.root / "usage.journal.jsonl", stage=stage) if stage else None
            client = strong_client(cfg, endpoint, usage=usage, cache=cache, progress=progress)
        try:
            yield client
        finally:
            client.close()
            usage = getattr(client, "usage", None)
            if stage and usage is not None and _is_main_process():
                usage.save(rd.usage_path, stage=stage)


def _is_main_process() -> bool:
    """Under ``accelerate launch`` only rank 0 writes usage.json; without accelerate there is one process."""
    try:
        from accelerate import PartialState
    except ImportError:
        return True
    return PartialState().is_main_process
