"""Does the confidence gate pay? Issue 14's figures for one finished run, one command.

    python bench/routing.py bench/out/quality/medmcqa-default/runs/medmcqa-default     # a run directory
    python bench/routing.py recipes/medmcqa_cpu.yaml task.n_train=128 gate.strong_share=0.3   # a recipe

Runs (resumes) the run's eval with ``routed`` and ``random_gate`` added to its systems: the gate is calibrated
on held-out training questions (``gate.calibration_questions``, default 100, so ``task.n_train`` must leave
that many spare), the gated systems reuse the collaboration's drafts and cached strong answers (no new paid
calls). Then prints and writes (``--out``, default ``bench/out/routing/<run name>/``) ``routing.json`` and
``routing.md``: AUROC of each confidence score, APGR, CPT(50%), CPT(80%) with bootstrap CIs, and the routed
system against CoWest and the random gate (quality and strong calls, paired CIs), with the issue's goals:
APGR >= 0.6, CPT(50%) <= 35%, routed within 0.5 points of CoWest at >= 30% fewer strong calls.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, md_table, now_utc, write_json  # noqa: E402

from cowest.inference import gate_check  # noqa: E402

GATED = ["routed", "random_gate"]


def load(target: str, overrides: list[str]) -> Any:
    from cowest.config import load_config

    p = Path(target)
    if p.is_dir():
        if not (p / "config.yaml").is_file():
            sys.exit(f"{p} is not a run directory (no config.yaml)")
        return load_config(p / "config.yaml", [f"output_dir={p.parent}", f"name={p.name}", *overrides])
    return load_config(p, overrides)


def figures(summary: dict[str, Any]) -> dict[str, Any]:
    """The issue's figures from an eval summary (metrics.json) that has a routing section."""
    r = summary.get("routing")
    if not r:
        raise SystemExit("the eval has no routing section (the routed system did not run)")
    sysm = summary["systems"]
    prim = summary["primary_metric"]
    partner = r["partner"]
    g = r.get("gate") or {}
    out: dict[str, Any] = {
        "task": summary["task"], "split": summary["split"], "n": r["n"], "partner": partner,
        "aurocs": g.get("aurocs"), "eval_auroc": r.get("eval_auroc"), "score": g.get("score"), "threshold": g.get("threshold"),
        "target_share": g.get("strong_share"), "calibration_n": g.get("n"), "gate_model": g.get("model"),
        "calibration_checks": gate_check.describe(g), "gate_notes": g.get("notes") or [],
        "transfer_note": gate_check.transfer_note(g, r.get("eval_auroc")),
        "weak_alone": r["weak_alone"], "collaboration": r["collaboration"], "gap": r["gap"],
        "apgr": r["apgr"], "cpt50": r["cpt50"], "cpt80": r["cpt80"], "systems": {}, "comparisons": r["comparisons"],
    }
    for s in (partner, *GATED):
        if s in sysm:
            out["systems"][s] = {"quality": sysm[s]["metrics"][prim], "strong_calls": sysm[s]["strong_calls_needed"],
                                 "strong_calls_paid": sysm[s]["strong_calls_paid"]}
    routed, ref = out["systems"].get("routed"), out["systems"].get(partner)
    goals: dict[str, Any] = {}
    if r["apgr"] is not None:
        goals["APGR >= 0.6"] = r["apgr"][0] >= 0.6
        goals["CPT(50%) <= 35%"] = r["cpt50"][0] <= 0.35
    if routed and ref and ref["strong_calls"]:
        saved = 1 - routed["strong_calls"] / ref["strong_calls"]
        goals["routed within 0.5 points of " + partner] = routed["quality"] >= ref["quality"] - 0.5
        goals["routed makes >= 30% fewer strong calls"] = saved >= 0.3
        out["strong_calls_saved"] = saved
    out["goals"] = goals
    return out


def _ci(v: list[float] | None, pct: bool = False) -> str:
    if v is None:
        return "undefined"
    m, d = (100, 0) if pct else (1, 2)
    u = "%" if pct else ""
    return f"{m * v[0]:.{d}f}{u} [{m * v[1]:.{d}f}, {m * v[2]:.{d}f}]" if v[1] is not None else f"{m * v[0]:.{d}f}{u}"


def markdown(f: dict[str, Any], command: str) -> str:
    out = [f"# Routing: {f['task']} ({f['split']}, n={f['n']})\n", f"`{command}` — {now_utc()}\n",
           f"Gate model: {f['gate_model']} drafts, calibrated on {f['calibration_n']} held-out training questions; "
           f"score `{f['score']}`, threshold {f['threshold']:.4g}, target {100 * (f['target_share'] or 0):.0f}% strong "
           "calls.\n"]
    out.append(md_table(["confidence score", "AUROC (95% CI)"],
                        [[k + (" (chosen)" if k == f["score"] else ""),
                          _ci([a["auroc"], *a["ci"]]) if a.get("auroc") is not None else "undefined"]
                         for k, a in (f["aurocs"] or {}).items()]))
    if f.get("calibration_checks"):
        out.append(f"\nCalibration checks: {f['calibration_checks']}.")
    out += [f"- gate: {note}" for note in f.get("gate_notes") or []]
    out.append(f"\nAUROC of `{f['score']}` on the eval questions: {_ci(f.get('eval_auroc'))}.")
    if f.get("transfer_note"):
        out.append(f"- {f['transfer_note']}")
    out.append(f"\nWeak draft alone {f['weak_alone']:.1f}, {f['partner']} {f['collaboration']:.1f}: gap "
               f"{f['gap']:+.1f} points.\n")
    if f["apgr"] is None:
        out.append(f"{f['partner']} is not better than the weak draft alone here (gap ≤ 0): APGR and CPT are "
                   "undefined; the gate can only save calls.\n")
    else:
        out.append(md_table(["APGR", "CPT(50%)", "CPT(80%)"],
                            [[_ci(f["apgr"]), _ci(f["cpt50"], True), _ci(f["cpt80"], True)]]) + "\n")
    out.append(md_table(["system", "quality", "strong calls", "strong calls paid"],
                        [[s, f"{v['quality']:.1f}", v["strong_calls"], v["strong_calls_paid"]]
                         for s, v in f["systems"].items()]))
    for name, c in f["comparisons"].items():
        d = c["delta"]
        det = f", detectable ±{c['detectable']:.1f}" if c.get("detectable") is not None else ""
        out.append(f"- {name}: {d[0]:+.1f} [{d[1]:+.1f}, {d[2]:+.1f}] points (paired bootstrap{det})")
    if "strong_calls_saved" in f:
        out.append(f"- routed saves {100 * f['strong_calls_saved']:.0f}% of {f['partner']}'s strong calls")
    out.append("\nGoals (issue 14): " + ("; ".join(f"{k}: {'met' if v else 'not met'}" for k, v in f["goals"].items())
                                         or "none measurable"))
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", help="a finished run directory (runs/<name>) or a recipe")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_intermixed_args(argv)  # overrides may come before or after --out
    from cowest.eval.evaluate import run_eval

    cfg = load(args.target, args.overrides)
    systems = list(dict.fromkeys([*cfg.eval.systems, *GATED]))
    summary = run_eval(cfg, systems=systems, show=False)
    f = figures(summary)
    out = args.out or OUT / "routing" / cfg.name
    command = "python bench/routing.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_json(out / "routing.json", {**f, "command": command})
    md = markdown(f, command)
    (out / "routing.md").write_text(md, encoding="utf-8")
    print(md)
    print(f"written: {out / 'routing.json'}, {out / 'routing.md'}")
    return f


if __name__ == "__main__":
    main()
