"""The confidence gate: which weak drafts are answered by the weak model alone and which go to the strong model.

Three scores of a weak draft (higher = more likely right):

- ``answer_prob``: P(answer | prompt, the draft's reasoning) (:func:`cowest.inference.systems.answer_confidence`:
  over the label set for closed tasks, the geometric-mean token probability of a free-form answer);
- ``agreement``: the share of ``gate.agreement_k`` sampled drafts whose parsed answer equals the greedy draft's;
- ``seq_logprob``: the mean token log-probability of the whole draft.

A draft without a parsed answer has no ``answer_prob``/``agreement`` and always goes to the strong model.

Calibration (:func:`calibrate`) drafts ``gate.calibration_questions`` held-out *training* questions
(:func:`cowest.tasks.splits.heldout_train_examples`, never the eval split) with the gate's model, measures how
well each score separates right from wrong drafts (AUROC with a bootstrap CI), picks the best (or
``gate.score``), and the threshold that sends ``gate.strong_share`` of the questions to the strong model.
:mod:`cowest.inference.gate_check` adds whether the gate has anything to route on (notes in ``gate.json``).
``runs/<name>/gate/``: ``calibration.jsonl`` (per question: answer, right, gold label on closed tasks, scores;
made once per fingerprint) and ``gate.json`` (what the eval's ``routed`` system and ``cowest serve --gate`` use).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cowest.chat import Messages
from cowest.config import GATE_SCORES, RunConfig
from cowest.errors import NotReadyError
from cowest.inference import gate_check, prompts
from cowest.inference.systems import answer_confidence, weak_drafts
from cowest.io import read_jsonl, write_json, write_text
from cowest.rundir import RunDir, check_stage, done_fingerprint, fingerprint, heldout_identity, mark_done
from cowest.stats import auroc_ci, ranked
from cowest.tasks.base import Example, Task

Score = float | None


def draft_scores(wm: Any, task: Any, msgs: list[Messages], examples: list[Example], texts: list[str],
                 answers: list[str | None], *, which: Sequence[str], k: int = 4, temperature: float = 1.0,
                 top_p: float = 1.0, seed: int = 0, desc: str = "gate") -> dict[str, list[Score]]:
    """The scores named in ``which`` for each draft ``texts[i]`` (its parsed answer ``answers[i]``)."""
    out: dict[str, list[Score]] = {}
    if "answer_prob" in which:
        out["answer_prob"] = answer_confidence(wm, task, msgs, texts, answers)
    if "agreement" in which:
        samples = wm.generate(msgs, n=k, temperature=temperature, top_p=top_p, seed=seed, desc=f"{desc}: {k} samples")
        out["agreement"] = [
            None if a is None else sum(task.parse_answer(s, example=ex) == a for s in ss) / len(ss)
            for a, ss, ex in zip(answers, samples, examples)
        ]
    if "seq_logprob" in which:
        lps = wm.continuation_logprobs(msgs, [""] * len(texts), texts)
        out["seq_logprob"] = [lp / max(n, 1) for lp, n in lps]
    return out


# --------------------------------------------------------------------------------------------------
# separation and threshold


def to_strong(score: Score, threshold: float) -> bool:
    """The gate's rule: a draft scoring below ``threshold`` (or with no score) goes to the strong model."""
    return score is None or score < threshold


def threshold_for_share(scores: Sequence[Score], share: float) -> float:
    """The threshold that sends round(share * n) of these drafts (the lowest-scoring) to the strong model: the
    midpoint between the last one sent and the first one kept. Drafts without a score always go. Tied scores
    go or stay together (a discrete score such as ``agreement`` ties often): the tied group goes when that
    lands nearer the target share than keeping it (and on an equal distance, so quality is not risked)."""
    vals = sorted(ranked(scores))
    finite = [v for v in vals if v != -math.inf]
    n = len(vals)
    m = max(round(share * n), n - len(finite))
    if not finite:
        return 0.0  # every draft lacks a score: all go to the strong model whatever the threshold
    if m >= n:
        return finite[-1] + 1.0
    if m == 0 or vals[m - 1] == -math.inf:
        return vals[m]
    if vals[m - 1] < vals[m]:
        return (vals[m - 1] + vals[m]) / 2
    tie = vals[m]
    below = sum(v < tie for v in vals)  # sent when the tied group stays
    upto = sum(v <= tie for v in vals)  # sent when it goes
    if m - below < upto - m:
        return tie
    return (tie + vals[upto]) / 2 if upto < n else tie + 1.0


@dataclass
class Gate:
    score: str  # answer_prob | agreement | seq_logprob
    threshold: float
    strong_share: float  # the target share it was calibrated for
    model: str  # the drafting model it was calibrated on: aligned | sft

    def to_strong(self, score: Score) -> bool:
        return to_strong(score, self.threshold)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Gate":
        return cls(str(d["score"]), float(d["threshold"]), float(d["strong_share"]), str(d["model"]))


