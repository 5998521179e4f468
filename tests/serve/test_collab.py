"""Weak drafting is serialised on one worker and batched: deterministic checks with a gated stand-in."""

from __future__ import annotations

import asyncio
import threading

from cowest.serve.collab import WeakBatcher, token_counts


class GatedWeak:
    """Records each generate() batch; the first call blocks until released, so later requests queue."""

    def __init__(self):
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.active = 0
        self.max_active = 0

    def generate(self, prompts, *, n, temperature, top_p, max_new_tokens, desc):
        self.sampling = (temperature, top_p)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self.calls.append([p[-1]["content"] for p in prompts])
        self.entered.set()
        self.release.wait(10)
        self.active -= 1
        return [[f"draft for {p[-1]['content']}"] for p in prompts]


def msgs(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_requests_queued_during_a_batch_are_drafted_together_in_order():
    weak = GatedWeak()
    b = WeakBatcher(weak, max_batch=3)

    async def main():
        first = asyncio.ensure_future(b.draft(msgs("q0")))
        await asyncio.to_thread(weak.entered.wait, 10)  # q0 is generating
        rest = [asyncio.ensure_future(b.draft(msgs(f"q{i}"))) for i in range(1, 6)]
        await asyncio.sleep(0.05)
        weak.release.set()
        out = await asyncio.gather(first, *rest)
        await b.aclose()
        return out

    drafts = asyncio.run(main())
    assert [d.text for d in drafts] == [f"draft for q{i}" for i in range(6)]
    assert weak.calls == [["q0"], ["q1", "q2", "q3"], ["q4", "q5"]]  # max_batch respected, FIFO
    assert b.batches == [1, 3, 2] and weak.max_active == 1  # never two generate() calls at once
    assert drafts[0].prompt_tokens == 1 and drafts[0].completion_tokens == 3  # word counts without a tokenizer


def test_a_failing_batch_fails_its_requests_and_the_worker_survives():
    class Flaky:
        calls = 0

        def generate(self, prompts, **kw):
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RuntimeError("CUDA out of memory")
            return [["ok"] for _ in prompts]

    b = WeakBatcher(Flaky(), max_batch=4)

    async def main():
        try:
            await b.draft(msgs("a"))
        except RuntimeError as e:
            first = str(e)
        second = (await b.draft(msgs("b"))).text
        await b.aclose()
        return first, second

    assert asyncio.run(main()) == ("CUDA out of memory", "ok")


def test_token_counts_use_the_weak_tokenizer_and_prompt_limit(weak_model):
    m = [{"role": "user", "content": "the patient has a fever and pain " * 5}]
    p, c = token_counts(weak_model, m, "the answer is A")
    ids = weak_model.tokenizer(weak_model.format_prompt(m), add_special_tokens=False)["input_ids"]
    assert p == min(len(ids), weak_model.cfg.max_prompt_tokens)
    assert c == len(weak_model.tokenizer("the answer is A", add_special_tokens=False)["input_ids"])


def test_drafts_use_the_configured_weak_sampling():
    weak = GatedWeak()
    weak.release.set()
    b = WeakBatcher(weak, max_batch=2, temperature=0.6, top_p=0.8)
    assert asyncio.run(b.draft(msgs("q"))).text == "draft for q"
    assert weak.sampling == (0.6, 0.8)
    assert WeakBatcher(weak, max_batch=1).temperature == 0.0  # greedy unless configured
