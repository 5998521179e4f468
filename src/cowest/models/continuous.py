"""Continuous batching for the batch engine's greedy requests: a request joins the running batch at once.

The static loop (``batch_server.Engine``) takes what is queued, decodes it together and returns when the batch's
longest answer ends; a request that arrives meanwhile waits for it. Here transformers' continuous batching manager
(``model.init_continuous_batching``: a paged KV cache, the scheduler, chunked prefill) runs the model in its own
thread: each new request is prefilled in the next step while the others go on decoding, and a row that ends leaves
at once, its KV pages free for the next. Its pages are shared between requests with the same prompt prefix (whole
pages: the fixed instructions, and the question shared by a question's K drafts in feedback), so that prefix is
computed once. Pages are 16 tokens: on 64 feedback prompts 64-token pages shared 3,904 of 12,315 prompt tokens,
16-token ones 5,968, so a quarter fewer were computed (bench/RESULTS.md).

Memory is bounded by the page pool: ``kv_tokens`` token slots over all rows (Qwen2.5-1.5B: 28 KB a token, 16,384
slots = 470 MB), at most ``max_rows`` requests in one step and ``chunk_tokens`` prompt tokens prefilled in one
step. A request whose prompt plus ``max_tokens`` could never fit the pool is refused (HTTP 400).

Greedy only: the manager decodes with one sampling setting, and the strong side asks at temperature 0
(``strong.temperature``). Requests with temperature > 0 go to the static loop (``fallback``), which shares the
weights; the two take turns, one forward pass at a time (``one_forward_at_a_time``). Token log-probs with their
alternatives are recorded from the manager's steps (:mod:`cowest.models.continuous_logprobs`); where its internals
differ, those requests go to the static loop too.
At temperature 0 the answers are the one-at-a-time answers up to rounding: in bf16 the paged attention and the
varying batch shapes change low bits of the logits, so an argmax near a tie can differ (bench/RESULTS.md).
"""

from __future__ import annotations

import copy
import functools
import itertools
import logging
import re
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

from cowest.models.continuous_logprobs import attach as attach_logprobs
from cowest.models.token_logprobs import MAX_TOP_LOGPROBS, StepLogprobs


class BadRequest(ValueError):
    """A request the server refuses (HTTP 400): the client must not retry it."""


