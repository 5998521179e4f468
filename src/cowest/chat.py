"""What every layer shares about chats: the message type, and the answer line.

A chat is a list of ``{"role", "content"}`` dicts (OpenAI's shape; transformers' chat templates read the same).
Every final answer (an SFT target, a draft, the strong model's output) ends with a line ``Answer: <answer>``.
This module writes that line, the words that ask for it, and cuts it out of a text; the task parsers
(:mod:`cowest.tasks.parsing`) read the answer back, the last ``Answer:`` marker first, looser markers after.
"""

from __future__ import annotations

Messages = list[dict[str, str]]

ANSWER = "Answer:"


def answer_line(answer: str) -> str:
    """The final line of an answer: ``Answer: <answer>``."""
    return f"{ANSWER} {answer}"


def answer_form(fmt: str) -> str:
    """How a prompt asks for the answer line: ``'Answer: <fmt>'``."""
    return f"'{ANSWER} <{fmt}>'"


def before_answer(text: str) -> str:
    """The text up to (not including) its last answer line: the reasoning of a draft (with a final newline
    when the text has no answer line)."""
    idx = text.lower().rfind(ANSWER.lower())
    return text[:idx] if idx >= 0 else (text.rstrip() + "\n" if text.strip() else "")


def _is_answer_line(line: str) -> bool:
    return line.strip().lower().startswith(ANSWER.lower())


def answer_line_count(text: str) -> int:
    """How many lines of ``text`` start with ``Answer:``: a draft with more than one did not stop after its
    answer (a small model's failure mode, one DPO can make more common)."""
    return sum(_is_answer_line(ln) for ln in (text or "").splitlines())


def drop_answer_lines(text: str) -> str:
    """``text`` without any line that starts with ``Answer:`` (a rationale must not carry its own answer)."""
    lines = [ln for ln in (text or "").strip().splitlines() if not _is_answer_line(ln)]
    return "\n".join(lines).strip()
