"""Stage 3: DPO of the weak model on the collaborative preference pairs (TRL DPOTrainer).

Reference model = the SFT weak model, without a second copy of the weights: the SFT adapter is merged
into the base weights, a fresh LoRA is added for DPO (``peft_config``) and ``ref_model=None``, so TRL
computes the reference log-probs with the adapter disabled, i.e. with the merged SFT model itself.
(Passing the SFT adapter as a trainable PeftModel instead would make "adapter disabled" the *base*
model, which is the wrong reference.) Round r > 1 starts from, and is referenced to, round r-1's model.

Saved in ``align/round<r>/``:

- ``adapter/``: the aligned model as ONE standard PEFT adapter on the original base (SFT LoRA and DPO
  LoRA folded together exactly, see :mod:`cowest.align.combine`) plus the tokenizer. Where folding does
  not apply (full fine-tuned SFT, exotic adapters) it holds the DPO adapter and ``adapter_info.json``
  lists what to merge under it;
- ``dpo_adapter/``: the raw DPO LoRA, relative to the merged starting model (when folded);
- ``adapter_info.json``: how to rebuild the model (:func:`cowest.weights.load_aligned_weak_model` reads it);
- ``metrics.json`` (loss, reward margins and accuracies per step) and ``metrics.png``. With
  ``align.eval_share`` > 0, a seeded share of the feedback *questions* (all their pairs) is held out of training
  and TRL evaluates on it during and after training: ``eval_loss``, ``eval_rewards/accuracies`` (the share of
  held-out pairs the policy prefers the right way), ``eval_rewards/margins``, drawn beside the training curves;
  ``metrics.json``'s ``eval`` holds the held-out questions and the final figures.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path
from typing import Any

from cowest.config import RunConfig
from cowest.errors import ConfigError, CowestError, NotReadyError
from cowest.rundir import RunDir, check_stage, done_fingerprint, fingerprint, load_pairs, mark_done
from cowest.weights import absolute, drafting_chain, load_chain, rel, tokenizer_dir

PLOT_KEYS = ["loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected"]
EVAL_EVERY = 0.2  # held-out evaluation every 20% of the training steps (TRL's eval_steps ratio), and at the end


class NoPairsError(CowestError):
    """The feedback stage produced no preference pairs, so there is nothing to align on."""


# --------------------------------------------------------------------------------------------------
# the stage


def align_fingerprint(cfg: RunConfig, round_: int) -> str:
    fb_fp = done_fingerprint(RunDir(cfg).feedback(round_))
    return fingerprint(fb_fp, cfg.weak.model, cfg.weak.gguf_file, cfg.sft, cfg.align, round_)


def _no_pairs_message(cfg: RunConfig, round_: int) -> str:
    stats_path = RunDir(cfg).feedback(round_) / "feedback_stats.json"
    msg = f"feedback round {round_} produced no preference pairs, so there is nothing to align on"
    if not stats_path.exists():
        return msg
    st = json.loads(stats_path.read_text())
    why = ", ".join(f"{k}={v}" for k, v in st.get("no_pair", {}).items() if v)
    return (
        f"{msg}: of {st.get('questions', 0)} questions, none had both a helpful draft (Δ>0) and an unhelpful "
        f"one (Δ≤0) [{why or 'no questions'}]. Try more questions (task.n_train), more drafts (feedback.k), a "
        "higher feedback.temperature, or graded scores: feedback.evaluator=likelihood (choice tasks) or judge"
    )


def run_align(cfg: RunConfig, round_: int = 1, *, overwrite: bool = False) -> Path:
    """DPO on ``feedback/round<r>/pairs.jsonl``; returns ``align/round<r>/adapter``."""
    from cowest.training import (claim_checkpoints, is_main_process, last_checkpoint, plot_curves, save_metrics,
                                 seconds_per_step)

    rd = RunDir(cfg)
    stage, out = rd.align(round_), rd.align_adapter(round_)
    if not (rd.feedback(round_) / ".done.json").exists():
        raise NotReadyError(f"feedback round {round_} has not finished: run `cowest feedback --round {round_}` first")
    fp = align_fingerprint(cfg, round_)
    from accelerate import PartialState

    with PartialState().main_process_first():  # only rank 0 may clear a stale stage under accelerate
        if not check_stage(stage, fp, overwrite=overwrite, name=f"align round {round_}"):
            return out
        if is_main_process():
            claim_checkpoints(stage, fp, overwrite=overwrite, name=f"align round {round_}")
    pairs = load_pairs(cfg, round_)
    if not pairs:
        raise NoPairsError(_no_pairs_message(cfg, round_))
    pairs, held = hold_out(pairs, cfg.align.eval_share, cfg.align.seed)
    t0, resumed = time.perf_counter(), last_checkpoint(stage / "trainer")
    chain = drafting_chain(cfg, round_)
    trainer, tok = train_dpo(cfg, chain, pairs, stage / "dpo_adapter", eval_pairs=held)
    if is_main_process():
        info = save_aligned(cfg, round_, chain, stage / "dpo_adapter", tok)
        hist = trainer.state.log_history
        save_metrics(stage / "metrics.json", hist, n_pairs=len(pairs), global_step=trainer.state.global_step,
                     seconds_per_step=seconds_per_step(hist, trainer.state.global_step),
                     wall_s=round(time.perf_counter() - t0, 1), resumed_from=resumed and Path(resumed).name,
                     adapter_info=info, eval=eval_summary(held, hist))
        plot_curves(stage / "metrics.png", hist, PLOT_KEYS, f"DPO {cfg.name} round {round_}")
        mark_done(stage, fp, pairs=len(pairs), steps=trainer.state.global_step)
    return out


def hold_out(pairs: list[dict[str, Any]], share: float, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, held-out) pairs: round(share x questions) seeded questions go out whole, so no held-out question
    was trained on. A share that leaves either side empty is a ConfigError."""
    if share <= 0:
        return pairs, []
    qids = sorted({str(p["question_id"]) for p in pairs})
    random.Random(seed).shuffle(qids)
    n = round(share * len(qids))
    if not 0 < n < len(qids):
        side = "no question to evaluate on" if n == 0 else "no question to train on"
        raise ConfigError(f"align.eval_share={share:g} of the {len(qids)} questions with pairs leaves {side}: "
                          "change align.eval_share or collect feedback on more questions (feedback.max_questions)")
    out = set(qids[:n])
    return [p for p in pairs if str(p["question_id"]) not in out], [p for p in pairs if str(p["question_id"]) in out]