class ContinuousEngine:
    """``submit(job)`` -> Future; ``job`` has messages, temperature, max_tokens, stop and a ``future``."""

    def __init__(self, wm: Any, *, max_rows: int, kv_tokens: int, n_ctx: int, page_tokens: int = 16,
                 chunk_tokens: int = 512, finish: Callable[[Any, list[str]], Any] = lambda c, stop: c,
                 fallback: Any = None, log: Any = print):
        if kv_tokens < page_tokens or max_rows < 1 or chunk_tokens < 1:
            raise ValueError(f"need kv_tokens >= page_tokens ({page_tokens}), max_rows >= 1, chunk_tokens >= 1")
        # its own tokenizer: the static loop (``fallback``) tokenizes in its thread with the model's, and a fast
        # tokenizer is not to be used from two threads at once
        self.wm = copy.copy(wm)
        self.wm.tokenizer = copy.deepcopy(wm.tokenizer)
        self.max_rows, self.n_ctx, self.finish = max_rows, n_ctx, finish
        self.page_tokens, self.chunk_tokens = page_tokens, chunk_tokens
        self.kv_tokens = kv_tokens // page_tokens * page_tokens
        self.fallback, self.log = fallback, log
        self.eos = list(wm._eos_ids())
        self.pending: dict[str, tuple[Any, float, int]] = {}  # request id -> (job, submit time, prompt tokens)
        self.lock = threading.Lock()  # our tokenizer and ``pending`` (handler threads submit concurrently)
        self.ids = itertools.count()
        self.done = self.generated = self.cancelled = 0
        self.reused: dict[str, int] = {}  # request id -> prompt tokens read from shared pages (not computed)
        self.reused_total = 0
        self.manager: Any = None
        self.error: str | None = None
        self.stopping = False
        # token log-probs for the requests that ask (``continuous_logprobs``), keyed by request id
        self.logprobs = StepLogprobs(MAX_TOP_LOGPROBS)
        self.want_logprobs: set[str] = set()  # running requests that asked for them: the steps compute them then
        self.logprobs_here = False  # False: such requests go to the static loop

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "ContinuousEngine":
        import torch
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        gc = GenerationConfig(max_new_tokens=256, do_sample=False, eos_token_id=self.eos,
                              pad_token_id=self.wm.tokenizer.pad_token_id)
        cbc = ContinuousBatchingConfig(
            page_size=self.page_tokens, num_blocks=self.kv_tokens // self.page_tokens,
            max_batch_tokens=self.chunk_tokens, max_requests_per_batch=self.max_rows, auto_switch_to_flash=False,
            use_cuda_graph=False, use_async_batching=False, allow_block_sharing=True)
        _PrefixHits(self).attach()
        one_forward_at_a_time(self.wm.model)
        with torch.inference_mode():  # the manager's thread runs in the caller's inference mode
            self.manager = self.wm.model.init_continuous_batching(generation_config=gc, continuous_batching_config=cbc)
            self.logprobs_here = attach_logprobs(self.manager, self.logprobs, lambda: bool(self.want_logprobs))
            self.manager.start()
        threading.Thread(target=self._collect, name="cowest-continuous-results", daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopping = True
        if self.manager is not None:
            self.manager.stop(block=True, timeout=30)

    @property
    def running(self) -> int:
        return len(self.pending)

    def kv_cache_bytes(self) -> int:
        """Bytes of the manager's paged KV cache (allocated once, at the first request)."""
        proc = getattr(self.manager, "batch_processor", None)
        cache = getattr(proc, "cache", None)
        tensor = getattr(cache, "cache_tensor", None)
        return 0 if tensor is None else tensor.numel() * tensor.element_size()

    def health(self) -> dict[str, Any]:
        """What ``GET /health`` reports (cowest.models.batch_server)."""
        return {"status": "error" if self.error else "ok", "scheduler": "continuous", "running": self.running,
                "answered": self.done, "dropped": self.cancelled, "generated_tokens": self.generated,
                "kv_tokens": self.kv_tokens, "prompt_tokens_from_shared_pages": self.reused_total,
                "kv_cache_bytes": self.kv_cache_bytes(), **({"error": self.error} if self.error else {})}

    # ------------------------------------------------------------------ requests

    def submit(self, job: Any) -> Future:
        wants = getattr(job, "top_logprobs", None) is not None
        if job.temperature > 0 or (wants and not self.logprobs_here):
            if self.fallback is None:
                raise BadRequest("this server answers temperature 0 only" + ("" if self.logprobs_here else
                                                                              ", without log-probs"))
            return self.fallback.submit(job)
        if self.error:
            raise RuntimeError(f"the continuous batching engine stopped: {self.error}")
        with self.lock:
            ids = self.wm._encode_prompts([job.messages])[0]
            need = len(ids) + job.max_tokens
            if need > self.n_ctx:
                raise BadRequest(f"prompt ({len(ids)} tokens) + max_tokens ({job.max_tokens}) exceed the context of "
                                 f"{self.n_ctx} tokens")
            if need > self.kv_tokens:
                raise BadRequest(f"prompt ({len(ids)} tokens) + max_tokens ({job.max_tokens}) exceed the KV cache "
                                 f"budget of {self.kv_tokens} tokens (--kv-tokens)")
            rid = job.rid = f"r{next(self.ids)}"
            self.pending[rid] = (job, time.perf_counter(), len(ids))
            if wants:
                self.want_logprobs.add(rid)
        if self.manager.add_request(ids, request_id=rid, max_new_tokens=job.max_tokens, eos_token_id=self.eos) is None:
            with self.lock:
                self.pending.pop(rid, None)
            raise RuntimeError("the continuous batching engine refused the request (stopped or its queue full)")
        return job.future

    def cancel(self, job: Any) -> None:
        """Drop a request whose client left: out of the queue or the running batch, its KV pages freed."""
        rid = job.rid
        if rid is None:  # sampled: the static loop's
            if self.fallback is not None:
                self.fallback.cancel(job)
            return
        with self.lock:
            entry = self.pending.pop(rid, None)
            self.reused.pop(rid, None)
            self.want_logprobs.discard(rid)
            self.logprobs.forget(rid)
        if entry is None:  # already answered
            return
        self.manager.cancel_request(rid)
        self.cancelled += 1
        self.log(f"request {rid}: dropped after {time.perf_counter() - entry[1]:.1f}s, its client left "
                 f"({len(self.pending)} running or queued)")

    def _collect(self) -> None:
        """Hand each finished result to its request's future; if the manager's thread dies, fail what waits."""
        from cowest.models.weak import Completion

        mgr = self.manager
        while True:
            out = mgr.get_result(timeout=0.5)
            if out is None:
                thread = getattr(mgr, "_generation_thread", None)
                if thread is not None and thread.is_alive():
                    continue
                fatal = getattr(mgr.background_thread_status, "fatal_error", None)
                self.error = f"{type(fatal).__name__}: {fatal}" if fatal else "the generation thread ended"
                with self.lock:
                    waiting, self.pending = list(self.pending.values()), {}
                for job, _, _ in waiting:
                    job.future.set_exception(RuntimeError(self.error))
                if waiting or not self.stopping:
                    self.log(f"continuous engine stopped: {self.error}; {len(waiting)} requests failed")
                return
            if not out.is_finished():
                continue
            with self.lock:
                job, t0, n_prompt = self.pending.pop(out.request_id, (None, 0.0, 0))
                self.want_logprobs.discard(out.request_id)
                text = lps = None
                if job is not None and out.error is None:
                    toks = list(out.generated_tokens)
                    end = next((k for k, t in enumerate(toks) if t in self.eos), None)
                    kept = toks if end is None else toks[:end]
                    text = self.wm.tokenizer.decode(kept, skip_special_tokens=True)
                    if getattr(job, "top_logprobs", None) is not None:
                        lps = self.logprobs.tokens(out.request_id, len(kept), self.wm.tokenizer, k=job.top_logprobs)
                self.logprobs.forget(out.request_id)
            if job is None:
                continue
            if out.error is not None:
                job.future.set_exception(RuntimeError(f"generation failed: {out.error}"))
                continue
            c = Completion(text, n_prompt, len(kept) + (end is not None), "length" if end is None else "stop", lps)
            self.done += 1
            self.generated += c.completion_tokens
            job.future.set_result(self.finish(c, job.stop))
            reused = self.reused.pop(out.request_id, 0)
            self.log(f"request {out.request_id}: {n_prompt} prompt ({reused} from shared pages) + "
                     f"{c.completion_tokens} generated tokens in {time.perf_counter() - t0:.1f}s "
                     f"({len(self.pending)} running or queued)")


def one_forward_at_a_time(model: Any) -> None:
    """Let one thread at a time run ``model``'s forward pass (once per model; later calls keep the first lock).

    The manager's thread and the static loop's share the weights. A static-loop forward that overlapped a manager
    step came out wrong: on the tiny test model, with greedy requests decoding in the manager, 40 of 40 static-loop
    answers differed from the same prompts alone, and none with this lock (transformers 5.25; which state inside the
    forward the two share was not found). On a CPU two forwards at once only compete for the same cores anyway."""
    if getattr(model, "_cowest_forward_lock", None) is not None:
        return
    lock, forward = threading.RLock(), model.forward

    @functools.wraps(forward)  # keeps the signature: WeakModel reads the cache argument's name from it
    def locked(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return forward(*args, **kwargs)

    model.forward = locked
    model._cowest_forward_lock = lock


class _PrefixHits(logging.Handler):
    """Counts the prompt tokens the manager found in shared pages (it says so only in a debug message)."""

    PATTERN = re.compile(r"Found a prefix match of (\d+) tokens for request (\S+)")

    def __init__(self, engine: ContinuousEngine):
        super().__init__(logging.DEBUG)
        self.engine = engine

    def attach(self) -> None:
        from transformers.generation.continuous_batching.utils import logger

        before = logger.getEffectiveLevel()
        for h in logger.handlers:  # its own handlers keep printing what they printed: no debug messages
            h.setLevel(max(h.level, before))
        logger.addHandler(self)
        logger.setLevel(logging.DEBUG)

    def emit(self, record: logging.LogRecord) -> None:
        m = self.PATTERN.match(str(record.msg))
        if m:
            n = int(m.group(1))
            self.engine.reused[m.group(2)] = self.engine.reused.get(m.group(2), 0) + n
            self.engine.reused_total += n
