"""Evaluators E(answer, x) for collaborative feedback, all in [0, 1] (None = could not be scored).

- ``metric``: the task's own per-item score against the gold answer, ``feedback.metric``: ``auto`` = token F1
  for free-form answers (graded: 0.5 for half the gold tokens), correctness for choices and labels; or a
  named per-item score (``em``, ``f1``, ``accuracy``);
- ``judge``: the LLM judge (:mod:`cowest.feedback.judge`), 1-10 mapped to [0, 1]; an unreadable verdict
  is asked again with a new sample (up to ``JUDGE_RETRIES`` times), then recorded as missing, never 0;
- ``both``: ``judge_weight * judge + (1 - judge_weight) * metric``; missing when the judge is missing;
- ``likelihood`` (choice tasks): the strong model's probability of the gold option at its answer
  (:mod:`cowest.feedback.likelihood`), from the log-probs of the very answers scored; the metric where an
  answer has no readable option.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cowest.errors import ConfigError, StrongAPIError
from cowest.feedback.judge import judge_messages, normalise, parse_judge_score
from cowest.tasks.base import Example, Task

KINDS = ("metric", "judge", "both", "likelihood")

JUDGE_RETRIES = 2
RETRY_TEMPERATURE = 0.7  # a retry at temperature 0 would usually repeat the unreadable verdict


@dataclass
class Scored:
    score: float | None  # what Δ is computed from
    answer: str | None  # the task's parse of the output
    metric: float | None = None
    judge: float | None = None  # raw 1-10
    judge_texts: list[str] = field(default_factory=list)  # every verdict asked for, in order
    likelihood: float | None = None  # p(gold option) at the answer; None: no readable option (metric used)


class Evaluator:
    """``score(task, [(example, output), ...]) -> [Scored, ...]`` in input order."""

    def __init__(self, kind: str, *, judge_client: Any = None, judge_weight: float = 0.5, tag: str = "feedback_judge",
                 metric: str = "auto"):
        if kind not in KINDS:
            raise ValueError(f"unknown evaluator {kind!r}")
        if kind in ("judge", "both") and judge_client is None:
            raise ValueError(f"evaluator {kind!r} needs a judge client")
        self.kind = kind
        self.judge_client = judge_client
        self.judge_weight = judge_weight
        self.tag = tag
        self.metric = metric

    @property
    def top_logprobs(self) -> int | None:
        """Log-probs the scored strong answers must be asked for (None: none needed)."""
        from cowest.feedback.likelihood import TOP_LOGPROBS

        return TOP_LOGPROBS if needs_logprobs(self.kind) else None

    def score(self, task: Task, items: list[tuple[Example, str]], *, desc: str = "judge",
              logprobs: list[list[dict[str, Any]] | None] | None = None) -> list[Scored]:
        """``logprobs``: per item, the answer's token log-probs (``ChatResult.logprobs``); ``likelihood`` needs them."""
        out = []
        for ex, text in items:
            ans = task.parse_answer(text, example=ex)
            out.append(Scored(score=None, answer=ans, metric=self.metric_score(task, ans, ex)))
        if self.kind in ("judge", "both"):
            self._judge(task, items, out, desc)
        if self.kind == "likelihood":
            self._likelihood(task, items, out, logprobs)
        for s in out:
            s.score = self._combine(s)
        return out

    def metric_score(self, task: Task, ans: str | None, ex: Example) -> float:
        """The metric part of a score: ``feedback.metric`` of answer ``ans`` against ``ex``'s gold."""
        if self.metric == "auto":
            return float(task.item_reward(ans, ex))
        scores = task.item_scores(ans, ex)
        if self.metric not in scores:
            raise ConfigError(f"feedback.metric={self.metric} is not a per-item score of task {task.name!r}; "
                              f"valid: auto, {', '.join(scores)}")
        return float(scores[self.metric])

    def _likelihood(self, task: Task, items: list[tuple[Example, str]], out: list[Scored],
                    logprobs: list[list[dict[str, Any]] | None] | None) -> None:
        from cowest.feedback.likelihood import check_choice_task, gold_probability

        labels = check_choice_task(task)
        if logprobs is None or len(logprobs) != len(items) or any(lp is None for lp in logprobs):
            raise StrongAPIError("feedback.evaluator=likelihood needs the strong model's token log-probs "
                                 "(OpenAI logprobs/top_logprobs) and the endpoint returned none: use an endpoint "
                                 "that returns them (strong.local.engine=llama.cpp, OpenAI) or feedback.evaluator=metric")
        for (ex, _), s, lp in zip(items, out, logprobs):
            s.likelihood = gold_probability(lp, task.gold_answer(ex), labels, s.answer)

    def _combine(self, s: Scored) -> float | None:
        if self.kind == "metric":
            return s.metric
        if self.kind == "likelihood":
            return s.metric if s.likelihood is None else s.likelihood
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
        # A question's answers side by side (feedback scores every z, then every draft's answer): their judge
        # prompts share the question and the gold, which a server that keeps its last prompt's KV cache reads once.
        first: dict[str, int] = {}
        for i, (ex, _) in enumerate(items):
            first.setdefault(ex.id, i)
        todo = sorted(range(len(items)), key=lambda i: first[items[i][0].id])
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


def check_evaluator(kind: str, task: Task, metric: str = "auto", example: Example | None = None) -> None:
    """A ConfigError, before anything is drafted or paid for, when evaluator ``kind`` (with ``feedback.metric``)
    cannot score ``task`` (``example``: one of its questions, to try the metric on)."""
    if kind == "likelihood":
        from cowest.feedback.likelihood import check_choice_task

        check_choice_task(task)
    if example is not None:
        Evaluator("metric", metric=metric).metric_score(task, None, example)


def make_evaluator(kind: str, judge_client: Any = None, judge_weight: float = 0.5, metric: str = "auto") -> Evaluator:
    return Evaluator(kind, judge_client=judge_client, judge_weight=judge_weight, metric=metric)


def needs_logprobs(kind: str) -> bool:
    """Whether evaluator ``kind`` reads the strong answers' token log-probs (a local server then computes them)."""
    return kind == "likelihood"
