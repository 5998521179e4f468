"""The two gated systems, on top of the five of :mod:`cowest.inference.systems`:

- ``routed``: the calibrated gate (:mod:`cowest.inference.gate`) on the gate model's greedy drafts; a draft
  below the threshold goes to the strong model exactly as in its collaboration partner (``cowest`` with the
  aligned model, ``collab`` with the SFT one), the rest are answered by the draft alone.
- ``random_gate``: the same drafts, a seeded random choice of the same share sent to the strong model.

The drafts are the partner's own (read from its rows when it ran first), so every strong answer they need is
a cache hit: the gated systems cost no new paid calls. Each row keeps the draft's answer, its item scores and
its confidence, so the eval can draw the whole routing curve (:mod:`cowest.eval.routing`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from cowest.inference import prompts
from cowest.inference.gate import Gate, draft_scores
from cowest.inference.systems import SystemRunner
from cowest.io import JsonlAppender


def partner(kind: str) -> str:
    """The collaboration a gate on model ``kind`` routes to."""
    return "cowest" if kind == "aligned" else "collab"


class GatedRunner(SystemRunner):
    """:class:`SystemRunner` plus ``routed`` and ``random_gate``. ``gate()`` calibrates (or reads) the gate;
    ``gate_kind`` is the model it drafts with (``weights.gate_model``)."""

    def __init__(self, *args: Any, gate: Callable[[], Gate] | None = None, gate_kind: str = "aligned", **kw: Any):
        super().__init__(*args, **kw)
        self._gate_fn, self.gate_kind = gate, gate_kind
        self._gate: Gate | None = None
        self._gated: dict[str, list[Any]] | None = None
        self.finished: dict[str, list[dict[str, Any]]] = {}

    def run(self, system: str) -> list[dict[str, Any]]:
        rows = super().run(system)
        self.finished[system] = rows
        return rows

    @property
    def gate(self) -> Gate:
        if self._gate is None:
            if self._gate_fn is None:
                raise ValueError("a gated system needs a gate")
            self._gate = self._gate_fn()
        return self._gate

    def gated_drafts(self) -> dict[str, list[Any]]:
        """texts, answers and confidences (the gate's score) of the gate model's drafts, for every example."""
        if self._gated is None:
            g, wm = self.gate, self.load_weak(self.gate_kind)
            done = {str(r["id"]): r.get("weak_draft") for r in self.finished.get(partner(self.gate_kind), [])}
            if all(isinstance(done.get(ex.id), str) for ex in self.examples):
                texts = [done[ex.id] for ex in self.examples]  # the very drafts the partner sent: cache hits
            else:  # the journaled drafts (the SFT journal keeps its confidences for the weak system's rows)
                got = self._drafts(self.gate_kind, list(range(len(self.examples))), confidence=self.gate_kind == "sft")
                texts = [got[i]["text"] for i in range(len(self.examples))]
            answers = [self.task.parse_answer(t, example=ex) for t, ex in zip(texts, self.examples)]
            msgs = [prompts.weak_messages(self.task, ex, self.fmt) for ex in self.examples]
            a = self.cfg.gate
            conf = draft_scores(wm, self.task, msgs, self.examples, texts, answers, which=[g.score], k=a.agreement_k,
                                temperature=a.agreement_temperature, seed=self.cfg.seed, desc="gate")[g.score]
            self._gated = {"texts": texts, "answers": answers, "confidence": conf}
        return self._gated

    def _gated_rows(self, system: str, todo_idx: list[int], send: set[int], out: JsonlAppender) -> None:
        d = self.gated_drafts()

        def info(i: int) -> dict[str, Any]:
            ans = d["answers"][i]
            return {"weak_draft": d["texts"][i], "weak_prediction": ans, "confidence": d["confidence"][i],
                    "confidence_score": self.gate.score, "route": "strong" if i in send else "weak",
                    "weak_scores": self.task.item_scores(ans, self.examples[i])}

        for i in todo_idx:
            if i not in send:
                ex = self.examples[i]
                out.write(self._row(system, ex, prompt=prompts.weak_messages(self.task, ex, self.fmt),
                                    prediction=d["answers"][i], **info(i)))
        strong = [i for i in todo_idx if i in send]
        msgs = [prompts.collab_messages(self.task, self.examples[i], d["texts"][i], self.fmt) for i in strong]
        self._strong_refine(system, [self.examples[i] for i in strong], msgs, [info(i) for i in strong], out)

    def _run_routed(self, todo_idx: list[int], out: JsonlAppender) -> None:
        conf = self.gated_drafts()["confidence"]
        self._gated_rows("routed", todo_idx, {i for i, c in enumerate(conf) if self.gate.to_strong(c)}, out)

    def random_share(self) -> float:
        """The routed system's share of strong calls on these questions (the gate's target when it did not run)."""
        rows = self.finished.get("routed")
        if rows:
            return sum(r.get("route") == "strong" for r in rows) / len(rows)
        conf = self.gated_drafts()["confidence"]
        return sum(self.gate.to_strong(c) for c in conf) / len(conf)

    def _run_random_gate(self, todo_idx: list[int], out: JsonlAppender) -> None:
        n = len(self.examples)
        m = round(self.random_share() * n)
        send = set(random.Random(self.cfg.seed).sample(range(n), m))
        self._gated_rows("random_gate", todo_idx, send, out)
