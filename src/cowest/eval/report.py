"""The systems table: ``metrics.json``, ``report.md``, a bar chart PNG, and a rich table on the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cowest.eval import routing
from cowest.eval.flips import flips_markdown, print_flips
from cowest.eval.labels import labels_markdown
from cowest.eval.tables import print_rich
from cowest.io import write_json, write_text


def write_report(out_dir: Path, summary: dict[str, Any]) -> None:
    """``summary``: {task, split, n, metric_names, primary_metric, systems: {name: {...}}, notes, usage, flips
    (``eval.flips.flip_tables``)}."""
    out_dir = Path(out_dir)
    route = summary.get("routing")
    for name, draw in (("systems.png", lambda p: bar_chart(summary, p)),
                       ("routing.png", lambda p: routing.plot(route, p, f"{summary['task']} {summary['split']}"))):
        if name == "routing.png" and not route:
            continue
        try:
            draw(out_dir / name)
        except Exception as e:  # a missing font or backend must not lose the numbers
            summary.setdefault("notes", {})[f"plot {name}"] = f"plot failed: {e}"
    write_json(out_dir / "metrics.json", summary)
    write_text(out_dir / "report.md", markdown_table(summary) + (routing.markdown(route) if route else ""))


def _rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    metrics = summary["metric_names"]
    head = ["system", "n", *metrics, f"Δ{summary['primary_metric']} vs cowest (95% CI)", "detectable Δ", "strong calls needed", "strong calls paid",
            "strong tokens"]
    rows = []
    for name, s in summary["systems"].items():
        ci = s.get("delta_vs_cowest")
        ci_txt = f"{ci[0]:+.1f} [{ci[1]:+.1f}, {ci[2]:+.1f}]" if ci else "—"
        mde = s.get("detectable_vs_cowest")
        mde_txt = f"±{mde:.1f}" if mde is not None and mde == mde else "—"
        rows.append(
            [
                name,
                str(s["n"]),
                *(f"{s['metrics'].get(m, float('nan')):.2f}" for m in metrics),
                ci_txt,
                mde_txt,
                str(s.get("strong_calls_needed", 0)),
                str(s.get("strong_calls_paid", 0)),
                str(s.get("strong_tokens", 0)),
            ]
        )
    return head, rows


def markdown_table(summary: dict[str, Any]) -> str:
    head, rows = _rows(summary)
    lines = [
        f"# {summary['task']} ({summary['split']}, n={summary['n']})",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        "Metrics in percent. Δ: the system minus cowest on the primary metric, paired bootstrap over "
        "questions (2000 resamples). Detectable Δ: the smallest true difference this n would detect (two-sided 5% "
        "test, 80% power, from the spread of the per-question differences); a smaller Δ is not evidence either way. "
        "Strong calls needed: what the system asks of the strong model on its own "
        "(one call per question it sends there). Strong calls paid and strong tokens: what this run's eval paid, "
        "over every invocation of it (a resumed eval counts its earlier calls), cache hits excluded (a draft "
        "identical to another system's is answered from the cache).",
    ]
    for k, v in (summary.get("notes") or {}).items():
        lines.append(f"- {k}: {v}")
    flips = flips_markdown(summary.get("flips"))
    labels = labels_markdown(summary.get("labels"))
    return "\n".join(lines) + "\n" + ("\n" + flips if flips else "") + ("\n" + labels if labels else "")


def print_table(summary: dict[str, Any]) -> None:
    head, rows = _rows(summary)
    console = print_rich(f"{summary['task']} ({summary['split']}, n={summary['n']})", head, rows, summary.get("notes"))
    print_flips(summary.get("flips"), console)
    for c in (summary.get("labels") or {}).get("collapsed", []):
        console.print(f"collapsed onto one label: {c} (compare macro-F1; report.md, 'Answers per label')")
    if summary.get("routing"):
        console.print(routing.one_line(summary["routing"]))


def bar_chart(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(summary["systems"])
    metrics = summary["metric_names"]
    width = 0.8 / max(len(metrics), 1)
    fig, ax = plt.subplots(figsize=(1.4 * len(systems) + 2, 3.6))
    for j, m in enumerate(metrics):
        vals = [summary["systems"][s]["metrics"].get(m, 0.0) for s in systems]
        xs = [i + j * width for i in range(len(systems))]
        bars = ax.bar(xs, vals, width=width, label=m)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks([i + width * (len(metrics) - 1) / 2 for i in range(len(systems))], systems)
    ax.set_ylabel("percent")
    ax.set_ylim(0, 105)
    ax.set_title(f"{summary['task']} {summary['split']} (n={summary['n']})")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
