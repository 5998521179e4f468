"""``cowest eval``: every requested system on the same questions, one table.

    cowest eval recipes/demo.yaml
    cowest eval recipes/medmcqa_cpu.yaml task.n_eval=100 eval.systems=[weak,strong,collab]

Writes ``runs/<name>/eval/``: ``predictions/<system>.jsonl`` (prompt, weak draft, strong output, parsed
answer, per-item scores), ``metrics.json``, ``report.md`` and ``systems.png``. With ``routed`` (the
confidence gate + CoWest) or ``random_gate`` among the systems, the gate is calibrated first
(``runs/<name>/gate/``, :mod:`cowest.inference.gate`) and the report adds the routing curve
(:mod:`cowest.eval.routing`, ``routing.png``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from cowest.config import RunConfig
from cowest.errors import ConfigError, DataError
from cowest.eval.flips import flip_tables
from cowest.eval.labels import label_table
from cowest.eval.report import print_table, write_report
from cowest.stats import min_detectable_difference, paired_bootstrap
from cowest.eval import routing
from cowest.inference.gate import calibrate, gate_fingerprint, load_gate
from cowest.inference.routed import GatedRunner, partner
from cowest.inference.systems import N_SUPERICL_DEMOS, unsupported
from cowest.rundir import RunDir, claim, done_fingerprint, fingerprint, strong_identity
from cowest.tasks import get_task, subsample
from cowest.endpoint import open_strong
from cowest.tasks.splits import eval_examples
from cowest.weights import gate_model, last_aligned_round, weak_loader

# Systems that need the weak model run first so the strong-only system never waits on a model load,
# and the aligned model is loaded last (after the SFT model is freed).
ORDER = ("strong", "weak", "superICL", "collab", "cowest", "routed", "random_gate")
GATED = ("routed", "random_gate")


def _stage_id(stage_dir: Path) -> str:
    return done_fingerprint(stage_dir) or "absent"


def _task_identity(cfg: RunConfig) -> Any:
    return dataclasses.replace(cfg.task, n_eval=None, n_train=None)  # not the sizes: a run can be extended


def _weak_identity(cfg: RunConfig, rd: RunDir) -> tuple:
    weak = (cfg.weak.model, cfg.weak.gguf_file, cfg.weak.adapter, cfg.weak.max_new_tokens, _stage_id(rd.sft))
    if cfg.weak.temperature > 0:  # sampled drafts (greedy ones, the default, keep the older fingerprints)
        weak += ((cfg.weak.temperature, cfg.weak.top_p, cfg.seed),)
    return weak


def _aligned_id(rd: RunDir) -> str:
    aligned = rd.cowest_adapter()
    return _stage_id(Path(aligned).parent) if aligned else "absent"


def system_fingerprint(cfg: RunConfig, rd: RunDir, system: str) -> str:
    """What a system's predictions depend on (not n_eval, so a run can be extended)."""
    task = _task_identity(cfg)
    strong = strong_identity(cfg)
    if system == "strong":
        return fingerprint(task, strong)
    weak = _weak_identity(cfg, rd)
    if system in ("cowest", *GATED):
        parts: tuple = (task, strong, weak, _aligned_id(rd))
        if system in GATED:
            parts += (gate_fingerprint(cfg, gate_model(cfg)),)
        return fingerprint(*parts)
    return fingerprint(task, strong, weak)


def draft_fingerprint(cfg: RunConfig, rd: RunDir, kind: str) -> str:
    """What the journaled drafts of model ``kind`` ("sft" | "aligned") depend on: no strong model in it."""
    parts: tuple = (_task_identity(cfg), _weak_identity(cfg, rd)) + ((_aligned_id(rd),) if kind == "aligned" else ())
    return fingerprint("drafts", kind, *parts)


