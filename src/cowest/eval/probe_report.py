"""``cowest probe``'s outputs: ``probe.json``, ``probe.md``, a bar plot with error bars, and a rich table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cowest.eval import tables
from cowest.eval.flips import cell, delta_cell
from cowest.eval.tables import print_rich
from cowest.io import write_json, write_text

EXPLAIN = (
    "Accuracy and rates in percent with Wilson 95% CIs; k/n counts. Strong alone: the endpoint answers the "
    "question by itself; collab: it answers from the weak draft. Corrected: draft wrong, collaboration right "
    "(over the drafts that were wrong); corrupted: draft right, collaboration wrong (over those that were "
    "right); helped / misled: the same against the endpoint alone. Δ collab: this endpoint's collaboration "
    "accuracy minus the first endpoint's, paired bootstrap over questions (2000 resamples), with the smallest "
    "difference this n would detect (80% power). Calls, tokens and cost: what the collaboration costs on these "
    "questions (cost from strong.price_*; — when no price is set); paid: this run's calls, cache hits and rows "
    "already on disk excluded.")


def _acc(ci: list[float] | None) -> str:
    return f"{ci[0]:.1f} [{ci[1]:.1f}, {ci[2]:.1f}]" if ci else "—"


def _usd(x: float | None) -> str:
    return "—" if x is None else f"${x:.4f}"


def rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    ref = result["endpoints"][0]["name"] if result["endpoints"] else "?"
    head = ["endpoint", "n", "strong alone", "collab", "corrected", "corrupted", "helped", "misled",
            f"Δ collab vs {ref} (95% CI) (detectable)", "collab calls", "collab tokens", "collab cost",
            "paid calls (alone + collab)"]
    deltas = {c["endpoint"]: c for c in result.get("comparisons", [])}
    out = []
    for e in result["endpoints"]:
        w, s = e.get("vs_weak"), e.get("vs_strong")
        cost = e["cost"]["collab"]
        out.append([
            e["name"], str(e["n"]), _acc(e["strong_accuracy"]), _acc(e["collab_accuracy"]),
            cell(w["corrected"], w["weak_wrong"], w["corrected_rate"]) if w else "—",
            cell(w["corrupted"], w["weak_right"], w["corrupted_rate"]) if w else "—",
            cell(s["helped"], s["strong_wrong"], s["helped_rate"]) if s else "—",
            cell(s["misled"], s["strong_right"], s["misled_rate"]) if s else "—",
            delta_cell(deltas[e["name"]]) if e["name"] in deltas else "(reference)",
            str(cost["calls"]), str(cost["prompt_tokens"] + cost["completion_tokens"]), _usd(cost["cost_usd"]),
            str(sum(e["paid_this_run"].values())),
        ])
    return head, out


def markdown(result: dict[str, Any]) -> str:
    head, body = rows(result)
    dm = result["drafting_model"]
    lines = [
        f"# cowest probe: {result['task']} (n={result['n']})",
        "",
        f"Questions: {result['questions']}. Drafts: the {dm['kind']} weak model"
        + (f" ({dm['adapter']})" if dm.get("adapter") else "") + ", drafted once and shared by every endpoint.",
        "",
        *tables.markdown(head, body),
        "",
        EXPLAIN + f" {result['right'][0].upper()}{result['right'][1:]}.",
        "",
        "Endpoints:",
        *(f"- {e['name']}: {e['endpoint']}" + (f" ({', '.join(e['overrides'])})" if e["overrides"] else
                                               " (the recipe's strong section)") for e in result["endpoints"]),
    ]
    for k, v in (result.get("notes") or {}).items():
        lines.append(f"- {k}: {v}")
    return "\n".join(lines) + "\n"


def write_probe(out_dir: Path, result: dict[str, Any]) -> None:
    out_dir = Path(out_dir)
    try:
        bar_plot(result, out_dir / "probe.png")
    except Exception as e:  # a missing font or backend must not lose the numbers
        result.setdefault("notes", {})["plot"] = f"plot failed: {e}"
    write_json(out_dir / "probe.json", result)
    write_text(out_dir / "probe.md", markdown(result))


# the terminal gets the table in three narrower parts: quality, corrections, cost
TERMINAL_PARTS = (("accuracy", (0, 1, 2, 3, 8)), ("corrections", (0, 4, 5, 6, 7)), ("cost", (0, 9, 10, 11, 12)))


def print_probe(result: dict[str, Any]) -> None:
    head, body = rows(result)
    console = None
    for i, (part, cols) in enumerate(TERMINAL_PARTS):
        last = i == len(TERMINAL_PARTS) - 1
        console = print_rich(f"cowest probe: {result['task']} (n={result['n']}): {part}", [head[c] for c in cols],
                             [[r[c] for c in cols] for r in body], result.get("notes") if last else None, console)


BARS = (("strong alone", lambda e: e["strong_accuracy"]), ("collab", lambda e: e["collab_accuracy"]),
        ("corrected", lambda e: (e.get("vs_weak") or {}).get("corrected_rate")),
        ("corrupted (lower is better)", lambda e: (e.get("vs_weak") or {}).get("corrupted_rate")))


def bar_plot(result: dict[str, Any], path: Path) -> None:
    """Per endpoint: strong-alone and collaboration accuracy, correction and corruption rates, 95% CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps = result["endpoints"]
    width = 0.8 / len(BARS)
    fig, ax = plt.subplots(figsize=(1.8 * len(eps) + 2.5, 4.0))
    for j, (label, get) in enumerate(BARS):
        cis = [get(e) for e in eps]
        xs = [i + j * width for i in range(len(eps))]
        vals = [c[0] if c else 0.0 for c in cis]
        err = [[c[0] - c[1] if c else 0.0 for c in cis], [c[2] - c[0] if c else 0.0 for c in cis]]
        ax.bar(xs, vals, width=width, yerr=err, capsize=3, label=label)
    ax.set_xticks([i + width * (len(BARS) - 1) / 2 for i in range(len(eps))], [e["name"] for e in eps])
    ax.set_ylabel("percent (95% CI)")
    ax.set_ylim(0, 105)
    ax.set_title(f"cowest probe: {result['task']} (n={result['n']})")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), fontsize=7, ncol=len(BARS), frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
