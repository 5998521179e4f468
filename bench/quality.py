"""Does collaboration help? The full recipe on a real task with the local models, one command.

    python bench/quality.py prosocial_dialog --scale small
    python bench/quality.py medmcqa                    # --scale default
    python bench/quality.py ifqa --scale small strong.max_tokens=160   # extra key=value overrides last
    python bench/quality.py ifqa --scale powered --report-only         # the tables again, from the finished run

Base recipe: ``recipes/<task>_cpu.yaml`` (SmolLM2-135M weak, Qwen2.5-Coder-1.5B strong via llama.cpp),
overridden to the scale below. Runs ``cowest.pipeline.run_all`` (SFT → feedback → DPO → eval of weak,
strong, superICL, collab, cowest) in ``bench/out/quality/<task>-<scale>/runs/`` (finished stages are
reused on a rerun), then writes ``quality.json`` (raw figures), ``quality.md`` and ``quality.png`` next to it:
the systems table, feedback with each metric evaluator on the recorded answers (``bench/evaluators.py``), DPO on
held-out pairs (``align.eval_share``), the validation gain, strong usage and time per stage.
The recipes set ``align.validation_questions: 64``, so each align round is followed by the alignment gain on
held-out training questions (``cowest validate``), tabled in ``quality.md``.
Data must be in ``../shared/data/<task>``; otherwise the task is skipped with a message (exit 0).

Scales (2-core CPU, no GPU):
- ``small``: 64 train / 40 eval questions, feedback on 16 (K=4): 31 min for prosocial_dialog, 29 min for ifqa.
- ``default``: 128 / 64 / 32 (K=4): 44 min for medmcqa (measured, bench/RESULTS.md); ifqa's longer passages
  should take about twice its small run, well under the 2 h limit per task.
- ``large``: 256 / 200 / 128 (K=4), 10% held out of DPO, validation on 128: the issue-13 scale for MedMCQA and
  ProsocialDialog. MedMCQA took 41 min on a 2-core Zen 4 with ``strong.local.engine=batch`` and without SuperICL
  (bench/RESULTS.md); estimated ~1.5-2 h with llama.cpp on a Zen 3.
- ``session``: 128 / 300 / 128 (K=4), validation on 100, no SuperICL: powered's eval size, sized for machines whose run
  outputs may not outlive a session (~3 h on a 2-core Zen 3, extrapolated, bench/RESULTS.md).
- ``powered``: 256 / 300 / 256 (K=4), 10% of the feedback questions held out of DPO: enough eval questions to
  detect a difference of a few points. Hours on 2 cores; a killed run resumes where it stopped, as long as
  its run directory survives.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, ROOT, RSSPoller, machine, machine_line, md_table, now_utc, write_json  # noqa: E402
from evaluators import compare as compare_evaluators, table as evaluators_table  # noqa: E402

TASKS = ("ifqa", "medmcqa", "prosocial_dialog")
SCALES: dict[str, list[str]] = {
    # ~290 strong calls at most (64 SFT rationales where the task has none + 16×(1+4) feedback + 40×4 eval)
    "small": ["task.n_train=64", "task.n_eval=40", "feedback.max_questions=16", "feedback.k=4", "sft.epochs=2",
              "align.epochs=2"],
    # ~550 strong calls at most (128 + 32×5 + 64×4). medmcqa measured 44 min on 2 cores (sft 15.9, feedback 8.8,
    # align 4.4, eval 15.3); IfQA's passages make every call longer, hence the margin to 2 h.
    "default": ["task.n_train=128", "task.n_eval=64", "feedback.max_questions=32", "feedback.k=4", "sft.epochs=2",
                "align.epochs=2"],
    # the most MedMCQA / ProsocialDialog can do in <= 2 h on 2 cores (issue 13): ~1,600 strong calls at most
    # (256 rationales where the task has none + 128x(1+4) feedback + 128x2 validation + 200x4 eval)
    "large": ["task.n_train=256", "task.n_eval=200", "feedback.max_questions=128", "feedback.k=4", "sft.epochs=2",
              "align.epochs=2", "align.eval_share=0.1", "align.validation_questions=128"],
    # powered's 300 eval questions, sized for one session (run outputs may not outlive a session on these machines):
    # SFT and feedback on 128 questions, validation on 100, no SuperICL. Measured on a 2-core Zen 3 (no AVX-512):
    # SFT 34 + feedback 40 + DPO 30 min, then eval at 150 questions 27 min: ~3 h for the whole scale there, extrapolated
    "session": ["task.n_train=128", "task.n_eval=300", "feedback.max_questions=128", "feedback.k=4", "sft.epochs=2",
                "align.epochs=2", "align.eval_share=0.1", "align.validation_questions=100",
                "eval.systems=[weak,strong,collab,cowest]"],
    # issue 13's power: feedback on 256 questions (K=4), 300 eval questions, 10% of the feedback questions held
    # out of DPO for its diagnostics, the alignment gain on 200 held-out training questions. Several hours on 2
    # cores: every stage resumes after a kill, where the run directory survives (across sessions only sometimes).
    "powered": ["task.n_train=256", "task.n_eval=300", "feedback.max_questions=256", "feedback.k=4", "sft.epochs=2",
                "align.epochs=2", "align.eval_share=0.1", "align.validation_questions=200"],
}


def collect(cfg: Any, wall_s: float, mem: dict[str, Any]) -> dict[str, Any]:
    rd = cfg.run_dir
    metrics = json.loads((rd / "eval" / "metrics.json").read_text())
    fb = {}
    for r in range(1, cfg.rounds + 1):
        p = rd / "feedback" / f"round{r}" / "feedback_stats.json"
        if p.exists():
            fb[f"round{r}"] = json.loads(p.read_text())
    timings = json.loads((rd / "timings.json").read_text()) if (rd / "timings.json").exists() else {}
    usage = json.loads((rd / "usage.json").read_text()) if (rd / "usage.json").exists() else {}
    align = {}
    for r in range(1, cfg.rounds + 1):
        p = rd / "align" / f"round{r}" / "metrics.json"
        if p.exists():
            m = json.loads(p.read_text())
            align[f"round{r}"] = {k: m.get(k) for k in ("n_pairs", "global_step", "seconds_per_step", "wall_s")}
            if m.get("eval"):  # align.eval_share: TRL's evaluation on the held-out questions' pairs
                align[f"round{r}"]["heldout"] = {k: v for k, v in m["eval"].items() if k != "questions"}
                align[f"round{r}"]["heldout"]["questions"] = len(m["eval"].get("questions", []))
    sft = {}
    p = rd / "sft" / "metrics.json"
    if p.exists():
        m = json.loads(p.read_text())
        sft = {k: m.get(k) for k in ("global_step", "seconds_per_step", "wall_s") if k in m}
        sft.update({k: v for k, v in (m.get("data") or {}).items() if k != "strong_usage"})
    validation = {}
    for r in range(1, cfg.rounds + 1):
        p = rd / "validation" / f"round{r}" / "validation.json"
        if p.exists():
            validation[f"round{r}"] = json.loads(p.read_text())
    evaluators = {}
    for r in fb:  # the recorded answers rescored by each metric evaluator (bench/evaluators.py, no model call)
        evaluators[r] = compare_evaluators(rd, int(r.removeprefix("round")))["rows"]
    return {"metrics": metrics, "feedback_stats": fb, "validation": validation, "timings_s": timings, "usage": usage,
            "align": align, "sft": sft, "evaluators": evaluators, "wall_s": round(wall_s, 1),
            "stage_s": round(sum(timings.values()), 1), "peak_rss_mb": mem}


def summary_md(r: dict[str, Any]) -> str:
    m = r["metrics"]
    names = m["metric_names"]
    out = [f"# cowest quality: {r['task']} at scale `{r['scale']}`\n",
           f"`{r['command']}` — {r['date']} — {machine_line(r['machine'])}\n",
           f"Overrides on `recipes/{r['task']}_cpu.yaml`: `{' '.join(r['overrides'])}`. "
           f"Eval split `{m['split']}`, n = {m['n']} questions (the same for every system). "
           f"Wall time {r['wall_s'] / 60:.1f} min in this invocation"
           + (f"; the stages took {r['stage_s'] / 60:.1f} min in all (a resumed run adds up its invocations)"
              if r.get("stage_s") else "") + ".\n"]
    rows = []
    for s, info in m["systems"].items():
        d = info.get("delta_vs_cowest")
        ci = f"{d[0]:+.1f} [{d[1]:+.1f}, {d[2]:+.1f}]" if d else "(reference)"
        mde = info.get("detectable_vs_cowest")
        rows.append([s, info["n"]] + [f"{info['metrics'][k]:.1f}" for k in names]  # already percent
                    + [ci, f"±{mde:.1f}" if mde is not None else "–", info.get("unparsed"), info.get("strong_calls_needed"), info.get("strong_calls_paid"),
                       info.get("strong_tokens")])
    out.append(md_table(["system", "n"] + names + [f"Δ {m['primary_metric']} vs cowest, pts [95% CI]", "detectable Δ", "unparsed",
                                                    "strong calls needed", "strong calls paid", "strong tokens"], rows))
    out.append("\nΔ = system − cowest on the per-question primary metric, paired bootstrap (2000 resamples) "
               "over the same questions; a CI that spans 0 means no detectable difference at this n. Detectable Δ: the "
               "smallest true difference this n detects with 80% power (two-sided 5%), from the spread of the "
               "per-question differences.\n")
    for rnd, st in r["feedback_stats"].items():
        pairs = st.get("pairs") or 0
        per_pair = f"{st['strong_calls'] / pairs:.1f}" if pairs else "–"
        tok_pair = f"{st['strong_tokens'] / pairs:.0f}" if pairs else "–"
        zero = st.get("delta_histogram", {}).get("exactly_zero")
        zero_share = f"{zero / st['drafts']:.0%}" if zero is not None and st.get("drafts") else "–"
        out.append(f"## Feedback ({rnd})\n\n" + md_table(
            ["evaluator", "questions", "drafts", "chosen (Δ>0)", "rejected (Δ≤0)", "Δ = 0", "questions with pairs",
             "no pair (why)", "pairs", "strong calls", "strong tokens", "calls / pair", "tokens / pair", "mean E(z)",
             "mean E(collab)"],
            [[st.get("evaluator", "–"), st["questions"], st["drafts"], st["chosen"], st["rejected"], zero_share,
              st["questions_with_pairs"], ", ".join(f"{k} {v}" for k, v in st["no_pair"].items() if v) or "–", pairs,
              st["strong_calls"], st["strong_tokens"], per_pair, tok_pair, st.get("mean_z_score"),
              st.get("mean_collab_score")]]) + "\n")
    for rnd, rows in (r.get("evaluators") or {}).items():
        out.append(f"## Metric evaluators on the recorded answers ({rnd}, bench/evaluators.py)\n\n"
                   + evaluators_table({"rows": rows, "questions": r["feedback_stats"][rnd]["questions"]}) + "\n")
    heldout = [[rnd, a["heldout"]["questions"], a["heldout"]["pairs"], a["heldout"].get("step")]
               + [_num(a["heldout"]["final"].get(k)) for k in ("loss", "rewards/accuracies", "rewards/margins")]
               for rnd, a in (r.get("align") or {}).items() if a.get("heldout")]
    if heldout:
        out.append("## DPO on held-out questions' pairs (align.eval_share, TRL's final evaluation)\n\n" + md_table(
            ["round", "questions", "pairs", "step", "eval loss", "rewards/accuracies", "rewards/margins"], heldout)
            + "\n\nrewards/accuracies: the share of held-out pairs whose chosen draft the aligned policy prefers "
              "(over the reference) more than the rejected one; 0.5 = no preference learned.\n")
    if r.get("validation"):
        out.append(validation_md(r["validation"]))
    usage = r.get("usage", {}).get("stages", {})
    if usage:
        rows = [[stage, u["total"].get("calls", 0) - u["total"].get("cached", 0), u["total"].get("cached", 0),
                 u["total"].get("prompt_tokens", 0) + u["total"].get("completion_tokens", 0)] for stage, u in usage.items()]
        out.append("## Strong usage per stage (usage.json)\n\n" + md_table(["stage", "calls paid", "cache hits", "tokens"], rows) + "\n")
    t = r["timings_s"]
    if t:
        out.append("## Wall time per stage (timings.json)\n\n" + md_table(
            ["stage", "seconds", "minutes"], [[k, v, round(v / 60, 1)] for k, v in t.items()]) + "\n")
    extra = []
    if r.get("sft"):
        extra.append(f"SFT: {r['sft']}")
    for rnd, a in r.get("align", {}).items():
        extra.append(f"DPO {rnd}: {a}")
    if r.get("peak_rss_mb"):
        pk = r["peak_rss_mb"]
        extra.append(f"Peak RSS over the whole run: cowest process {pk['main_mb']:.0f} MB, children (llama.cpp server) "
                     f"{pk['children_mb']:.0f} MB, together {pk['total_mb']:.0f} MB")
    if extra:
        out.append("\n".join(f"- {e}" for e in extra) + "\n")
    return "\n".join(out)


def _num(x: Any) -> Any:
    return round(x, 3) if isinstance(x, float) else x


def validation_md(validation: dict[str, Any]) -> str:
    """The alignment gain on held-out training questions (``align.validation_questions``), per round."""
    def ci(c: list[float] | None) -> str:
        return f"{c[0]:+.1f} [{c[1]:+.1f}, {c[2]:+.1f}]" if c else "–"

    rows = [[rnd, v["n"], f"{v['evaluator']}: {ci(v.get('gain'))}", v.get("detectable"),
             f"{v['metric']}: {ci(v.get('metric_gain'))}", v.get("metric_detectable"),
             f"{100 * v['identical_share']:.0f}%" if v.get("identical_share") is not None else None,
             v.get("strong_calls_paid")] for rnd, v in validation.items()]
    return ("## Alignment gain on validation (held-out training questions, never the eval split)\n\n" + md_table(
        ["round", "n", "gain, E pts [95% CI]", "detectable Δ", "gain, metric pts [95% CI]", "detectable Δ",
         "identical drafts", "strong calls paid"], rows)
        + "\n\nGain = E(collab with the aligned draft) − E(collab with the SFT draft), paired bootstrap.\n")


def plot(r: dict[str, Any], path: Path) -> dict[str, list[float]]:
    """The systems bar chart; returns the bar heights per metric (percent)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = r["metrics"]
    systems = list(m["systems"])
    names = m["metric_names"]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(names)
    heights = {}
    for j, k in enumerate(names):
        vals = heights[k] = [m["systems"][s]["metrics"][k] for s in systems]  # run_eval's metrics are in percent
        ax.bar([i + j * width for i in range(len(systems))], vals, width, label=k)
    ax.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(systems))], systems)
    ax.set_ylabel("score (%)")
    ax.set_title(f"{r['task']} ({r['scale']} scale, n={m['n']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return heights


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("task", choices=TASKS)
    p.add_argument("--scale", choices=list(SCALES), default="default")
    p.add_argument("--out", default=None, help="default bench/out/quality/<task>-<scale>")
    p.add_argument("--overwrite", action="store_true", help="redo stages made with another config")
    p.add_argument("--report-only", action="store_true", help="rewrite quality.json/.md/.png from the finished run "
                   "(e.g. after a newer report format), keeping the recorded command, date, machine and memory")
    p.add_argument("overrides", nargs="*", help="extra key=value config overrides, applied last")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_intermixed_args(argv)  # overrides may follow the options
    os.chdir(ROOT)  # the recipes' data paths are relative to the project root
    data = ROOT.parent / "shared" / "data" / a.task
    if not data.exists():
        print(f"skipping {a.task}: no data at {data} (see ../shared/data/README.md)")
        return 0
    from cowest.config import load_config
    from cowest.pipeline import run_all

    out = Path(a.out) if a.out else OUT / "quality" / f"{a.task}-{a.scale}"
    out.mkdir(parents=True, exist_ok=True)
    overrides = SCALES[a.scale] + list(a.overrides)
    cfg = load_config(ROOT / "recipes" / f"{a.task}_cpu.yaml",
                      overrides + [f"name={a.task}-{a.scale}", f"output_dir={out / 'runs'}"])
    command = f"python bench/quality.py {a.task} --scale {a.scale}" + (" " + " ".join(a.overrides) if a.overrides else "")
    if a.report_only:
        old = json.loads((out / "quality.json").read_text()) if (out / "quality.json").exists() else {}
        res = {"task": a.task, "scale": a.scale, "overrides": overrides, "command": old.get("command", command),
               "date": old.get("date", now_utc()), "machine": old.get("machine", machine()),
               **collect(cfg, old.get("wall_s", 0.0), old.get("peak_rss_mb", {}))}
    else:
        started, at_start = now_utc(), machine()  # the commit that ran, not the one checked out at the end
        t0 = time.perf_counter()
        with RSSPoller(os.getpid(), interval_s=0.5) as poller:
            run_all(cfg, overwrite=a.overwrite, show=True)
        wall = time.perf_counter() - t0
        res = {"task": a.task, "scale": a.scale, "overrides": overrides, "command": command, "date": started,
               "machine": at_start, **collect(cfg, wall, poller.peaks.get("start", {}))}
    write_json(out / "quality.json", res)
    (out / "quality.md").write_text(summary_md(res), encoding="utf-8")
    plot(res, out / "quality.png")
    print(f"wrote {out / 'quality.json'}, {out / 'quality.md'}, {out / 'quality.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
