"""Has the gate anything to route on? Checks on the calibration questions, before an eval pays for strong calls.

A confidence gate can only beat a random one when the weak model's drafts carry information about the answer
*and* a score tells its right drafts from its wrong ones. On a 135M weak model neither held on MedMCQA or
ProsocialDialog (bench/RESULTS.md), and the gate routed no better than chance; these figures say so at
calibration time:

- **chance**: for tasks with a closed label set, how often a draft that ignored the question would be right
  with the same answer frequencies (sum over labels of P(answer = l) * P(gold = l)), against how often the
  drafts are right, with a bootstrap CI of the difference. Drafts no better than that hold no information a
  gate could use, whatever their scores.
- **out-of-bag AUROC** of an auto-chosen score: ``gate.score=auto`` picks the best of three scores on the same
  questions it then reports, an optimistic figure. Each bootstrap resample picks the best score on its
  questions and measures it on the questions it left out; the mean is the AUROC to expect on new questions
  of the same split (a note when it is ``OPTIMISM`` or more below the in-sample figure).
- **separation**: whether the chosen score's AUROC CI lies above 0.5.

Each failed check adds a plain-language note to ``gate.json`` (shown by ``cowest calibrate`` and the report).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from cowest.stats import auroc, percentile_interval, resamples

# an in-sample AUROC this much above the out-of-bag one is worth a note (IfQA's 0.84 against 0.83 is not)
OPTIMISM = 0.03


def chance_right(answers: Sequence[str | None], gold: Sequence[str]) -> float:
    """The expected share right of answers drawn independently of the question with these answers' label
    frequencies: sum over labels of P(answer = l) * P(gold = l). A missing answer is never right."""
    n = len(answers)
    if n == 0:
        return float("nan")
    pa, pg = Counter(a for a in answers if a is not None), Counter(gold)
    return sum(k * pg[label] for label, k in pa.items()) / (n * n)


def right_minus_chance(rows: list[dict[str, Any]], *, n_resamples: int = 1000, seed: int = 0,
                       alpha: float = 0.05) -> tuple[float, float, float, float]:
    """(share right, chance share, low, high): the drafts' share right, :func:`chance_right`, and a percentile
    bootstrap CI (over questions) of their difference. Rows need ``right``, ``answer`` and ``gold``."""
    right = [bool(r["right"]) for r in rows]
    answers = [r["answer"] for r in rows]
    gold = [r["gold"] for r in rows]

    def diff(idx: list[int]) -> float:
        return (sum(right[i] for i in idx) / len(idx)
                - chance_right([answers[i] for i in idx], [gold[i] for i in idx]))

    diffs = [diff(idx) for idx in resamples(len(rows), n_resamples, seed)]
    lo, hi = percentile_interval(diffs, alpha) or (float("nan"), float("nan"))
    return sum(right) / len(right), chance_right(answers, gold), lo, hi


def out_of_bag_auroc(rows: list[dict[str, Any]], names: Sequence[str], *, n_resamples: int = 500,
                     seed: int = 0) -> float | None:
    """The mean AUROC, on each bootstrap resample's left-out questions, of the score (among ``names``) with
    the best AUROC on the resample itself: what choosing the best score is worth on new questions."""
    n = len(rows)
    right = [bool(r["right"]) for r in rows]
    got = []
    for bag in resamples(n, n_resamples, seed):
        inside = set(bag)
        left = [i for i in range(n) if i not in inside]
        fits = {k: a for k in names
                if (a := auroc([rows[i]["scores"].get(k) for i in bag], [right[i] for i in bag])) == a}  # nan: one class
        if not fits or not left:
            continue
        best = max(fits, key=lambda k: fits[k])
        a = auroc([rows[i]["scores"].get(best) for i in left], [right[i] for i in left])
        if a == a:
            got.append(a)
    return sum(got) / len(got) if got else None


def check(rows: list[dict[str, Any]], aurocs: dict[str, Any], chosen: str, *, auto: bool, names: Sequence[str],
          seed: int = 0, n_resamples: int = 1000) -> tuple[dict[str, Any], list[str]]:
    """The figures above for ``gate.json`` and a note for each check that fails."""
    figures: dict[str, Any] = {}
    notes: list[str] = []
    if rows and all("gold" in r for r in rows):
        share, chance, lo, hi = right_minus_chance(rows, n_resamples=n_resamples, seed=seed)
        figures["chance_right"] = chance
        figures["right_minus_chance"] = [share - chance, lo, hi]
        if not lo > 0:
            notes.append(
                f"the drafts are right {100 * share:.1f}% of the time, against {100 * chance:.1f}% for answers that "
                f"ignore the question with the same label frequencies (difference {100 * (share - chance):+.1f} "
                f"[{100 * lo:+.1f}, {100 * hi:+.1f}] points): they show no knowledge of the answer a confidence "
                "score could find, so expect the gate to route no better than a random one")
    if auto and len(rows) > 1:
        figures["chosen_auroc_out_of_bag"] = oob = out_of_bag_auroc(rows, names, n_resamples=n_resamples // 2,
                                                                    seed=seed)
        a = (aurocs.get(chosen) or {}).get("auroc")
        if oob is not None and a is not None and a - oob >= OPTIMISM:
            notes.append(f"{chosen} was chosen as the best of {len(names)} scores on these same questions: its "
                         f"AUROC {a:.2f} is optimistic; chosen the same way on part of them, the best score reaches "
                         f"{oob:.2f} on the rest")
    ci = (aurocs.get(chosen) or {}).get("ci")
    if ci and ci[0] == ci[0] and not ci[0] > 0.5:
        notes.append(f"{chosen}'s AUROC CI [{ci[0]:.2f}, {ci[1]:.2f}] includes 0.5: on these questions it does not "
                     "tell right drafts from wrong ones")
    return figures, notes


def describe(info: dict[str, Any]) -> str | None:
    """The figures of :func:`check` in ``gate.json`` (``info``) as one line for reports; None when it has none."""
    parts = []
    if (d := info.get("right_minus_chance")) and info.get("weak_right") is not None:
        parts.append(f"drafts right {100 * info['weak_right']:.1f}% vs {100 * info['chance_right']:.1f}% for answers "
                     f"that ignore the question ({100 * d[0]:+.1f} [{100 * d[1]:+.1f}, {100 * d[2]:+.1f}] points)")
    if info.get("chosen_auroc_out_of_bag") is not None:
        parts.append(f"out-of-bag AUROC of the best score {info['chosen_auroc_out_of_bag']:.2f}")
    return "; ".join(parts) or None


def transfer_note(info: dict[str, Any], eval_auroc: Sequence[float] | None) -> str | None:
    """A note when the chosen score separates the eval questions' drafts less than calibration promised: the
    eval AUROC's CI lies wholly below the calibration AUROC (out of bag where measured). Calibration uses
    training-split questions, and a split shift (IfQA: 0.83 out of bag, 0.60 on dev) moves what the threshold
    means."""
    chosen = (info.get("aurocs") or {}).get(info.get("score"), {}).get("auroc")
    oob = info.get("chosen_auroc_out_of_bag")
    promised = oob if oob is not None else chosen
    if promised is None or not eval_auroc or eval_auroc[2] is None or not eval_auroc[2] < promised:
        return None
    return (f"{info.get('score')} separates the eval questions' drafts less than the calibration questions' "
            f"({eval_auroc[0]:.2f} [{eval_auroc[1]:.2f}, {eval_auroc[2]:.2f}] against {promised:.2f}): the eval "
            "questions differ from the training split the gate was calibrated on, and its threshold may not mean "
            "the same share or quality here")
