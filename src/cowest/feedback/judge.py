"""The LLM judge (the paper's evaluator): the strong model scores an answer against the gold answer.

The judge sees the question, the gold answer and the candidate (the collaboration's or the strong
model's output) and rates (a) the coherence of the reasoning and (b) agreement with the gold answer on
a 1-10 scale. :func:`parse_judge_score` reads the number from free-form judge text; ``None`` means no
score could be read (the caller retries with a new sample, then records the score as missing).
"""

from __future__ import annotations

import json
import re

from cowest.chat import Messages
from cowest.tasks.base import Example, Task


SCALE_MIN, SCALE_MAX = 1.0, 10.0

JUDGE_SYSTEM = "You are a strict, fair grader of answers to exam questions."


def judge_messages(task: Task, example: Example, candidate: str) -> Messages:
    gold = " | ".join(example.gold)
    return [
        {"role": "system", "content": JUDGE_SYSTEM},
        {
            "role": "user",
            "content": (
                f"{task.instruction()}\n\nQuestion:\n{example.question.strip()}\n\n"
                f"Gold answer: {gold}\n\n"
                f"Candidate response:\n<response>\n{candidate.strip()}\n</response>\n\n"
                "Grade the candidate on a scale from 1 to 10, judging two things: (a) whether its reasoning "
                "is coherent and correct, and (b) whether its final answer agrees with the gold answer. "
                "1 = wrong answer and incoherent reasoning; 5 = partly right; 10 = the gold answer, reached "
                "by sound reasoning. A wrong final answer scores at most 3.\n"
                "Write one sentence of justification, then the last line exactly in the form 'Score: <1-10>'."
            ),
        },
    ]


_NUM = r"(\d+(?:\.\d+)?)"
# Tried in order; the first that matches wins. Later occurrences beat earlier ones within a pattern
# (a judge that thinks aloud usually states the final score last).
_PATTERNS = [
    re.compile(rf"\b(?:final\s+)?(?:score|rating|grade)\s*(?:is|of|=|:)?\s*[*_`\s]*{_NUM}\s*(?:/\s*10|out\s+of\s+10)?", re.I),
    re.compile(rf"{_NUM}\s*(?:/\s*10|out\s+of\s+10)\b", re.I),
    re.compile(rf"\*\*\s*{_NUM}\s*\*\*"),
]


def parse_judge_score(text: str | None) -> float | None:
    """The 1-10 score in a judge's reply, or None when there is none (never a guessed 0)."""
    if not text or not text.strip():
        return None
    js = _json_score(text)
    if js is not None:
        return js
    for pat in _PATTERNS:
        hits = [_in_scale(m.group(1)) for m in pat.finditer(text)]
        hits = [h for h in hits if h is not None]
        if hits:
            return hits[-1]
    # A reply that is just a number ("8", "7.5.") is a score.
    m = re.fullmatch(rf"\s*[*_`]*{_NUM}[*_`]*\s*\.?\s*", text)
    if m:
        return _in_scale(m.group(1))
    return None


def _json_score(text: str) -> float | None:
    for m in re.finditer(r"\{[^{}]*\}", text):
        try:
            obj = json.loads(m.group(0))
        except ValueError:
            continue
        if isinstance(obj, dict):
            for k in ("score", "rating", "grade"):
                v = obj.get(k)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    return _in_scale(str(v))
                if isinstance(v, str):
                    return _in_scale(v.strip().split("/")[0])
    return None


def _in_scale(raw: str) -> float | None:
    try:
        v = float(raw)
    except ValueError:
        return None
    return v if SCALE_MIN <= v <= SCALE_MAX else None


def normalise(score: float) -> float:
    """A 1-10 judge score mapped to [0, 1]."""
    return (score - SCALE_MIN) / (SCALE_MAX - SCALE_MIN)
