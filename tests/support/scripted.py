"""A scripted strong model for the demo task, for the OpenAI test server: alone it is always wrong; shown a
draft, it answers the gold letter when the draft's sha256 starts with an even byte (about half the drafts), so
a test can compute every score by hand from the drafts."""

from __future__ import annotations

import hashlib
import re
from typing import Any


def demo_gold(split: str = "train") -> dict[str, str]:
    """Question text -> gold letter of the demo task's ``split``."""
    from cowest.config import TaskConfig
    from cowest.tasks import get_task

    return {ex.question.strip(): ex.gold[0] for ex in get_task(TaskConfig(name="demo")).load(split)}


GOLD = demo_gold()


def draft_helps(draft: str) -> bool:
    return hashlib.sha256(draft.encode()).digest()[0] % 2 == 0


def hash_responder(messages: list[dict[str, Any]], body: dict[str, Any]) -> str:
    user = messages[-1]["content"]
    gold = next(g for q, g in GOLD.items() if q in user)
    wrong = "A" if gold != "A" else "B"
    m = re.search(r"<draft>\n(.*?)\n</draft>", user, re.S)
    return f"Answer: {gold if m is not None and draft_helps(m.group(1)) else wrong}"
