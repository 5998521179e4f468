"""The routing curve of the confidence gate: quality against the share of questions sent to the strong model.

At share k/n the k questions whose drafts have the lowest confidence go to the strong model (their answer is
the collaboration's), the others keep the weak draft's answer: 0% is the weak draft alone, 100% the
collaboration (``cowest``, or ``collab`` when there is no aligned model). A random gate recovers the gap
linearly on average. The standard router figures (RouteLLM, Ong et al. 2024), with the performance gap
recovered PGR(s) = (quality(s) - quality(0)) / (quality(100%) - quality(0)):

- **APGR**: the mean of PGR over 10 equal bins of strong-call share, (1/10) * sum_{i=1..10} PGR(i/10), with
  share i/10 taken as round(i*n/10) questions (RouteLLM's discretised area under the PGR curve);
- **CPT(x%)**: the smallest share k/n whose PGR >= x (exact on the n+1 possible shares).

When the collaboration is not better than the weak draft (gap <= 0) there is nothing to recover: the figures
are None and the report says so. CIs: percentile bootstrap over questions (resamples with gap <= 0 skipped,
and counted).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cowest.inference import gate_check
from cowest.stats import auroc_ci, min_detectable_difference, paired_bootstrap, percentile_interval, resamples

GRID = [i / 10 for i in range(11)]


def _rank(c: float | None) -> float:
    return -math.inf if c is None else float(c)


def _k(share: float, n: int) -> int:
    return int(math.floor(share * n + 0.5))


def curve(conf: Sequence[float | None], weak: Sequence[float], strong: Sequence[float]) -> list[float]:
    """Quality in percent with the k lowest-confidence questions sent to the strong model, for k = 0..n
    (ties in confidence broken by question order)."""
    n = len(conf)
    if n == 0:
        return [0.0]
    order = sorted(range(n), key=lambda i: (_rank(conf[i]), i))
    total = float(sum(weak))
    out = [100.0 * total / n]
    for i in order:
        total += strong[i] - weak[i]
        out.append(100.0 * total / n)
    return out


def figures(cv: Sequence[float]) -> dict[str, float | None]:
    """gap (points), APGR, CPT(50%), CPT(80%) of a curve (quality at k = 0..n); None figures when gap <= 0."""
    n, gap = len(cv) - 1, cv[-1] - cv[0]
    if gap <= 1e-12 or n == 0:
        return {"gap": gap, "apgr": None, "cpt50": None, "cpt80": None}

    def pgr(k: int) -> float:
        return (cv[k] - cv[0]) / gap

    def cpt(x: float) -> float:
        return next(k / n for k in range(n + 1) if pgr(k) >= x - 1e-9)

    return {"gap": gap, "apgr": sum(pgr(_k(i / 10, n)) for i in range(1, 11)) / 10, "cpt50": cpt(0.5),
            "cpt80": cpt(0.8)}


def _ci(vals: list[float], alpha: float = 0.05) -> list[float] | None:
    ci = percentile_interval(vals, alpha)
    return list(ci) if ci else None


def analyse(rows_by_system: dict[str, list[dict[str, Any]]], ids: list[str], key: str, *, partner: str,
            gate: dict[str, Any] | None = None, n_resamples: int = 1000, seed: int = 0) -> dict[str, Any] | None:
    """The routing section of ``metrics.json`` from the ``routed`` rows (every question's draft confidence and
    draft scores) and the partner collaboration's rows, on questions ``ids``; None when either is missing."""
    if "routed" not in rows_by_system or partner not in rows_by_system or not ids:
        return None
    rr = {str(r["id"]): r for r in rows_by_system["routed"]}
    pr = {str(r["id"]): r for r in rows_by_system[partner]}
    conf = [rr[i].get("confidence") for i in ids]
    weak = [float(rr[i]["weak_scores"].get(key, 0.0)) for i in ids]
    strong = [float(pr[i]["scores"].get(key, 0.0)) for i in ids]
    n = len(ids)
    cv = curve(conf, weak, strong)
    est = figures(cv)
    boot: dict[str, list[float]] = {"apgr": [], "cpt50": [], "cpt80": []}
    band: dict[str, list[list[float]]] = {"gate": [[] for _ in GRID], "random": [[] for _ in GRID]}
    for idx in resamples(n, n_resamples, seed):
        cb = curve([conf[i] for i in idx], [weak[i] for i in idx], [strong[i] for i in idx])
        for j, s in enumerate(GRID):
            band["gate"][j].append(cb[_k(s, n)])
            band["random"][j].append(cb[0] + s * (cb[-1] - cb[0]))
        fb = figures(cb)
        if fb["apgr"] is not None:
            for f in boot:
                boot[f].append(float(fb[f]))  # type: ignore[arg-type]
    grid = []
    for j, s in enumerate(GRID):
        grid.append({"share": s, "gate": [cv[_k(s, n)], *(_ci(band["gate"][j]) or [None, None])],
                     "random": [cv[0] + s * (cv[-1] - cv[0]), *(_ci(band["random"][j]) or [None, None])]})
    out: dict[str, Any] = {
        "partner": partner, "n": n, "weak_alone": cv[0], "collaboration": cv[-1], "gap": est["gap"],
        "resamples_with_gap": len(boot["apgr"]), "resamples": n_resamples, "curve": cv, "grid": grid,
        "gate": gate, "points": {}, "comparisons": {},
    }
    a = auroc_ci(conf, [w == 1.0 for w in weak], n_resamples=n_resamples, seed=seed)
    out["eval_auroc"] = list(a) if a[0] == a[0] else None  # the chosen score on these (eval) questions
    for f in ("apgr", "cpt50", "cpt80"):
        out[f] = None if est[f] is None else [est[f], *(_ci(boot[f]) or [None, None])]
    per = {partner: strong}
    for s in ("routed", "random_gate"):
        if s in rows_by_system:
            by = {str(r["id"]): r for r in rows_by_system[s]}
            if all(i in by for i in ids):
                per[s] = [float(by[i]["scores"].get(key, 0.0)) for i in ids]
                out["points"][s] = {"share": sum(by[i].get("route") == "strong" for i in ids) / n,
                                    "quality": 100.0 * sum(per[s]) / n}
    for a, b in (("routed", partner), ("routed", "random_gate"), ("random_gate", partner)):
        if a in per and b in per:
            mde = min_detectable_difference(per[a], per[b])
            out["comparisons"][f"{a} - {b}"] = {"delta": list(paired_bootstrap(per[a], per[b], seed=seed)),
                                                "detectable": mde if mde == mde else None}
    return out


