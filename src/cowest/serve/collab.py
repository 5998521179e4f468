"""One collaboration per request: the weak model drafts, the strong model refines (METHOD.md step 5).

Weak generation runs on one worker thread in micro-batches: requests that arrive while a batch is
generating are drafted together in the next one, so the model is never entered by two threads at
once and a burst costs a few batched ``generate`` calls rather than one per request. Strong calls are
plain async HTTP and run concurrently (bounded by the app's admission limit and the client's own
semaphore).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cowest.chat import Messages
from cowest.inference import prompts
from cowest.inference.gate import Gate, draft_scores
from cowest.models.strong import ChatRequest
from cowest.serve.protocol import Reply
from cowest.tasks.base import Example, Task



class GenericTask:
    """Stands in for a task when the recipe names none: the user's message is the question as is.

    Only the two methods the prompts use are provided, so the weak and strong prompts keep exactly the
    shape the method trains and evaluates with.
    """

    name = "generic"
    labels = None

    def instruction(self) -> str:
        return "Answer the user's question or request."

    def answer_format(self) -> str:
        return "your answer"

    def parse_answer(self, text: str) -> str | None:
        return None


@dataclass
class Draft:
    text: str
    prompt_tokens: int
    completion_tokens: int
    confidence: float | None = None  # the gate's score of the draft (None: no gate, or no parsed answer)


Scorer = Callable[[list[Messages], list[str]], list[float | None]]


class WeakBatcher:
    """Serialises weak-model drafting on one thread, batching whatever is queued (up to ``max_batch``)."""

    def __init__(self, weak: Any, *, max_batch: int, max_new_tokens: int | None = None, temperature: float = 0.0,
                 top_p: float = 1.0, scorer: Scorer | None = None):
        self.weak, self.scorer = weak, scorer  # scorer: the gate's confidence, on the same thread as drafting
        self.max_batch = max(1, max_batch)
        self.max_new_tokens = max_new_tokens
        self.temperature, self.top_p = temperature, top_p  # weak.temperature / weak.top_p
        self.batches: list[int] = []  # sizes of the batches run, for tests and logs
        self._queue: asyncio.Queue[tuple[Messages, asyncio.Future[Draft]]] | None = None
        self._worker: asyncio.Task[None] | None = None

    async def draft(self, messages: Messages) -> Draft:
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="cowest-weak-batcher")
        fut: asyncio.Future[Draft] = asyncio.get_running_loop().create_future()
        assert self._queue is not None
        await self._queue.put((messages, fut))
        return await fut

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [(m, f) for m, f in batch if not f.done()]  # the client went away
            if not batch:
                continue
            self.batches.append(len(batch))
            try:
                drafts = await asyncio.to_thread(self._generate, [m for m, _ in batch])
            except Exception as e:  # noqa: BLE001 - each waiting request gets the failure
                for _, f in batch:
                    if not f.done():
                        f.set_exception(e)
                continue
            for (_, f), d in zip(batch, drafts):
                if not f.done():
                    f.set_result(d)

    def _generate(self, batch: list[Messages]) -> list[Draft]:
        outs = self.weak.generate(batch, n=1, temperature=self.temperature, top_p=self.top_p,
                                  max_new_tokens=self.max_new_tokens, desc="serve: weak")
        texts = [o[0] for o in outs]
        conf = self.scorer(batch, texts) if self.scorer else [None] * len(batch)
        return [Draft(t, *token_counts(self.weak, m, t), confidence=c) for m, t, c in zip(batch, texts, conf)]

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None


def token_counts(weak: Any, messages: Messages, text: str) -> tuple[int, int]:
    """(prompt, completion) tokens of one draft in the weak model's own tokenizer."""
    tok = getattr(weak, "tokenizer", None)
    if tok is None or not hasattr(weak, "format_prompt"):
        return sum(len(m["content"].split()) for m in messages), len(text.split())
    prompt = len(tok(weak.format_prompt(messages), add_special_tokens=False)["input_ids"])
    limit = getattr(getattr(weak, "cfg", None), "max_prompt_tokens", None)
    if limit:
        prompt = min(prompt, limit)  # the model only saw this many
    return prompt, len(tok(text, add_special_tokens=False)["input_ids"])


class Collaborator:
    """Turns a question into a :class:`Reply`: draft with the weak model, refine with the strong one. With a
    ``gate`` (:mod:`cowest.inference.gate`), a draft that passes it is the answer and the strong model is not
    called."""

    def __init__(self, weak: Any, strong: Any, *, task: Task | GenericTask, fmt: str, max_batch: int,
                 max_new_tokens: int | None = None, temperature: float = 0.0, top_p: float = 1.0,
                 gate: Gate | None = None, agreement: tuple[int, float] = (4, 1.0), seed: int = 0):
        self.task, self.fmt, self.strong, self.gate = task, fmt, strong, gate
        scorer = None
        if gate is not None:
            k, temp = agreement

            def scorer(msgs: list[Messages], texts: list[str]) -> list[float | None]:
                exs = [self._example("") for _ in msgs]
                answers = [self.task.parse_answer(t) for t in texts]
                return draft_scores(weak, self.task, msgs, exs, texts, answers, which=[gate.score], k=k,
                                    temperature=temp, seed=seed, desc="serve: gate")[gate.score]
        self.batcher = WeakBatcher(weak, max_batch=max_batch, max_new_tokens=max_new_tokens,
                                   temperature=temperature, top_p=top_p, scorer=scorer)

    def _example(self, question: str) -> Example:
        return Example(id="serve", question=question, gold=[])

    def weak_messages(self, question: str) -> Messages:
        return prompts.weak_messages(self.task, self._example(question), self.fmt)  # type: ignore[arg-type]

    def strong_messages(self, question: str, draft: str) -> Messages:
        return prompts.collab_messages(self.task, self._example(question), draft, self.fmt)  # type: ignore[arg-type]

    async def answer(self, question: str, *, temperature: float | None = None, top_p: float | None = None,
                     max_tokens: int | None = None, stop: list[str] | None = None) -> Reply:
        d = await self.batcher.draft(self.weak_messages(question))
        gated = {} if self.gate is None else {"route": "strong", "confidence": d.confidence, "score": self.gate.score}
        if self.gate is not None and not self.gate.to_strong(d.confidence):
            return Reply(content=d.text, draft=d.text, weak_prompt_tokens=d.prompt_tokens,
                         weak_completion_tokens=d.completion_tokens, strong_prompt_tokens=0,
                         strong_completion_tokens=0, answer=self.task.parse_answer(d.text), **{**gated, "route": "weak"})
        req = ChatRequest(messages=self.strong_messages(question, d.text), temperature=temperature,
                          top_p=top_p, max_tokens=max_tokens, stop=stop)
        res = await self.strong.achat(req, tag="serve")
        return Reply(
            content=res.text,
            draft=d.text,
            weak_prompt_tokens=d.prompt_tokens,
            weak_completion_tokens=d.completion_tokens,
            strong_prompt_tokens=res.prompt_tokens,
            strong_completion_tokens=res.completion_tokens,
            answer=self.task.parse_answer(res.text),
            cost_usd=self.cost(res.prompt_tokens, res.completion_tokens),
            **gated,
        )

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD of one strong call at ``strong.price_*_per_1k`` (0 when no prices are set)."""
        c = getattr(self.strong, "cfg", None)
        if c is None:
            return 0.0
        return (prompt_tokens * c.price_prompt_per_1k + completion_tokens * c.price_completion_per_1k) / 1000

    async def aclose(self) -> None:
        await self.batcher.aclose()