def _check_predictions(cfg: RunConfig, rd: RunDir, systems: list[str], overwrite: bool) -> None:
    """Claim each system's prediction file, and each weak model's draft journal: rows made under another config
    are refused (or, with ``overwrite``, dropped); drafts of another model are dropped and drawn again."""
    pred_dir = rd.eval / "predictions"
    for s in systems:
        claim(pred_dir / f"{s}.fingerprint", system_fingerprint(cfg, rd, s), overwrite=overwrite,
              clear=lambda s=s: (pred_dir / f"{s}.jsonl").unlink(missing_ok=True),
              refusal=f"predictions for system {s!r} in {pred_dir} were made with another config or model; "
                      "pass --overwrite to redo them")
    drafts = rd.eval / "drafts"
    for kind in ("sft", "aligned"):
        claim(drafts / f"{kind}.fingerprint", draft_fingerprint(cfg, rd, kind), overwrite=True, refusal="",
              clear=lambda k=kind: (drafts / f"{k}.jsonl").unlink(missing_ok=True))


def summarise(task: Any, split: str, rows_by_system: dict[str, list[dict[str, Any]]], examples: list[Any]) -> dict[str, Any]:
    """Metrics per system on the questions every system answered, plus paired CIs against cowest."""
    ids = [ex.id for ex in examples]
    common = set(ids)
    for rows in rows_by_system.values():
        common &= {str(r["id"]) for r in rows}
    exs = [ex for ex in examples if ex.id in common]
    primary = task.primary_metric
    systems: dict[str, Any] = {}
    per_item: dict[str, list[float]] = {}
    for s, rows in rows_by_system.items():
        by_id = {str(r["id"]): r for r in rows}
        preds = [by_id[ex.id]["prediction"] for ex in exs]
        systems[s] = {
            "n": len(exs),
            "metrics": task.score(preds, exs) if exs else {m: 0.0 for m in task.metric_names},
            "unparsed": sum(p is None for p in preds),
        }
        per_item[s] = [float(by_id[ex.id]["scores"].get(task.primary_item_key, 0.0)) for ex in exs]
    if "cowest" in per_item:
        for s in systems:
            if s != "cowest":
                systems[s]["delta_vs_cowest"] = list(paired_bootstrap(per_item[s], per_item["cowest"]))
                mde = min_detectable_difference(per_item[s], per_item["cowest"])
                systems[s]["detectable_vs_cowest"] = mde if mde == mde else None  # nan (n < 2) is not JSON
    return {
        "task": task.name,
        "split": split,
        "n": len(exs),
        "metric_names": list(task.metric_names),
        "primary_metric": primary,
        "systems": systems,
    }


def validation_gain(cfg: RunConfig, rd: RunDir) -> dict[str, Any] | None:
    """``cowest validate``'s result for the aligned model cowest drafts with, if it was made for that model."""
    import json

    r = last_aligned_round(cfg)
    if r is None:
        return None
    stage = rd.validation(r)
    path = stage / "validation.json"
    try:
        done = json.loads((stage / ".done.json").read_text())
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return result if done.get("align") == done_fingerprint(rd.align(r)) else None


def validation_note(v: dict[str, Any]) -> str:
    def ci(c: list[float] | None) -> str:
        return f"{c[0]:+.1f} [{c[1]:+.1f}, {c[2]:+.1f}]" if c else "n/a"

    mde = v.get("detectable")
    return (f"aligned − SFT drafts on {v['n']} held-out training questions (round {v['round']}): "
            f"E ({v['evaluator']}) {ci(v.get('gain'))}" + (f" (detectable ±{mde:.1f})" if mde is not None else "")
            + f", {v['metric']} {ci(v.get('metric_gain'))} points")


def eval_usage(rd: RunDir, usage: Any) -> dict[str, dict[str, Any]]:
    """Strong usage per system over every invocation of this run's eval (``usage.json``, which the client
    has just saved), so a resumed eval reports what its predictions cost, not 0; ``usage`` (this
    invocation's) when there is no file."""
    from cowest.models.usage import Usage

    if rd.usage_path.exists():
        return Usage.load(rd.usage_path, stage="eval").by_tag()
    return usage.by_tag()