def _fmt_ci(v: list[float | None] | None, pct: bool = False) -> str:
    if v is None:
        return "—"
    m = 100.0 if pct else 1.0
    unit = "%" if pct else ""
    if v[1] is None or v[2] is None:
        return f"{m * v[0]:.{0 if pct else 2}f}{unit}"
    d = 0 if pct else 2
    return f"{m * v[0]:.{d}f}{unit} [{m * v[1]:.{d}f}{unit}, {m * v[2]:.{d}f}{unit}]"


def markdown(r: dict[str, Any]) -> str:
    """The report's routing section."""
    g = r.get("gate") or {}
    lines = ["", "## Routing: collaborate only when the draft is unsure", ""]
    if g:
        lines.append(f"Gate: score `{g.get('score')}`, threshold {g.get('threshold'):.4g}, calibrated on {g.get('n')} "
                     f"held-out training questions (not the eval split) for a target {100 * g.get('strong_share', 0):.0f}% "
                     f"of strong calls (calibrated share {100 * (g.get('calibrated_share') or 0):.0f}%), "
                     f"drafting model: {g.get('model')}.")
        lines += ["", "| confidence score | AUROC: draft right vs wrong (95% CI) |", "|---|---|"]
        for name, a in (g.get("aurocs") or {}).items():
            lines.append(f"| {name}{' (chosen)' if name == g.get('score') else ''} | "
                         f"{_fmt_ci([a['auroc'], *a['ci']]) if a.get('auroc') is not None else 'undefined'} |")
        if checked := gate_check.describe(g):
            lines.append(f"- calibration checks: {checked}")
        lines += [f"- gate: {note}" for note in g.get("notes") or []]
        lines.append("")
    ea = r.get("eval_auroc")
    lines.append(f"AUROC of `{g.get('score', 'the gate score')}` on the eval questions: "
                 f"{_fmt_ci(ea) if ea else 'undefined (all drafts right or all wrong)'}.")
    if shifted := gate_check.transfer_note(g, ea):
        lines.append(f"- {shifted}")
    lines.append("")
    lines.append(f"Weak draft alone (0% strong calls): {r['weak_alone']:.1f}; {r['partner']} (100%): "
                 f"{r['collaboration']:.1f}; gap {r['gap']:+.1f} points (n={r['n']}).")
    if r["apgr"] is None:
        lines.append(f"- {r['partner']} is not better than the weak draft alone on these questions (gap "
                     f"{r['gap']:+.1f} ≤ 0): there is no gap to recover, so APGR and CPT are not defined. The gate "
                     "can only save strong calls here, and the weak draft alone is at least as good.")
    else:
        lines += ["", "| APGR (95% CI) | CPT(50%) | CPT(80%) |", "|---|---|---|",
                  f"| {_fmt_ci(r['apgr'])} | {_fmt_ci(r['cpt50'], True)} | {_fmt_ci(r['cpt80'], True)} |", "",
                  f"APGR: mean performance gap recovered over 10 equal bins of strong-call share (random gate: 0.55); "
                  f"CPT(x%): the smallest share of strong calls recovering x% of the gap. CIs: bootstrap over "
                  f"questions ({r['resamples_with_gap']}/{r['resamples']} resamples had a positive gap)."]
    if r["points"]:
        lines += ["", "| system | strong-call share | quality |", "|---|---|---|"]
        for s, p in r["points"].items():
            lines.append(f"| {s} | {100 * p['share']:.0f}% | {p['quality']:.1f} |")
    for name, c in r["comparisons"].items():
        d = c["delta"]
        det = f", detectable ±{c['detectable']:.1f}" if c.get("detectable") is not None else ""
        lines.append(f"- {name}: {d[0]:+.1f} [{d[1]:+.1f}, {d[2]:+.1f}] points (paired bootstrap{det})")
    lines.append("- Curve: `routing.png` (the gate's line and the random gate's, with 95% bootstrap bands).")
    return "\n".join(lines) + "\n"


