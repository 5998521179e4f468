"""Correction analytics: per collaborating system, which answers the collaboration flipped.

Against the **strong model alone** (the ``strong`` system's row for the same question): *helped* = strong
alone wrong, collaboration right (the draft helped); *misled* = strong alone right, collaboration wrong.
Against the **weak draft's own answer** (the row's ``weak_prediction``, else ``weak_draft`` parsed with the
task's ``parse_answer``): *corrected* = draft wrong, final right; *corrupted* = draft right, final wrong.

Right means the task's per-item primary score (``em`` for IfQA, ``accuracy`` otherwise, as in
``eval.evaluate.summarise``) equals 1; a graded score below 1 counts as wrong. A draft with no parseable answer
is wrong. A row without a strong output (a system that answered from the draft alone) keeps the draft's
answer, so it flips nothing against the draft. Rates are over the subset they can happen in (helped /
strong-wrong, misled / strong-right, corrected / draft-wrong, corrupted / draft-right), with Wilson 95% CIs;
the net change (the system's primary score minus the reference's) gets a paired bootstrap CI and the
smallest detectable difference.

Pure functions over prediction rows (``eval/predictions/<system>.jsonl``, or ``cowest probe``'s rows):
:func:`flip_tables` computes, :func:`flips_markdown` and :func:`print_flips` render. With both ``collab`` and
``cowest``, the tables end with the drafts alone (:func:`draft_gain`: aligned vs SFT draft, no strong call).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cowest.eval.tables import markdown, print_rich
from cowest.stats import min_detectable_difference, paired_bootstrap, wilson

RIGHT = ("right = the per-item primary score ({key}) equals 1 (a graded score below 1 is wrong); "
         "an unparsed answer is wrong")


def collaborates(rows: Sequence[dict[str, Any]]) -> bool:
    """Whether a system's rows carry a weak draft (or its answer) and a strong output: a collaboration."""
    return any("strong_output" in r and ("weak_draft" in r or "weak_prediction" in r) for r in rows)


def is_right(row: dict[str, Any], key: str) -> bool:
    return float((row.get("scores") or {}).get(key, 0.0)) == 1.0


def weak_answer(task: Any, row: dict[str, Any], example: Any) -> str | None:
    """The draft's own answer: ``weak_prediction`` where the row has it (SuperICL), else the parsed draft."""
    if "weak_prediction" in row:
        return row["weak_prediction"]
    draft = row.get("weak_draft")
    return task.parse_answer(draft, example=example) if draft else None


def answer_right(task: Any, answer: str | None, example: Any) -> bool:
    """Whether a draft's ``answer`` is right: its per-item primary score equals 1 (None, unparsed, is wrong)."""
    return float(task.item_scores(answer, example).get(task.primary_item_key, 0.0)) == 1.0


def rate(k: int, n: int) -> list[float] | None:
    ci = wilson(k, n)
    return list(ci) if ci is not None else None


def _paired(final: list[bool], ref: list[bool]) -> dict[str, Any]:
    a = [float(x) for x in final]
    b = [float(x) for x in ref]
    mde = min_detectable_difference(a, b) if len(a) > 1 else float("nan")
    return {"delta": list(paired_bootstrap(a, b)) if a else None, "detectable": mde if mde == mde else None}


def flips(final: Sequence[bool], ref: Sequence[bool], *, gain: str, loss: str, ref_name: str) -> dict[str, Any]:
    """One 2x2 table: ``final`` and ``ref`` are right/wrong per question (same order). ``gain`` counts
    ref wrong -> final right, ``loss`` ref right -> final wrong; their rates are over ref-wrong / ref-right."""
    if len(final) != len(ref):
        raise ValueError("flips need the same questions on both sides")
    ref_wrong = sum(1 for r in ref if not r)
    ref_right = len(ref) - ref_wrong
    g = sum(1 for f, r in zip(final, ref) if f and not r)
    lo = sum(1 for f, r in zip(final, ref) if r and not f)
    return {
        "n": len(ref),
        f"{ref_name}_wrong": ref_wrong, f"{ref_name}_right": ref_right,
        gain: g, f"{gain}_rate": rate(g, ref_wrong),
        loss: lo, f"{loss}_rate": rate(lo, ref_right),
        "net": g - lo,
        **_paired(list(final), list(ref)),
    }