def choose(rows: list[dict[str, Any]], *, score: str, share: float, seed: int = 0,
           n_resamples: int = 1000) -> dict[str, Any]:
    """gate.json's figures from calibration rows (``{"right": bool, "scores": {name: value}}``)."""
    right = [bool(r["right"]) for r in rows]
    aurocs: dict[str, Any] = {}
    for name in GATE_SCORES:
        est, lo, hi = auroc_ci([r["scores"].get(name) for r in rows], right, n_resamples=n_resamples, seed=seed)
        aurocs[name] = {"auroc": est, "ci": [lo, hi]} if est == est else {"auroc": None, "ci": None}
    notes = []
    chosen = score
    if score == "auto":
        valid = {k: v["auroc"] for k, v in aurocs.items() if v["auroc"] is not None}
        chosen = max(valid, key=lambda k: valid[k]) if valid else "seq_logprob"
        if not valid:
            notes.append("AUROC undefined (every calibration draft was right, or every one wrong): seq_logprob "
                         "chosen by default (the one score every draft has)")
    vals = [r["scores"].get(chosen) for r in rows]
    thr = threshold_for_share(vals, share)
    sent = [to_strong(v, thr) for v in vals]
    figures, checks = gate_check.check(rows, aurocs, chosen, auto=score == "auto", names=GATE_SCORES, seed=seed,
                                       n_resamples=n_resamples)
    return {
        "n": len(rows),
        "weak_right": sum(right) / len(right) if rows else None,
        "aurocs": aurocs,
        "score_config": score,
        "score": chosen,
        "threshold": thr,
        "strong_share": share,
        "calibrated_share": sum(sent) / len(sent) if rows else None,
        # how often the drafts the gate keeps (answered by the weak model alone) are right
        "right_when_kept": (sum(r for r, s in zip(right, sent) if not s) / sent.count(False)
                            if sent.count(False) else None),
        **figures,
        "notes": notes + checks,
    }


# --------------------------------------------------------------------------------------------------
# calibration on held-out training questions


def model_stage_id(cfg: RunConfig, kind: str) -> str:
    """The fingerprint of the finished stage that made the gate's model (aligned round or SFT)."""
    rd = RunDir(cfg)
    if kind == "aligned":
        aligned = rd.cowest_adapter()
        return (done_fingerprint(Path(aligned).parent) or "absent") if aligned else "absent"
    return done_fingerprint(rd.sft) or "absent"


def calibration_fingerprint(cfg: RunConfig, kind: str) -> str:
    """What the calibration drafts and their scores depend on (not the chosen score nor the target share)."""
    w, g = cfg.weak, cfg.gate
    task = dataclasses.replace(cfg.task, n_eval=None)
    weak = (w.model, w.gguf_file, w.adapter, w.max_new_tokens, w.temperature, w.top_p)
    return fingerprint(task, cfg.seed, weak, kind, model_stage_id(cfg, kind), g.calibration_questions,
                       g.agreement_k, g.agreement_temperature, *heldout_identity(cfg))


def gate_fingerprint(cfg: RunConfig, kind: str) -> str:
    """What a gate (and a gated system's predictions) depends on."""
    return fingerprint(calibration_fingerprint(cfg, kind), cfg.gate.score, cfg.gate.strong_share)


def calibrate(cfg: RunConfig, load_weak: Callable[[str], Any], kind: str, *, overwrite: bool = False) -> Gate:
    """Calibrate (or reuse) the gate for drafting model ``kind`` (``aligned`` | ``sft``, ``load_weak``'s
    argument) and write ``gate/gate.json``. Drafts and scores are made once per calibration fingerprint."""
    from cowest.tasks.splits import heldout_train_examples

    gdir = RunDir(cfg).gate
    g = cfg.gate
    if check_stage(gdir, calibration_fingerprint(cfg, kind), overwrite=overwrite, name="gate calibration"):
        task, exs = heldout_train_examples(cfg, g.calibration_questions,
                                           purpose="gate calibration (gate.calibration_questions)")
        wm = load_weak(kind)
        if wm is None:
            raise NotReadyError(f"no {kind} weak model to calibrate the gate on")
        rows = calibration_rows(cfg, wm, task, exs, desc=f"gate calibration ({kind})")
        write_text(gdir / "calibration.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        mark_done(gdir, calibration_fingerprint(cfg, kind), n=len(rows), model=kind)
    rows = read_jsonl(gdir / "calibration.jsonl")
    info = choose(rows, score=g.score, share=g.strong_share, seed=cfg.seed)
    info.update(model=kind, fingerprint=gate_fingerprint(cfg, kind))
    write_json(gdir / "gate.json", info)
    return Gate.from_json(info)


def calibration_rows(cfg: RunConfig, wm: Any, task: Task, exs: list[Example], *, desc: str) -> list[dict[str, Any]]:
    """Per question: the greedy draft's answer, whether it is right (the primary metric's item score is 1, as
    in eval's flip tables), the gold label (closed tasks), and every score."""
    w, g, fmt = cfg.weak, cfg.gate, cfg.task.format
    d = weak_drafts(wm, task, exs, fmt, desc=desc, confidence=False, temperature=w.temperature, top_p=w.top_p,
                    seed=cfg.seed)
    msgs = [prompts.weak_messages(task, ex, fmt) for ex in exs]
    sc = draft_scores(wm, task, msgs, exs, d.texts, d.answers, which=GATE_SCORES, k=g.agreement_k,
                      temperature=g.agreement_temperature, seed=cfg.seed, desc=desc)
    key = task.primary_item_key
    # a closed task's gold label lets gate_check compare the drafts with answers that ignore the question
    return [{"id": ex.id, "answer": a, "right": task.item_scores(a, ex).get(key, 0.0) == 1.0,
             **({"gold": task.gold_answer(ex)} if task.labels else {}),
             "scores": {name: sc[name][i] for name in GATE_SCORES}}
            for i, (ex, a) in enumerate(zip(exs, d.answers))]


def load_gate(cfg: RunConfig) -> dict[str, Any] | None:
    """The run's calibrated ``gate.json``, or None when there is none."""
    path = RunDir(cfg).gate / "gate.json"
    return json.loads(path.read_text()) if path.exists() else None
