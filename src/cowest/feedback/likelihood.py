"""The ``likelihood`` evaluator's score: the strong model's probability of the gold option at its answer.

A 0/1 metric gives Δ = 0 whenever the collaboration picks the same option as the strong model alone, however
much more (or less) sure the draft made it. On a choice task (options named by single letters) the strong
answer's tokens come back with their ``top_logprobs`` alternatives (OpenAI's ``logprobs``; llama.cpp's
server returns the same), and E = p(gold letter) at the answer position is graded:

- the answer position is the first token with text after the last answer marker ("Answer:", "the answer
  is", ...) whose text is an option letter; with no such marker, the last token that spells the parsed answer;
- E = the summed probability of the alternatives there that spell the gold letter (" B", "B", "**B", "(B");
  a gold letter outside the top N counts 0 (it is below the N-th alternative's probability);
- no answer position (no readable answer): None, and the evaluator falls back to the 0/1 metric.
"""

from __future__ import annotations

import math
from typing import Any

from cowest.errors import ConfigError
from cowest.tasks.base import Task
from cowest.tasks.parsing import marker_spans

TOP_LOGPROBS = 10  # alternatives asked per answer token: covers 4-5 options; OpenAI allows up to 20
_NOISE = " \t\r\n*_`'\"()[]{}.:,;"  # what surrounds a letter in a token (markdown, brackets, punctuation)


def check_choice_task(task: Task) -> tuple[str, ...]:
    """The task's option letters, or a ConfigError: the evaluator reads one letter's probability."""
    labels = tuple(task.labels or ())
    if not labels or any(len(x) != 1 for x in labels):
        raise ConfigError(
            f"feedback.evaluator=likelihood needs a multiple-choice task whose options are single letters; task "
            f"{task.name!r} has " + (f"labels {', '.join(labels)}" if labels else "free-form answers")
            + ": use feedback.evaluator=metric (token F1 for free-form answers) or judge")
    return labels


def spelled(token: str) -> str:
    """The letter (or word) a token spells once markdown, brackets and punctuation are dropped, case-folded."""
    return token.strip(_NOISE).casefold()


def answer_position(logprobs: list[dict[str, Any]], labels: tuple[str, ...], answer: str | None) -> int | None:
    """Index of the token that states the answer, or None (see the module docstring)."""
    letters = {x.casefold() for x in labels}
    starts, text = [], ""
    for t in logprobs:
        starts.append(len(text))
        text += t["token"]
    for a, b in marker_spans(text):  # the last marker first
        for i, st in enumerate(starts):
            end = st + len(logprobs[i]["token"])
            if end <= a or st >= b:
                continue
            said = spelled(logprobs[i]["token"][max(0, a - st):])
            if said:  # the first token with text after the marker
                if said in letters:
                    return i
                break
    if answer is not None:
        for i in range(len(logprobs) - 1, -1, -1):
            if spelled(logprobs[i]["token"]) == answer.casefold():
                return i
    return None


def gold_probability(logprobs: list[dict[str, Any]], gold: str, labels: tuple[str, ...],
                     answer: str | None) -> float | None:
    """p(gold letter) at the answer position, in [0, 1]; None where no answer position is found."""
    i = answer_position(logprobs, labels, answer)
    if i is None:
        return None
    tok = logprobs[i]
    alts = {t: lp for t, lp in tok.get("top") or []}
    alts.setdefault(tok["token"], tok["logprob"])  # the sampled token, should the endpoint leave it out
    p = sum(math.exp(lp) for t, lp in alts.items() if spelled(t) == gold.casefold())
    return min(1.0, p)