def one_line(r: dict[str, Any]) -> str:
    """The routing figures in one line, for the terminal."""
    head = f"routing ({r['partner']}, gap {r['gap']:+.1f} points): "
    if r["apgr"] is None:
        return head + "no gap to recover (the collaboration is not better than the weak draft): APGR/CPT undefined"
    return head + f"APGR {_fmt_ci(r['apgr'])}, CPT(50%) {_fmt_ci(r['cpt50'], True)}, CPT(80%) {_fmt_ci(r['cpt80'], True)}"


def plot(r: dict[str, Any], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, cv = r["n"], r["curve"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([100 * k / n for k in range(n + 1)], cv, color="C0", label="confidence gate")
    xs = [100 * g["share"] for g in r["grid"]]
    for name, color, label in (("gate", "C0", None), ("random", "C1", "random gate (expected)")):
        lo = [g[name][1] for g in r["grid"]]
        hi = [g[name][2] for g in r["grid"]]
        if None not in lo:
            ax.fill_between(xs, lo, hi, color=color, alpha=0.2, linewidth=0)
        if label:
            ax.plot(xs, [g[name][0] for g in r["grid"]], color=color, linestyle="--", label=label)
    ax.axhline(r["weak_alone"], color="grey", linestyle=":", label="weak draft alone")
    ax.axhline(r["collaboration"], color="red", linestyle=":", label=r["partner"])
    for s, p in r["points"].items():
        ax.scatter([100 * p["share"]], [p["quality"]], zorder=3, label=s, marker="o" if s == "routed" else "x")
    ax.set_xlabel("strong calls (% of questions)")
    ax.set_ylabel("quality (percent)")
    ax.set_title(title or "routing curve")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