def system_flips(task: Any, fmt: str, rows: Sequence[dict[str, Any]], strong_rows: Sequence[dict[str, Any]] | None,
                 examples: Sequence[Any]) -> dict[str, Any]:
    """A collaborating system's flips against the strong model alone (``vs_strong``, None without strong
    rows) and against its own weak drafts (``vs_weak``, None in the knowledge format), on the questions of
    ``examples`` that both sides answered."""
    key = task.primary_item_key
    mine = {str(r["id"]): r for r in rows}
    out: dict[str, Any] = {"vs_strong": None, "vs_weak": None}
    if strong_rows is not None:
        alone = {str(r["id"]): r for r in strong_rows}
        ids = [ex.id for ex in examples if ex.id in mine and ex.id in alone]
        out["vs_strong"] = flips([is_right(mine[i], key) for i in ids], [is_right(alone[i], key) for i in ids],
                                 gain="helped", loss="misled", ref_name="strong")
    if fmt != "knowledge":
        exs = [ex for ex in examples if ex.id in mine]
        answers = [weak_answer(task, mine[ex.id], ex) for ex in exs]
        weak_right = [answer_right(task, a, ex) for a, ex in zip(answers, exs)]
        table = flips([is_right(mine[ex.id], key) for ex in exs], weak_right,
                      gain="corrected", loss="corrupted", ref_name="weak")
        table["weak_unparsed"] = sum(a is None for a in answers)
        out["vs_weak"] = table
    return out


def flip_tables(task: Any, fmt: str, rows_by_system: dict[str, Sequence[dict[str, Any]]],
                examples: Sequence[Any]) -> dict[str, Any]:
    """``{"right": <definition>, "systems": {name: system_flips}, "notes": {...}}`` for every collaborating
    system in ``rows_by_system`` (``strong`` is the reference, never a row of its own)."""
    key = task.primary_item_key
    strong = rows_by_system.get("strong")
    out: dict[str, Any] = {"right": RIGHT.format(key=key), "systems": {}, "notes": {}}
    names = [s for s, rows in rows_by_system.items() if s != "strong" and rows and collaborates(rows)]
    if not names:
        out["notes"]["flips"] = "no collaborating system (collab, cowest, superICL) in this run: no flip table"
        return out
    if not strong:
        out["notes"]["flips vs strong"] = "the strong system was not run: no flips against the strong model alone"
    if fmt == "knowledge":
        out["notes"]["flips vs weak"] = ("task.format=knowledge: the weak draft holds background knowledge, "
                                         "not an answer, so there are no flips against it")
    for s in names:
        out["systems"][s] = system_flips(task, fmt, rows_by_system[s], strong or None, examples)
    if fmt != "knowledge" and all(s in names for s in ("collab", "cowest")):
        out["drafts"] = draft_gain(task, rows_by_system["collab"], rows_by_system["cowest"], examples)
    return out


def draft_gain(task: Any, sft_rows: Sequence[dict[str, Any]], aligned_rows: Sequence[dict[str, Any]],
               examples: Sequence[Any]) -> dict[str, Any]:
    """The drafts alone, no strong call: cowest's aligned drafts against collab's SFT drafts (right = the
    primary score equals 1), paired by question. Alignment can improve the draft itself while the strong
    model's refinement passes on little of it; this tells the two apart."""
    sft, aligned = ({str(r["id"]): r for r in rows} for rows in (sft_rows, aligned_rows))
    exs = [ex for ex in examples if ex.id in sft and ex.id in aligned]

    def right(rows: dict[str, dict[str, Any]]) -> list[bool]:
        return [answer_right(task, weak_answer(task, rows[ex.id], ex), ex) for ex in exs]

    a, b = right(aligned), right(sft)
    n = len(exs)
    return {"n": n, "aligned": 100.0 * sum(a) / n if n else None, "sft": 100.0 * sum(b) / n if n else None,
            **_paired(a, b)}


