"""Evaluators E(answer, x) for collaborative feedback, all in [0, 1] (None = could not be scored).

- ``metric``: the task's own per-item reward against the gold answer (F1 or correctness);
- ``judge``: the LLM judge (:mod:`cowest.feedback.judge`), 1-10 mapped to [0, 1]; an unreadable verdict
  is asked again with a new sample (up to ``JUDGE_RETRIES`` times), then recorded as missing, never 0;
- ``both``: ``judge_weight * judge + (1 - judge_weight) * metric``; missing when the judge is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cowest.feedback.judge import judge_messages, normalise, parse_judge_score
from cowest.tasks.base import Example, Task

JUDGE_RETRIES = 2
RETRY_TEMPERATURE = 0.7  # a retry at temperature 0 would usually repeat the unreadable verdict


@dataclass
class Scored:
    score: float | None  # what Δ is computed from
    answer: str | None  # the task's parse of the output
    metric: float | None = None
    judge: float | None = None  # raw 1-10
    judge_texts: list[str] = field(default_factory=list)  # every verdict asked for, in order


class Evaluator:
    """``score(task, [(example, output), ...]) -> [Scored, ...]`` in input order."""

    def __init__(self, kind: str, *, judge_client: Any = None, judge_weight: float = 0.5, tag: str = "feedback_judge"):
        if kind not in ("metric", "judge", "both"):
            raise ValueError(f"unknown evaluator {kind!r}")
        if kind != "metric" and judge_client is None:
            raise ValueError(f"evaluator {kind!r} needs a judge client")
        self.kind = kind
        self.judge_client = judge_client
        self.judge_weight = judge_weight
        self.tag = tag

    def score(self, task: Task, items: list[tuple[Example, str]], *, desc: str = "judge") -> list[Scored]:
        out = []
        for ex, text in items:
            ans = task.parse_answer(text, example=ex)
            out.append(Scored(score=None, answer=ans, metric=float(task.item_reward(ans, ex))))
        if self.kind != "metric":
            self._judge(task, items, out, desc)
        for s in out:
            s.score = self._combine(s)
        return out

    def _combine(self, s: Scored) -> float | None:
        if self.kind == "metric":
            return s.metric
        if s.judge is None:
            return None
        j = normalise(s.judge)
        if self.kind == "judge":
            return j
        w = self.judge_weight
        return w * j + (1.0 - w) * float(s.metric or 0.0)

    def _judge(self, task: Task, items: list[tuple[Example, str]], out: list[Scored], desc: str) -> None:
        from cowest.models.strong import ChatRequest

        base_temp = float(self.judge_client.cfg.temperature) if hasattr(self.judge_client, "cfg") else 0.0
        todo = list(range(len(items)))
        for attempt in range(JUDGE_RETRIES + 1):
            if not todo:
                break
            temp = None if attempt == 0 else max(base_temp, RETRY_TEMPERATURE)
            # Identical (question, output) pairs share one request: asked once, paid once.
            unique: dict[str, int] = {}
            reqs: list[Any] = []
            slot = []
            for i in todo:
                ex, text = items[i]
                msgs = judge_messages(task, ex, text)
                key = repr(msgs)
                if key not in unique:
                    unique[key] = len(reqs)
                    reqs.append(ChatRequest(messages=msgs, sample_index=attempt, temperature=temp))
                slot.append(unique[key])
            res = self.judge_client.chat_batch(reqs, tag=self.tag, desc=f"{desc} (try {attempt + 1})" if attempt else desc)
            still = []
            for i, j in zip(todo, slot):
                out[i].judge_texts.append(res[j].text)
                out[i].judge = parse_judge_score(res[j].text)
                if out[i].judge is None:
                    still.append(i)
            todo = still


def make_evaluator(kind: str, judge_client: Any = None, judge_weight: float = 0.5) -> Evaluator:
    return Evaluator(kind, judge_client=judge_client, judge_weight=judge_weight)
