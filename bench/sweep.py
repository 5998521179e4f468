"""Which knobs move the alignment gain? A small sweep on one task, judged by the validation gain (issue 13).

    python bench/sweep.py medmcqa --scale default                     # every variant in VARIANTS
    python bench/sweep.py demo --scale smoke --variants base,best_worst,beta0.3,rounds2
    python bench/sweep.py ifqa --variant "beta0.05 align.beta=0.05" strong.max_tokens=160   # own variant, overrides
    python bench/sweep.py ifqa --scale powered --donor bench/out/quality/ifqa-powered/runs/ifqa-powered/config.yaml

Base recipe ``recipes/<task>_cpu.yaml`` (``recipes/demo.yaml`` for demo), then the scale's overrides, then the
extra ``key=value`` overrides, then each variant's own. Every variant is its own run (``runs/<variant>/``) of
sft -> (feedback -> align -> validate) x rounds, **never the eval split**: tuning happens on the validation gain
(``cowest validate``: held-out training questions, the same for every variant). What does not change is shared:

- one strong answer cache for the whole sweep (``strong_cache.sqlite``): no strong answer is paid twice;
- a stage whose fingerprint equals an earlier variant's is copied from it (SFT for every variant; feedback,
  align and validation where the pairs and DPO settings agree);
- feedback *records* are copied where only the pairing differs (``feedback.collect.collection_fingerprint``
  leaves pairing out): the variant re-derives its pairs from them without a model or strong call;
- variants that train on different numbers of questions (``sft2x``) are all validated on the same held-out
  questions: from the largest ``task.n_train`` on (``task.heldout_from``), unless the overrides set it.

With ``--donor RUN/config.yaml`` a finished run (e.g. ``bench/quality.py``'s at the same scale: ``powered`` here is
its scale) is the first donor: its stages are adopted where a variant's fingerprint equals theirs, and its strong
cache seeds the sweep's (copied once, before the first variant), so the SFT side of validation is not paid again.

Resumable: each stage resumes itself, and a finished variant is skipped. Writes ``sweep.json``, ``sweep.md`` and
``sweep.png`` (gain with its 95% CI per variant) into ``bench/out/sweep/<task>-<scale>/`` after every variant.

The gain is aligned − SFT in the run's evaluator units (what DPO optimised); evaluator variants differ in those
units, so compare them on the metric gain (the task's primary per-item metric) and on "vs base" (each
variant's aligned drafts against the base variant's on the same questions, primary metric).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, ROOT, machine, machine_line, md_table, now_utc, write_json  # noqa: E402
from quality import SCALES as QUALITY_SCALES  # noqa: E402

TASKS = ("demo", "ifqa", "medmcqa", "prosocial_dialog")
SCALES: dict[str, list[str]] = {
    # a few minutes per variant with the offline models on 2 cores: checks the sweep, measures nothing
    "smoke": ["task.n_train=16", "feedback.max_questions=8", "feedback.k=4", "align.validation_questions=16",
              "sft.epochs=1", "align.epochs=1"],
    # feedback on 64 questions (K=4), the gain on 200 held-out training questions
    "default": ["task.n_train=128", "feedback.max_questions=64", "feedback.k=4", "align.validation_questions=200",
                "sft.epochs=2", "align.epochs=2"],
    # bench/quality.py's powered scale, so that its run can be the donor (--donor): the base variant adopts
    # its SFT, feedback, DPO and validation, and each other variant pays for its own stages only
    "powered": QUALITY_SCALES["powered"],
    # the same for bench/quality.py's session and large scales (large: MedMCQA and ProsocialDialog, issue 13)
    "session": QUALITY_SCALES["session"],
    "large": QUALITY_SCALES["large"],
    # the recipe's own sizes (with the demo: its 12 feedback questions); add align.validation_questions=N
    "recipe": [],
}
# name -> overrides on top of the base; "questions" doubles the feedback questions of the scale with as many
# training questions SFT never saw (feedback.extra_questions), so it keeps the base's SFT and validation questions
VARIANTS: dict[str, list[str]] = {
    "base": [],
    "likelihood": ["feedback.evaluator=likelihood"],
    "judge": ["feedback.evaluator=judge"],
    "k8": ["feedback.k=8"],
    "best_worst": ["feedback.pairing=best_worst"],
    "as_well": ["feedback.pairing=as_well"],  # only pairs about drafting: the drafts' own answers score the same
    "pairs1": ["feedback.max_pairs_per_question=1"],
    "beta0.03": ["align.beta=0.03"],
    "beta0.3": ["align.beta=0.3"],
    "epochs1": ["align.epochs=1"],
    "epochs4": ["align.epochs=4"],
    "rpo1": ["align.sft_weight=1.0"],  # RPO (Pang et al. 2024) and TRL's MPO weight the NLL 1.0
    "questions": ["feedback.extra_questions=feedback"],
    # a better weak model: SFT on twice the scale's training questions, feedback on as many as the base (the
    # sweep then validates every variant from the largest n_train on: task.heldout_from)
    "sft2x": ["task.n_train=twice"],
    "rounds2": ["rounds=2"],
}


def recipe(task: str) -> Path:
    return ROOT / "recipes" / ("demo.yaml" if task == "demo" else f"{task}_cpu.yaml")


def resolve(task: str, overrides: list[str]) -> list[str]:
    """``overrides`` with the value ``feedback`` replaced by the number of feedback questions the overrides
    before it give (SFT's questions, capped by feedback.max_questions), and ``twice`` by twice the value the
    overrides before it give that key."""
    from cowest.config import load_config

    resolved: list[str] = []
    for o in overrides:
        key, _, val = o.partition("=")
        if val == "feedback":
            cur = load_config(recipe(task), resolved)
            sizes = [n for n in (cur.feedback.max_questions, cur.task.n_train) if n is not None]
            if not sizes:
                raise SystemExit(f"{key}=feedback needs feedback.max_questions or task.n_train: set it in the scale")
            o = f"{key}={min(sizes)}"
        elif val == "twice":
            section, _, field = key.partition(".")
            now = getattr(getattr(load_config(recipe(task), resolved), section), field)
            if not isinstance(now, int):
                raise SystemExit(f"{key}=twice needs {key} set to a number before it (in the scale), got {now!r}")
            o = f"{key}={2 * now}"
        resolved.append(o)
    return resolved


def variant_config(task: str, overrides: list[str], name: str, out: Path) -> Any:
    """The variant's config: base recipe + the ``resolve``\ d ``overrides``, in its own run directory under
    ``out``, with the sweep's strong cache."""
    from cowest.config import load_config

    return load_config(recipe(task), resolve(task, overrides) + [
        f"name={name}", f"output_dir={out / 'runs'}", f"strong.cache_path={out / 'strong_cache.sqlite'}"])


# --------------------------------------------------------------------------------------------------
# sharing between variants


def adopt(mine: Path, donors: list[tuple[Any, Path]], fp: Any, cfg: Any, *, files: tuple[str, ...] | None = None) -> str | None:
    """Copy a finished stage (or, with ``files``, those files of it) from the first donor ``(cfg, dir)`` whose
    stage was made under ``fp(cfg)`` (one fingerprint, or the ``(new, legacy)`` pair a stage may carry), unless
    this variant has its own; returns the donor's name. The donor's recorded fingerprint decides (``.done.json``;
    ``.started.json`` for the files a collection started with), not one recomputed from its config.yaml, which a
    later command rewrites (``cowest eval ... task.n_eval=150``)."""
    from cowest.rundir import read_fingerprint

    if mine.exists():
        return None
    want = fp(cfg)
    wants = {want} if isinstance(want, str) else set(want)
    for dcfg, src in donors:
        if (src / ".done.json").exists() and read_fingerprint(src / (".started.json" if files else ".done.json")) in wants:
            if files is None:
                shutil.copytree(src, mine)
            else:
                mine.mkdir(parents=True)
                for f in files:
                    if (src / f).exists():
                        shutil.copy2(src / f, mine / f)
            return dcfg.name
    return None


def run_variant(cfg: Any, donors: list[Any], *, overwrite: bool = False) -> dict[str, Any]:
    """sft -> (feedback -> align -> validate) x rounds for one variant, sharing with ``donors`` (earlier
    variants' configs); returns what each stage reported and where a stage came from."""
    from cowest.align.dpo import align_fingerprint, run_align
    from cowest.feedback.collect import collection_fingerprint, run_feedback, stage_fingerprint as feedback_fingerprint
    from cowest.feedback.validate import run_validation, stage_fingerprint as validation_fingerprint
    from cowest.pipeline import release_memory
    from cowest.rundir import RunDir
    from cowest.sft.train import run_sft, sft_fingerprint

    rd = RunDir(cfg).create()
    tpath = rd.root / "sweep_timings.json"
    timings: dict[str, float] = json.loads(tpath.read_text()) if tpath.exists() else {}
    shared: dict[str, str] = {}

    def stage(label: str, fn: Any, *args: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:  # a killed stage's time counts too: the variant paid it
            timings[label] = round(timings.get(label, 0.0) + time.perf_counter() - t0, 1)
            write_json(tpath, timings)
            release_memory()

    def share(label: str, mine: Path, dir_of: Any, fp: Any, files: tuple[str, ...] | None = None) -> None:
        got = adopt(mine, [(d, dir_of(RunDir(d))) for d in donors], fp, cfg, files=files)
        if got:
            shared[label] = got

    share("sft", rd.sft, lambda d: d.sft, lambda c: (sft_fingerprint(c), sft_fingerprint(c, legacy=True)))
    stage("sft", run_sft, cfg, overwrite=overwrite)
    feedback, validation = {}, {}
    for r in range(1, cfg.rounds + 1):
        # the whole stage where its pairs are this variant's: its recorded fingerprint (legacy or not) is what
        # align's fingerprint builds on, so DPO is adopted too; else only the records, to re-derive pairs from
        share(f"feedback{r}", rd.feedback(r), lambda d, r=r: d.feedback(r),
              lambda c, r=r: (feedback_fingerprint(c, r), feedback_fingerprint(c, r, legacy=True)))
        share(f"feedback{r} records", rd.feedback(r), lambda d, r=r: d.feedback(r),
              lambda c, r=r: (collection_fingerprint(c, r), collection_fingerprint(c, r, legacy=True)),
              files=("records.jsonl", "drafts.jsonl", ".started.json"))
        feedback[r] = stage(f"feedback{r}", run_feedback, cfg, r, overwrite=overwrite)
        share(f"align{r}", rd.align(r), lambda d, r=r: d.align(r), lambda c, r=r: align_fingerprint(c, r))
        stage(f"align{r}", run_align, cfg, r, overwrite=overwrite)
        share(f"validate{r}", rd.validation(r), lambda d, r=r: d.validation(r),
              lambda c, r=r: validation_fingerprint(c, r))
        validation[r] = stage(f"validate{r}", run_validation, cfg, r, overwrite=overwrite, show=False)
    return {"feedback": feedback, "validation": validation, "shared": shared, "timings_s": timings}


# --------------------------------------------------------------------------------------------------
# the table


def row_for(name: str, overrides: list[str], cfg: Any, got: dict[str, Any] | None, error: str | None,
            base_cfg: Any | None) -> dict[str, Any]:
    row: dict[str, Any] = {"variant": name, "overrides": overrides, "status": "done" if error is None else error}
    if got is None:
        return row
    last = max(got["validation"]) if got["validation"] else None
    fb = got["feedback"]
    row.update({
        "pairs": [fb[r]["pairs"] for r in sorted(fb)],
        "questions_with_pairs": [fb[r]["questions_with_pairs"] for r in sorted(fb)],
        "delta_zero_share": [fb[r].get("delta_zero_share") for r in sorted(fb)],
        "shared": got["shared"], "timings_s": got["timings_s"], "wall_s": round(sum(got["timings_s"].values()), 1),
        "validation": {str(r): v for r, v in got["validation"].items()},
    })
    if last is not None:
        v = got["validation"][last]
        row.update({"round": last, "n": v["n"], "evaluator": v["evaluator"], "gain": v["gain"],
                    "detectable": v["detectable"], "metric": v["metric"], "metric_gain": v["metric_gain"],
                    "metric_detectable": v["metric_detectable"], "identical_share": v["identical_share"]})
        from cowest.feedback.validate import load_records, repeating_drafts

        records = load_records(cfg, last)
        # counted from the records, so validations made before their summary had the figure count too
        row["repeating"] = {"n": len(records), **repeating_drafts(records)}
        if base_cfg is not None and base_cfg.name != name:
            base_records = load_records(base_cfg, max(1, base_cfg.rounds))
            row["vs_base"], row["vs_base_detectable"] = versus(records, base_records)
            if own_sft(cfg, base_cfg):  # a weak model of its own (sft2x): are its SFT drafts more useful already?
                row["sft_vs_base"], row["sft_vs_base_detectable"] = versus(records, base_records, side="sft")
    return row


def own_sft(cfg: Any, base_cfg: Any) -> bool:
    """Whether the variant trained an SFT model of its own rather than the base variant's."""
    from cowest.rundir import RunDir, done_fingerprint

    return done_fingerprint(RunDir(cfg).sft) != done_fingerprint(RunDir(base_cfg).sft)


def versus(records: list[dict[str, Any]], base_records: list[dict[str, Any]],
           side: str = "aligned") -> tuple[list[float] | None, float | None]:
    """This variant's aligned (or SFT: ``side``) drafts, from its validation ``records``, against the base
    variant's (``base_records``), on the questions both validated (metric)."""
    from cowest.stats import min_detectable_difference, paired_bootstrap

    mine = {r_["id"]: r_[side]["metric"] for r_ in records}
    base = {r_["id"]: r_[side]["metric"] for r_ in base_records}
    ids = [i for i in mine if i in base]
    if len(ids) < 2:
        return None, None
    a, b = [mine[i] for i in ids], [base[i] for i in ids]
    mde = min_detectable_difference(a, b)
    return [round(x, 2) for x in paired_bootstrap(a, b)], (round(mde, 2) if mde == mde else None)


def _ci(ci: list[float] | None) -> str:
    return f"{ci[0]:+.1f} [{ci[1]:+.1f}, {ci[2]:+.1f}]" if ci else "–"


def _pm(x: float | None) -> str:
    return f"±{x:.1f}" if x is not None else "–"


def versus_cell(r: dict[str, Any], key: str = "vs_base") -> str:
    if r["variant"] == "base":
        return "(reference)"
    return f"{_ci(r.get(key))} {_pm(r.get(key + '_detectable'))}" if r.get(key) else "–"


def _repeating(x: dict[str, int] | None) -> str:
    return f"{x['sft']} → {x['aligned']} of {x['n']}" if x else "–"


def _share(x: float | None) -> str:
    return f"{100 * x:.0f}%" if x is not None else "–"


def summary_md(res: dict[str, Any]) -> str:
    rows = []
    for r in res["rows"]:
        if r["status"] != "done":
            rows.append([r["variant"], " ".join(r["overrides"]) or "–", r["status"], "", "", "", "", "", "", "", ""])
            continue
        rows.append([r["variant"], " ".join(r["overrides"]) or "–", "/".join(map(str, r["pairs"])),
                     f"{r.get('evaluator', '–')}: {_ci(r.get('gain'))}", _pm(r.get("detectable")), _ci(r.get("metric_gain")),
                     _pm(r.get("metric_detectable")), versus_cell(r), _share(r.get("identical_share")),
                     _repeating(r.get("repeating")), f"{r['wall_s'] / 60:.1f}"])
    head = ["variant", "overrides", "pairs (per round)", "validation gain, E pts [95% CI]", "detectable Δ",
            f"gain, {res.get('metric', 'metric')} pts [95% CI]", "detectable Δ", "aligned vs base [CI], detectable",
            "identical drafts", "repeating drafts, SFT → aligned", "wall min"]
    return "\n".join([
        f"# cowest sweep: {res['task']} at scale `{res['scale']}`\n",
        f"`{res['command']}` — {res['date']} — {machine_line(res['machine'])}\n",
        f"Base: `{recipe(res['task']).relative_to(ROOT)}` + `{' '.join(res['base_overrides'])}`. Each variant is judged on "
        "the same held-out training questions (never the eval split), last round. Gain = E(collab with the aligned "
        "draft) − E(collab with the SFT draft), paired bootstrap; detectable Δ: the smallest true difference this n "
        "detects (80% power, two-sided 5%). Repeating drafts: those that write their answer line more than once (run on "
        "past it), a side effect of DPO to watch. Wall time counts only the stages a variant ran itself (shared stages are "
        "copies).\n",
        md_table(head, rows), *own_sft_lines(res), ""])


def own_sft_lines(res: dict[str, Any]) -> list[str]:
    """For variants with an SFT model of their own: how much more its SFT drafts help than the base's."""
    own = [r for r in res["rows"] if r.get("sft_vs_base")]
    if not own:
        return []
    cells = "; ".join(f"{r['variant']} {versus_cell(r, 'sft_vs_base')}" for r in own)
    return [f"\nSFT drafts against the base variant's SFT drafts ({res.get('metric', 'metric')} pts [95% CI], detectable "
            f"Δ; same questions), for variants with an SFT model of their own: {cells}."]


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in res["rows"] if r["status"] == "done" and r.get("metric_gain")]
    if not done:
        return
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(done) + 1.5))
    for k, (key, label) in enumerate((("gain", "E (evaluator)"), ("metric_gain", res.get("metric", "metric")))):
        ys = [i + 0.18 * (1 - 2 * k) for i in range(len(done))]
        obs = [r[key][0] if r.get(key) else float("nan") for r in done]
        err = [[r[key][0] - r[key][1] if r.get(key) else 0 for r in done], [r[key][2] - r[key][0] if r.get(key) else 0 for r in done]]
        ax.errorbar(obs, ys, xerr=err, fmt="o", capsize=3, label=label)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(range(len(done)), [r["variant"] for r in done])
    ax.invert_yaxis()
    ax.set_xlabel("validation gain, aligned − SFT (points, 95% CI)")
    ax.set_title(f"{res['task']} sweep ({res['scale']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------


def donor_configs(paths: list[str | Path], out: Path) -> list[Any]:
    """The configs of finished runs to adopt stages from; the first one's strong cache seeds the sweep's."""
    import sqlite3

    from cowest.config import load_config

    donors = []
    for p in paths:
        if not Path(p).is_file():
            raise SystemExit(f"--donor {p}: no such file (give a run's config.yaml)")
        donors.append(load_config(str(p), []))
    cache = out / "strong_cache.sqlite"
    for d in donors:
        src = Path(d.strong.cache_path or d.run_dir / "strong_cache.sqlite")
        if not cache.exists() and src.exists():
            with sqlite3.connect(src) as a, sqlite3.connect(cache) as b:
                a.backup(b)  # a consistent copy even while the donor's run writes to it
            print(f"strong cache seeded from {src}", flush=True)
    return donors


def pin_heldout(task: str, base_overrides: list[str], variants: dict[str, list[str]]) -> list[str]:
    """``["task.heldout_from=N"]`` when the variants train on different numbers of questions (N: the largest), so
    that every variant is validated on the same held-out questions; else (or where the overrides set it) none."""
    from cowest.config import load_config

    if any(o.startswith("task.heldout_from=") for o in base_overrides):
        return []
    sizes = {load_config(recipe(task), resolve(task, base_overrides + ovr)).task.n_train for ovr in variants.values()}
    if len(sizes) < 2:
        return []
    if None in sizes:
        raise SystemExit("variants train on all questions and on some of them: no question is held out of every "
                         "one; set task.n_train for all")
    print(f"variants train on {sorted(sizes)} questions: every one is validated from the {max(sizes)}th on "
          f"(task.heldout_from={max(sizes)})", flush=True)
    return [f"task.heldout_from={max(sizes)}"]


def run_sweep(task: str, scale: str, variants: dict[str, list[str]], out: Path, extra: list[str], *,
              overwrite: bool = False, command: str = "", donors_from: list[str | Path] = ()) -> dict[str, Any]:
    from cowest.errors import CowestError

    base_overrides = SCALES[scale] + list(extra)
    base_overrides += pin_heldout(task, base_overrides, variants)
    res: dict[str, Any] = {"task": task, "scale": scale, "base_overrides": base_overrides, "command": command,
                           "date": now_utc(), "machine": machine(), "rows": []}
    donors: list[Any] = donor_configs(list(donors_from), out)
    base_cfg = None
    for name, ovr in variants.items():
        full = resolve(task, base_overrides + ovr)
        cfg = variant_config(task, full, name, out)  # resolving resolved overrides loads nothing
        ovr = full[len(base_overrides):]  # as run: "extra_questions=128"
        print(f"\n=== variant {name}: {' '.join(ovr) or '(base)'}", flush=True)
        got, error = None, None
        try:
            got = run_variant(cfg, donors, overwrite=overwrite)
        except CowestError as e:  # e.g. no pairs, or an evaluator the task cannot use: a result, not a crash
            error = f"{type(e).__name__}: {e}"
            print(f"variant {name}: {error}", flush=True)
        if got is not None:
            donors.append(cfg)
            if name == "base":
                base_cfg = cfg
        res["rows"].append(row_for(name, ovr, cfg, got, error, base_cfg))
        res["metric"] = next((r["metric"] for r in res["rows"] if r.get("metric")), "metric")
        write_json(out / "sweep.json", res)
        (out / "sweep.md").write_text(summary_md(res), encoding="utf-8")
        plot(res, out / "sweep.png")
    print("\n" + summary_md(res))
    print(f"wrote {out / 'sweep.json'}, {out / 'sweep.md'}, {out / 'sweep.png'}")
    return res


def parse_variants(names: str | None, own: list[str]) -> dict[str, list[str]]:
    chosen: dict[str, list[str]] = {}
    for n in (names.split(",") if names else ([] if own else list(VARIANTS))):
        n = n.strip()
        if n not in VARIANTS:
            raise SystemExit(f"unknown variant {n!r}; valid: {', '.join(VARIANTS)}")
        chosen[n] = VARIANTS[n]
    for spec in own:
        name, *ovr = spec.split()
        bad = [o for o in ovr if "=" not in o]
        if bad:
            raise SystemExit(f"--variant {spec!r}: {bad[0]!r} is not key=value")
        chosen[name] = ovr
    return chosen


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("task", choices=TASKS)
    p.add_argument("--scale", choices=list(SCALES), default="default")
    p.add_argument("--variants", default=None, help=f"comma-separated subset of: {', '.join(VARIANTS)} (default all)")
    p.add_argument("--variant", action="append", default=[], help='own variant: "NAME key=value ..." (repeatable)')
    p.add_argument("--out", default=None, help="default bench/out/sweep/<task>-<scale>")
    p.add_argument("--overwrite", action="store_true", help="redo stages made with another config")
    p.add_argument("--donor", action="append", default=[], help="a finished run's config.yaml whose stages (and "
                   "strong cache) the variants reuse where their fingerprints match (repeatable)")
    p.add_argument("overrides", nargs="*", help="extra key=value overrides for every variant")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_intermixed_args(argv)  # overrides may follow the options
    variants = parse_variants(a.variants, a.variant)
    os.chdir(ROOT)  # the recipes' data paths are relative to the project root
    if a.task != "demo" and not (ROOT.parent / "shared" / "data" / a.task).exists():
        print(f"skipping {a.task}: no data at ../shared/data/{a.task}")
        return 0
    out = Path(a.out).resolve() if a.out else OUT / "sweep" / f"{a.task}-{a.scale}"
    out.mkdir(parents=True, exist_ok=True)
    command = "python bench/sweep.py " + " ".join(argv if argv is not None else sys.argv[1:])
    run_sweep(a.task, a.scale, variants, out, a.overrides, overwrite=a.overwrite, command=command,
              donors_from=a.donor)
    return 0


if __name__ == "__main__":
    sys.exit(main())