def draft_line(d: dict[str, Any]) -> str:
    if not d.get("n"):
        return "no question with both drafts"
    return (f"cowest's aligned drafts {d['aligned']:.1f}% right against collab's SFT drafts {d['sft']:.1f}% "
            f"(n = {d['n']}); Δ {delta_cell(d)}")


# --------------------------------------------------------------------------------------------------
# rendering

_STRONG_COLS = ("helped", "misled", "strong", "strong wrong → right (helped)", "strong right → wrong (misled)")
_WEAK_COLS = ("corrected", "corrupted", "weak", "draft wrong → right (corrected)", "draft right → wrong (corrupted)")


def cell(k: int, n: int, rate: list[float] | None) -> str:
    if rate is None:
        return f"{k}/{n}"
    return f"{k}/{n} = {rate[0]:.1f}% [{rate[1]:.1f}, {rate[2]:.1f}]"


def delta_cell(t: dict[str, Any]) -> str:
    d = t.get("delta")
    if not d or d[1] != d[1]:
        return "—"
    mde = t.get("detectable")
    return f"{d[0]:+.1f} [{d[1]:+.1f}, {d[2]:+.1f}]" + (f" (±{mde:.1f})" if mde is not None else "")


def flip_rows(flip: dict[str, Any], side: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one side's table (``vs_strong`` or ``vs_weak``) over every system that has it."""
    gain, loss, ref, gain_h, loss_h = _STRONG_COLS if side == "vs_strong" else _WEAK_COLS
    head = ["system", "n", gain_h, loss_h, "net", f"Δ vs {ref} (95% CI) (detectable)"]
    if side == "vs_weak":
        head.insert(4, "unparsed drafts")
    rows = []
    for name, s in flip["systems"].items():
        t = s.get(side)
        if t is None:
            continue
        row = [name, str(t["n"]), cell(t[gain], t[f"{ref}_wrong"], t[f"{gain}_rate"]),
               cell(t[loss], t[f"{ref}_right"], t[f"{loss}_rate"]), f"{t['net']:+d}", delta_cell(t)]
        if side == "vs_weak":
            row.insert(4, str(t["weak_unparsed"]))
        rows.append(row)
    return head, rows


def flips_markdown(flip: dict[str, Any] | None, *, level: str = "##") -> str:
    """The report section: one table against the strong model alone, one against the weak draft."""
    if not flip:
        return ""
    lines = [f"{level} Correction analytics (flips)", ""]
    for side, title in (("vs_strong", "Against the strong model alone"), ("vs_weak", "Against the weak draft")):
        head, rows = flip_rows(flip, side)
        if rows:
            lines += [f"{title}:", "", *markdown(head, rows), ""]
    if flip["systems"]:
        lines.append(
            f"Counts k/n with the rate and its Wilson 95% CI; n is the subset the flip can happen in (helped: "
            f"questions the strong model alone got wrong; misled: those it got right; corrected / corrupted: "
            f"questions whose weak draft was wrong / right). Net = gains − losses; Δ = the system's primary "
            f"score minus the reference's in points, paired bootstrap CI, detectable Δ at 80% power. "
            f"{flip['right'][0].upper()}{flip['right'][1:]}.")
    if flip.get("drafts"):
        lines.append(f"- the drafts alone (no strong call): {draft_line(flip['drafts'])}")
    for k, v in (flip.get("notes") or {}).items():
        lines.append(f"- {k}: {v}")
    return "\n".join(lines) + "\n"


def print_flips(flip: dict[str, Any] | None, console: Any = None) -> None:
    """The same tables on the terminal (rich)."""
    if not flip:
        return
    from rich.console import Console

    console = console or Console()
    for side, title in (("vs_strong", "flips against the strong model alone"), ("vs_weak", "flips against the weak draft")):
        head, rows = flip_rows(flip, side)
        if rows:
            print_rich(title, head, rows, console=console)
    if flip.get("drafts"):
        console.print(f"the drafts alone (no strong call): {draft_line(flip['drafts'])}")
    for k, v in (flip.get("notes") or {}).items():
        console.print(f"[yellow]{k}[/yellow]: {v}")
