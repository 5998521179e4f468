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
- ``metrics.json`` (loss, reward margins and accuracies per step) and ``metrics.png``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from cowest.config import RunConfig
from cowest.errors import CowestError, NotReadyError
from cowest.rundir import RunDir, check_stage, done_fingerprint, fingerprint, load_pairs, mark_done
from cowest.weights import absolute, drafting_chain, load_chain, rel, tokenizer_dir

PLOT_KEYS = ["loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected"]


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
        "higher feedback.temperature, or feedback.evaluator=judge for finer-grained scores"
    )


def run_align(cfg: RunConfig, round_: int = 1, *, overwrite: bool = False) -> Path:
    """DPO on ``feedback/round<r>/pairs.jsonl``; returns ``align/round<r>/adapter``."""
    from cowest.training import is_main_process, plot_curves, save_metrics, seconds_per_step

    rd = RunDir(cfg)
    stage, out = rd.align(round_), rd.align_adapter(round_)
    if not (rd.feedback(round_) / ".done.json").exists():
        raise NotReadyError(f"feedback round {round_} has not finished: run `cowest feedback --round {round_}` first")
    fp = align_fingerprint(cfg, round_)
    from accelerate import PartialState

    with PartialState().main_process_first():  # only rank 0 may clear a stale stage under accelerate
        if not check_stage(stage, fp, overwrite=overwrite, name=f"align round {round_}"):
            return out
    pairs = load_pairs(cfg, round_)
    if not pairs:
        raise NoPairsError(_no_pairs_message(cfg, round_))
    t0 = time.perf_counter()
    chain = drafting_chain(cfg, round_)
    trainer, tok = train_dpo(cfg, chain, pairs, stage / "dpo_adapter")
    if is_main_process():
        info = save_aligned(cfg, round_, chain, stage / "dpo_adapter", tok)
        hist = trainer.state.log_history
        save_metrics(stage / "metrics.json", hist, n_pairs=len(pairs), global_step=trainer.state.global_step,
                     seconds_per_step=seconds_per_step(hist, trainer.state.global_step),
                     wall_s=round(time.perf_counter() - t0, 1), adapter_info=info)
        plot_curves(stage / "metrics.png", hist, PLOT_KEYS, f"DPO {cfg.name} round {round_}")
        mark_done(stage, fp, pairs=len(pairs), steps=trainer.state.global_step)
    return out


def train_dpo(cfg: RunConfig, chain: dict[str, Any], pairs: list[dict[str, Any]], save_to: Path) -> tuple[Any, Any]:
    """TRL DPOTrainer: fresh LoRA on the merged starting model, reference = that model (adapter off)."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from cowest.training import (check_report_to, drop_trainer_dir, load_tokenizer, precision_kwargs, train_dtype,
                                 trainer_kwargs)

    a = cfg.align
    prec = precision_kwargs(bf16=a.bf16, fp16=a.fp16, section="align")
    check_report_to(a.report_to, "align")
    model = load_chain(cfg, chain, dtype=train_dtype(cfg, prec["bf16"]))
    tok = load_tokenizer(tokenizer_dir(cfg, chain))
    ds = Dataset.from_list([{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs])
    targets = cfg.sft.lora_target_modules  # same modules as SFT, so the two LoRAs fold into one
    peft_config = LoraConfig(r=a.lora_r, lora_alpha=a.lora_alpha, lora_dropout=a.lora_dropout,
                             target_modules=targets, task_type="CAUSAL_LM")
    args = DPOConfig(
        beta=a.beta,
        loss_type=[a.loss_type],
        precompute_ref_log_probs=a.precompute_ref_log_probs,
        **trainer_kwargs(a, output_dir=save_to.parent / "trainer", prec=prec),
    )
    trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=ds, processing_class=tok,
                         peft_config=peft_config)
    trainer.train()
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