def eval_summary(held: list[dict[str, Any]], hist: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The held-out questions and pairs, and the last evaluation's figures (None when nothing was held out)."""
    if not held:
        return None
    last = next((r for r in reversed(hist) if "eval_loss" in r), {})
    return {"questions": sorted({str(p["question_id"]) for p in held}), "pairs": len(held),
            "final": {k.removeprefix("eval_"): v for k, v in last.items()
                      if k.startswith("eval_") and not k.endswith(("runtime", "_per_second"))},
            "step": last.get("step")}


def train_dpo(cfg: RunConfig, chain: dict[str, Any], pairs: list[dict[str, Any]], save_to: Path,
              eval_pairs: list[dict[str, Any]] | None = None) -> tuple[Any, Any]:
    """TRL DPOTrainer: fresh LoRA on the merged starting model, reference = that model (adapter off); evaluated
    on ``eval_pairs`` when given."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from cowest.training import (check_report_to, drop_trainer_dir, load_tokenizer, precision_kwargs, train_dtype,
                                 train_resuming, trainer_kwargs)

    a = cfg.align
    prec = precision_kwargs(bf16=a.bf16, fp16=a.fp16, section="align")
    check_report_to(a.report_to, "align")
    model = load_chain(cfg, chain, dtype=train_dtype(cfg, prec["bf16"]))
    tok = load_tokenizer(tokenizer_dir(cfg, chain))
    ds, eval_ds = (Dataset.from_list([{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]}
                                      for p in ps]) if ps else None for ps in (pairs, eval_pairs))
    evaluating = {"eval_strategy": "steps", "eval_steps": EVAL_EVERY, "per_device_eval_batch_size": a.batch_size}
    targets = cfg.sft.lora_target_modules  # same modules as SFT, so the two LoRAs fold into one
    peft_config = LoraConfig(r=a.lora_r, lora_alpha=a.lora_alpha, lora_dropout=a.lora_dropout,
                             target_modules=targets, task_type="CAUSAL_LM")
    args = DPOConfig(
        beta=a.beta,
        # sft_weight: the chosen drafts' NLL beside the preference loss (RPO); TRL sums the weighted losses
        loss_type=[a.loss_type, "sft"] if a.sft_weight else [a.loss_type],
        loss_weights=[1.0, a.sft_weight] if a.sft_weight else None,
        precompute_ref_log_probs=a.precompute_ref_log_probs,
        **trainer_kwargs(a, output_dir=save_to.parent / "trainer", prec=prec),
        **(evaluating if eval_ds is not None else {}),
    )
    trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=ds, eval_dataset=eval_ds,
                         processing_class=tok, peft_config=peft_config)
    train_resuming(trainer, "align")
    step = trainer.state.global_step
    if eval_ds is not None and not any(r.get("step") == step and "eval_loss" in r for r in trainer.state.log_history):
        trainer.evaluate()  # the final model, whatever the ratio of steps left since the last evaluation
    trainer.save_model(str(save_to))  # collective under FSDP/DeepSpeed; writes on the main process
    drop_trainer_dir(save_to.parent)
    return trainer, tok


def save_aligned(cfg: RunConfig, round_: int, chain: dict[str, Any], dpo_dir: Path, tok: Any) -> dict[str, Any]:
    """Write ``adapter/`` (folded when possible) and ``adapter_info.json``; returns the info."""
    from cowest.align.combine import combinable, combine_lora

    rd = RunDir(cfg)
    stage, out = rd.align(round_), rd.align_adapter(round_)
    if out.exists():
        shutil.rmtree(out)
    prev = chain["merge"]
    if len(prev) == 1 and combinable(absolute(rd, prev[0]), dpo_dir):
        combine_lora(absolute(rd, prev[0]), dpo_dir, out)
        info = {"base": chain["base"], "merge": [rel(rd, out)], "self_contained": chain["base"] == "weak",
                "folded": [prev[0], rel(rd, dpo_dir)]}
    else:
        shutil.copytree(dpo_dir, out)
        info = {"base": chain["base"], "merge": prev + [rel(rd, out)], "self_contained": False, "folded": []}
    tok.save_pretrained(str(out))
    info.update(
        round=round_,
        base_model=cfg.weak.model,
        reference="the starting model: " + ("base + " if chain["base"] == "weak" else f"{chain['base']} + ")
        + (" + ".join(prev) if prev else "nothing") + " (merged)",
        how_to_load="cowest.weights.load_aligned_weak_model(cfg, round) merges 'merge' into 'base' in order"
        + ("; equivalently PeftModel.from_pretrained(base, 'adapter')" if info["self_contained"] else ""),
    )
    (stage / "adapter_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info