def run_eval(cfg: RunConfig, *, systems: list[str] | None = None, overwrite: bool = False, show: bool = True) -> dict[str, Any]:
    rd = RunDir(cfg).create()
    systems = [s for s in ORDER if s in (systems or cfg.eval.systems)]
    if systems and all(unsupported(s, cfg.task.format) for s in systems):
        raise ConfigError(f"eval.systems={systems}: {unsupported(systems[0], cfg.task.format)}")
    task = get_task(cfg.task)
    examples, repeats = eval_examples(cfg, task)
    demos = []
    if "superICL" in systems:
        try:
            demos = subsample(task.load(cfg.task.train_split), N_SUPERICL_DEMOS, cfg.seed + 1)
        except DataError:
            demos = []  # no training split: SuperICL runs zero-shot
    notes: dict[str, str] = {}
    kind = gate_model(cfg)
    if any(s in systems for s in GATED):
        if kind == "sft":
            notes["gate"] = ("no aligned round has finished: the gate scores the SFT model's drafts and routes to "
                             "collab (gate + plain collaboration, not gate + CoWest)")
        if partner(kind) not in systems:  # its strong answers are the gated systems' (cache hits) and the curve's end
            systems = [s for s in ORDER if s in systems or s == partner(kind)]
            notes["systems"] = f"{partner(kind)} added: the gated systems route to it and the routing curve ends there"
    _check_predictions(cfg, rd, systems, overwrite)

    if repeats:
        notes["eval split"] = (f"{repeats} {cfg.task.eval_split} item(s) whose question is also in "
                               f"{cfg.task.train_split} were left out")
    if rd.collab_adapter() is None and any(s in systems for s in ("weak", "superICL", "collab")):
        notes["weak model"] = "not fine-tuned (no SFT adapter): weak/superICL/collab use the base model"
    rows: dict[str, list[dict[str, Any]]] = {}
    with open_strong(cfg, stage="eval") as client:
        load = weak_loader(cfg)
        runner = GatedRunner(cfg, task, examples, client, rd.eval, load_weak=load, demos=demos, gate_kind=kind,
                             drafts_dir=rd.eval / "drafts",
                             gate=lambda: calibrate(cfg, load, kind, overwrite=overwrite))
        runner.prefetch(systems)
        for s in systems:
            got = runner.run(s)
            if got:
                rows[s] = got
        notes.update(runner.notes)
        usage = client.usage
        if "routed" in rows:
            _ = runner.gate  # calibrated again when gate/ was removed after the gated predictions were made
    summary = summarise(task, cfg.task.eval_split, {s: rows[s] for s in ORDER if s in rows}, examples)
    by_tag = eval_usage(rd, usage)
    for s, info in summary["systems"].items():
        u = by_tag.get(s, {})
        # needed: one per answered question that went to the strong model (what the system costs on its
        # own); paid: the run's eval calls minus cache hits (drafts equal to another system's are free)
        info["strong_calls_needed"] = sum(1 for r in rows.get(s, []) if "strong_output" in r)
        info["strong_calls_paid"] = int(u.get("calls", 0) - u.get("cached", 0))
        info["strong_tokens"] = int(u.get("prompt_tokens", 0) + u.get("completion_tokens", 0))
        info["cost_usd"] = float(u.get("cost_usd", 0.0))
    validation = validation_gain(cfg, rd)
    if validation is not None and "cowest" in systems:
        summary["validation"] = validation
        notes["alignment gain on validation"] = validation_note(validation)
    summary["notes"] = notes
    summary["usage"] = by_tag
    summary["flips"] = flip_tables(task, cfg.task.format, rows, examples)
    summary["labels"] = label_table(task, rows, examples)
    if "routed" in rows:
        ids = [ex.id for ex in examples if all(ex.id in {str(r["id"]) for r in rs} for rs in rows.values())]
        summary["routing"] = routing.analyse(rows, ids, task.primary_item_key, partner=partner(kind), gate=load_gate(cfg),
                                             seed=cfg.seed)
    write_report(rd.eval, summary)
    if show:
        print_table(summary)
        print(f"\nreport: {rd.eval / 'report.md'}")
    return summary
