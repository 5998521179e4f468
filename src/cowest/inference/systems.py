"""The five systems compared side by side, each producing one prediction row per question.

- ``weak``: the (SFT) weak model alone, greedy, in the run's interaction format.
- ``strong``: the strong model alone, zero-shot chain of thought.
- ``superICL``: the strong model sees the weak model's prediction and confidence (Xu et al. 2023),
  with a few training examples shown the same way as demonstrations.
- ``collab``: the SFT weak model drafts, the strong model refines (collaboration without alignment).
- ``cowest``: the same with the DPO-aligned weak model.

The gated systems ``routed`` and ``random_gate`` are in :mod:`cowest.inference.routed`.

Rows are appended to ``eval/predictions/<system>.jsonl`` as they finish, so an interrupted eval resumes
without repeating work; strong answers also sit in the SQLite cache. With ``drafts_dir`` each model's drafts
are journaled there too (``sft.jsonl``, ``aligned.jsonl``) once drawn, so a resume that still owes strong
answers sends the very drafts it drew before instead of drafting all questions again (minutes on a CPU,
and a sampled or low-bit-different draft would be a new, paid request).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cowest.chat import ANSWER, Messages, answer_line, before_answer
from cowest.config import RunConfig
from cowest.inference import prompts
from cowest.io import JsonlAppender
from cowest.models.strong import ChatRequest, StrongClient
from cowest.tasks.base import Example, Task

N_SUPERICL_DEMOS = 3


def unsupported(system: str, fmt: str) -> str | None:
    """Why ``system`` cannot run in interaction format ``fmt``, or None when it can."""
    if fmt == "knowledge" and system in ("weak", "superICL", "routed", "random_gate"):
        return ("not run with task.format=knowledge: the weak model writes background knowledge there, not an "
                "answer, so it has no prediction to score, to show the strong model or to answer with alone")
    return None


@dataclass
class Drafts:
    """Greedy weak drafts for a list of examples, with the parsed answer and its confidence."""

    texts: list[str]
    answers: list[str | None]
    confidences: list[float | None]


def weak_drafts(wm: Any, task: Task, examples: list[Example], fmt: str, *, desc: str, confidence: bool,
                temperature: float = 0.0, top_p: float = 1.0, seed: int = 0) -> Drafts:
    """One draft per example (greedy unless ``temperature`` > 0: ``weak.temperature``/``weak.top_p``)."""
    msgs = [prompts.weak_messages(task, ex, fmt) for ex in examples]
    texts = [outs[0] for outs in wm.generate(msgs, n=1, temperature=temperature, top_p=top_p, seed=seed, desc=desc)]
    # knowledge drafts hold no answer (the weak and superICL systems are not run in that format: unsupported())
    answers = [task.parse_answer(t, example=ex) if fmt != "knowledge" else None for t, ex in zip(texts, examples)]
    confs: list[float | None] = [None] * len(examples)
    if confidence:
        confs = answer_confidence(wm, task, msgs, texts, answers)
    return Drafts(texts, answers, confs)


def answer_confidence(
    wm: Any, task: Task, msgs: list[Messages], texts: list[str], answers: list[str | None]
) -> list[float | None]:
    """P(answer | prompt, the draft's reasoning): over the label set for closed tasks, else the
    geometric-mean token probability of the free-form answer (SuperICL's confidence)."""
    out: list[float | None] = [None] * len(texts)
    todo = [i for i, a in enumerate(answers) if a is not None]
    if not todo:
        return out
    prefixes = [before_answer(texts[i]) for i in todo]
    if task.labels:
        cands = [[p + answer_line(lab) for lab in task.labels] for p in prefixes]
        probs = wm.choice_probs([msgs[i] for i in todo], cands)
        for i, p in zip(todo, probs):
            out[i] = float(p[task.labels.index(answers[i])]) if answers[i] in task.labels else None
    else:
        lps = wm.continuation_logprobs(
            [msgs[i] for i in todo], [f"{p}{ANSWER} " for p in prefixes], [str(answers[i]) for i in todo]
        )
        for i, (lp, ntok) in zip(todo, lps):
            out[i] = math.exp(lp / max(ntok, 1))
    return out


class SystemRunner:
    """Runs the requested systems on ``examples`` and writes their prediction rows."""

    def __init__(
        self,
        cfg: RunConfig,
        task: Task,
        examples: list[Example],
        strong: StrongClient,
        out_dir: Path,
        *,
        load_weak: Callable[[str], Any],  # "sft" | "aligned" -> WeakModel (or None if unavailable)
        demos: list[Example] | None = None,
        drafts_dir: Path | None = None,  # the draft journal; the caller makes sure it holds this model's drafts
    ):
        self.cfg, self.task, self.examples, self.strong = cfg, task, examples, strong
        self.out_dir = Path(out_dir)
        self.load_weak = load_weak
        self.demos = demos or []
        self.drafts_dir = Path(drafts_dir) if drafts_dir is not None else None
        self.fmt = cfg.task.format
        self._sft_drafts: Drafts | None = None
        self._aligned_texts: dict[int, str] = {}
        self.notes: dict[str, str] = {}
        w = cfg.weak
        self._sampling = {"temperature": w.temperature, "top_p": w.top_p, "seed": cfg.seed}

    # helpers -------------------------------------------------------------------------------------
    def _appender(self, system: str) -> JsonlAppender:
        return JsonlAppender(self.out_dir / "predictions" / f"{system}.jsonl", key_field="id")

    def _row(self, system: str, ex: Example, **fields: Any) -> dict[str, Any]:
        pred = fields.get("prediction")
        return {
            "id": ex.id,
            "system": system,
            **fields,
            "gold": ex.gold,
            "scores": self.task.item_scores(pred, ex),
        }

    def _strong_refine(
        self, system: str, todo: list[Example], messages: list[Messages], extra: list[dict[str, Any]], out: JsonlAppender
    ) -> None:
        def done(i: int, res: Any) -> None:
            out.write(
                self._row(
                    system,
                    todo[i],
                    prompt=messages[i],
                    strong_output=res.text,
                    prediction=self.task.parse_answer(res.text, example=todo[i]),
                    **extra[i],
                )
            )

        self.strong.chat_batch(
            [ChatRequest(messages=m) for m in messages], tag=system, desc=f"{system}: strong", on_result=done
        )

    def _drafts(self, kind: str, idx: list[int], *, confidence: bool) -> dict[int, dict[str, Any]] | None:
        """Model ``kind``'s drafts (text, answer, confidence) of ``self.examples[i]`` for i in ``idx``: read from
        the journal where drawn before, the rest drawn now and journaled; None when there is no such model."""
        journal = JsonlAppender(self.drafts_dir / f"{kind}.jsonl") if self.drafts_dir else None
        have = {str(r["id"]): r for r in journal.rows} if journal else {}
        try:
            need = [i for i in idx if self.examples[i].id not in have]
            if need:
                wm = self.load_weak(kind)
                if wm is None:
                    return None
                exs = [self.examples[i] for i in need]
                d = weak_drafts(wm, self.task, exs, self.fmt, desc=f"weak ({kind.replace('sft', 'SFT')}) drafts",
                                confidence=confidence, **self._sampling)
                for ex, t, a, c in zip(exs, d.texts, d.answers, d.confidences):
                    have[ex.id] = {"id": ex.id, "text": t, "answer": a, "confidence": c}
                    if journal:
                        journal.write(have[ex.id])
        finally:
            if journal:
                journal.close()
        return {i: have[self.examples[i].id] for i in idx}

    def sft_drafts(self) -> Drafts:
        if self._sft_drafts is None:
            got = self._drafts("sft", list(range(len(self.examples))), confidence=True)
            if got is None:
                raise ValueError("no weak model to draft with")
            rows = [got[i] for i in range(len(self.examples))]
            self._sft_drafts = Drafts([r["text"] for r in rows], [r["answer"] for r in rows],
                                      [r["confidence"] for r in rows])
        return self._sft_drafts

    def aligned_drafts(self, idx: list[int]) -> dict[int, str] | None:
        """The aligned model's drafts of ``self.examples[i]`` for i in ``idx`` (drafted once); None without one."""
        need = [i for i in idx if i not in self._aligned_texts]
        if need:
            got = self._drafts("aligned", need, confidence=False)
            if got is None:
                return None
            self._aligned_texts.update((i, r["text"]) for i, r in got.items())
        return {i: self._aligned_texts[i] for i in idx}

    def _pending(self, system: str) -> list[int]:
        with self._appender(system) as out:
            return [i for i, ex in enumerate(self.examples) if ex.id not in out.done]

    def prefetch(self, systems: list[str]) -> None:
        """Ask for collab's and cowest's strong answers in one batch, a question's two prompts side by side.

        The two prompts are equal up to the draft, so a server that keeps its last prompt's KV cache (llama.cpp's
        one slot) or shares prompt prefixes (both batched engines) reads each question once for both systems, not once
        each: 1.44x calls/s for these two systems on IfQA questions (bench/RESULTS.md). The systems' own runs then find
        their answers in the cache (counted there as cache hits, so calls paid are unchanged). Skipped without
        a cache, where they would pay twice."""
        pair = ("collab", "cowest")
        if self.strong.cache is None or any(s not in systems or unsupported(s, self.fmt) for s in pair):
            return
        todo = {s: set(self._pending(s)) for s in pair}
        if not todo["collab"] or not todo["cowest"]:
            return
        aligned = self.aligned_drafts(sorted(todo["cowest"]))
        if aligned is None:
            return
        drafts = {"collab": dict(enumerate(self.sft_drafts().texts)), "cowest": aligned}
        reqs: list[ChatRequest] = []
        tags: list[str] = []
        for i, ex in enumerate(self.examples):
            asked: set[str] = set()
            for s in pair:
                if i in todo[s] and drafts[s][i] not in asked:  # identical drafts: one request
                    asked.add(drafts[s][i])
                    reqs.append(ChatRequest(messages=prompts.collab_messages(self.task, ex, drafts[s][i], self.fmt)))
                    tags.append(s)
        self.strong.chat_batch(reqs, tag=tags, desc="collab + cowest: strong")

    # systems -------------------------------------------------------------------------------------
    def run(self, system: str) -> list[dict[str, Any]]:
        why = unsupported(system, self.fmt)
        if why:
            self.notes[system] = why
            return []
        with self._appender(system) as out:
            todo_idx = [i for i, ex in enumerate(self.examples) if ex.id not in out.done]
            if todo_idx:
                getattr(self, f"_run_{system}")(todo_idx, out)
            by_id = {str(r["id"]): r for r in out.rows}
        return [by_id[ex.id] for ex in self.examples if ex.id in by_id]

    def _run_weak(self, todo_idx: list[int], out: JsonlAppender) -> None:
        d = self.sft_drafts()
        for i in todo_idx:
            ex = self.examples[i]
            out.write(
                self._row(
                    "weak",
                    ex,
                    prompt=prompts.weak_messages(self.task, ex, self.fmt),
                    weak_draft=d.texts[i],
                    prediction=d.answers[i],
                    confidence=d.confidences[i],
                )
            )

    def _run_strong(self, todo_idx: list[int], out: JsonlAppender) -> None:
        todo = [self.examples[i] for i in todo_idx]
        msgs = [prompts.strong_alone_messages(self.task, ex) for ex in todo]
        self._strong_refine("strong", todo, msgs, [{} for _ in todo], out)

    def _run_superICL(self, todo_idx: list[int], out: JsonlAppender) -> None:
        d = self.sft_drafts()
        demo_rows: list[tuple[Example, str | None, float | None]] = []
        if self.demos:
            dd = weak_drafts(self.load_weak("sft"), self.task, self.demos, self.fmt, desc="superICL demos", confidence=True,
                             **self._sampling)
            demo_rows = list(zip(self.demos, dd.answers, dd.confidences))
        todo = [self.examples[i] for i in todo_idx]
        msgs = [
            prompts.supericl_messages(self.task, self.examples[i], d.answers[i], d.confidences[i], demo_rows)
            for i in todo_idx
        ]
        extra = [{"weak_prediction": d.answers[i], "confidence": d.confidences[i]} for i in todo_idx]
        self._strong_refine("superICL", todo, msgs, extra, out)

    def _run_collab(self, todo_idx: list[int], out: JsonlAppender) -> None:
        d = self.sft_drafts()
        self._collab("collab", todo_idx, d.texts, out)

    def _run_cowest(self, todo_idx: list[int], out: JsonlAppender) -> None:
        aligned = self.aligned_drafts(todo_idx)
        if aligned is None:
            self.notes["cowest"] = "no aligned weak model yet (run `cowest align` first); skipped"
            return
        all_texts: list[str] = [aligned.get(i, "") for i in range(len(self.examples))]
        self._collab("cowest", todo_idx, all_texts, out)

    def _collab(self, system: str, todo_idx: list[int], drafts: list[str], out: JsonlAppender) -> None:
        todo = [self.examples[i] for i in todo_idx]
        msgs = [prompts.collab_messages(self.task, self.examples[i], drafts[i], self.fmt) for i in todo_idx]
        extra = [{"weak_draft": drafts[i]} for i in todo_idx]
        self._strong_refine(system, todo, msgs, extra, out)
