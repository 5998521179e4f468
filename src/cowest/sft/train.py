"""Stage 1: supervised fine-tuning of the weak model on the task's training split (TRL SFTTrainer).

Examples are conversational prompt-completion pairs, so TRL puts the loss on the completion only::

    {"prompt": weak_messages(task, ex, fmt), "completion": [{"role": "assistant", "content": target}]}

The target follows the interaction format (``weak_target``). ``cot``/``knowledge`` targets need a
rationale; ``sft.cot_targets`` says where it comes from: ``dataset`` (the example's own, else a direct
target), ``strong`` (the strong model explains the known gold answer; cached and counted under the
tag ``sft_rationale``), ``direct`` (answer only) or ``auto`` (dataset where present, else strong).

Writes ``sft/adapter`` (a PEFT adapter + tokenizer; a full model when ``sft.lora=false``),
``sft/metrics.json`` (the trainer's log history) and ``sft/loss.png``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cowest.config import RunConfig
from cowest.rundir import RunDir, check_stage, fingerprint, mark_done
from cowest.tasks.base import Example, Task


def sft_fingerprint(cfg: RunConfig, *, legacy: bool = False) -> str:
    """What the SFT adapter depends on: not ``task.n_eval``, which only picks evaluation questions.
    ``legacy``: the fingerprint runs made before 2026-12 recorded (n_eval included), so they resume."""
    task = cfg.task if legacy else dataclasses.replace(cfg.task, n_eval=None)
    return fingerprint(task, cfg.weak.model, cfg.weak.gguf_file, cfg.sft)


def needs_rationales(cfg: RunConfig) -> bool:
    return cfg.task.format in ("cot", "knowledge") and cfg.sft.cot_targets != "direct"


def rationale_sources(examples: list[Example], cot_targets: str) -> tuple[dict[str, str], list[Example]]:
    """Dataset rationales to use, and the examples whose rationale must come from the strong model."""
    if cot_targets == "direct":
        return {}, []
    if cot_targets == "strong":
        return {}, list(examples)
    have = {ex.id: ex.rationale.strip() for ex in examples if ex.rationale and ex.rationale.strip()}
    missing = [ex for ex in examples if ex.id not in have]
    return have, (missing if cot_targets == "auto" else [])


def build_sft_examples(task: Task, examples: list[Example], fmt: str, rationales: dict[str, str]) -> list[dict[str, Any]]:
    """TRL conversational prompt-completion rows; an example without a rationale gets a direct target."""
    from cowest.inference.prompts import weak_messages, weak_target

    return [
        {
            "prompt": weak_messages(task, ex, fmt),
            "completion": [{"role": "assistant", "content": weak_target(task, ex, fmt, rationales.get(ex.id))}],
        }
        for ex in examples
    ]


def strong_rationales(cfg: RunConfig, task: Task, examples: list[Example], client: Any) -> dict[str, str]:
    """Ask the strong model to explain each known gold answer (cached; empty answers are dropped)."""
    from cowest.inference.prompts import rationale_messages
    from cowest.models.strong import ChatRequest

    if not examples:
        return {}
    reqs = [ChatRequest(messages=rationale_messages(task, ex)) for ex in examples]
    results = client.chat_batch(reqs, tag="sft_rationale", desc="strong rationales for SFT targets")
    out = {}
    for ex, res in zip(examples, results):
        text = _clean_rationale(res.text)
        if text:
            out[ex.id] = text
    return out


def _clean_rationale(text: str) -> str:
    # The prompt asks for no answer line; drop one if the model wrote it anyway (the target adds its own).
    from cowest.chat import drop_answer_lines

    return drop_answer_lines(text)


def prepare_sft_rows(
    cfg: RunConfig, *, strong_client_factory: Callable[[], Any] | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The training rows and a summary of where their targets came from."""
    from cowest.tasks.splits import train_examples
    from cowest.endpoint import open_strong

    task, examples = train_examples(cfg)
    fmt = cfg.task.format
    rationales: dict[str, str] = {}
    asked = 0
    usage = None
    if needs_rationales(cfg):
        rationales, ask = rationale_sources(examples, cfg.sft.cot_targets)
        if ask:
            asked = len(ask)
            with open_strong(cfg, factory=strong_client_factory, stage="sft") as client:
                rationales.update(strong_rationales(cfg, task, ask, client))
                usage = client.usage
    rows = build_sft_examples(task, examples, fmt, rationales)
    n_rat = sum(1 for ex in examples if ex.id in rationales) if fmt != "direct" else 0
    info = {
        "n_examples": len(rows),
        "format": fmt,
        "cot_targets": cfg.sft.cot_targets,
        "with_rationale": n_rat,
        "direct_targets": len(rows) - n_rat,
        "strong_rationales_requested": asked,
    }
    if usage is not None:
        info["strong_usage"] = usage.by_tag().get("sft_rationale", {})
    return rows, info


def run_sft(cfg: RunConfig, *, overwrite: bool = False, strong_client_factory: Callable[[], Any] | None = None) -> Path:
    """Fine-tune the weak model; returns ``RunDir(cfg).sft_adapter``. Skipped when already done."""
    from accelerate import PartialState

    from cowest.training import claim_checkpoints, is_main_process, last_checkpoint

    rd = RunDir(cfg)
    out = rd.sft_adapter
    fp = sft_fingerprint(cfg)
    # Under `accelerate launch` only rank 0 may clear a stale stage; the others then see it empty.
    legacy = sft_fingerprint(cfg, legacy=True)
    with PartialState().main_process_first():
        if not check_stage(rd.sft, fp, overwrite=overwrite, name="sft", legacy=legacy):
            return out
        if is_main_process():
            claim_checkpoints(rd.sft, fp, overwrite=overwrite, name="sft", legacy=legacy)
    t0 = time.perf_counter()
    resumed = last_checkpoint(rd.sft / "trainer")

    # Under `accelerate launch`, rank 0 pays for strong rationales first; the others then hit the cache.
    with PartialState().main_process_first():
        rows, info = prepare_sft_rows(cfg, strong_client_factory=strong_client_factory)
    trainer = train_sft(cfg, rows, out)
    if is_main_process():
        from cowest.training import plot_curves, save_metrics, seconds_per_step

        hist = trainer.state.log_history
        sps = seconds_per_step(hist, trainer.state.global_step)
        save_metrics(rd.sft / "metrics.json", hist, data=info, global_step=trainer.state.global_step,
                     seconds_per_step=sps, wall_s=round(time.perf_counter() - t0, 1),
                     resumed_from=resumed and Path(resumed).name)
        plot_curves(rd.sft / "loss.png", hist, ["loss", "grad_norm", "learning_rate"], f"SFT {cfg.name}")
        mark_done(rd.sft, fp, steps=trainer.state.global_step, n_examples=info["n_examples"])
    return out


def train_sft(cfg: RunConfig, rows: list[dict[str, Any]], out: Path) -> Any:
    """TRL SFTTrainer on ``rows`` (LoRA unless ``sft.lora=false``); saves to ``out``; returns the trainer."""
    from datasets import Dataset
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from cowest.errors import ConfigError, DataError
    from cowest.training import (check_report_to, is_main_process, load_tokenizer, precision_kwargs, resolve_base,
                                 trainer_kwargs)
    from cowest.training import drop_trainer_dir, train_resuming, write_full_marker

    s = cfg.sft
    if not rows:
        raise DataError(f"task {cfg.task.name!r} split {cfg.task.train_split!r} has no training examples")
    if s.load_in_4bit and not s.lora:
        raise ConfigError("sft.load_in_4bit=true (QLoRA) needs sft.lora=true: a 4-bit model cannot be fully fine-tuned")
    prec = precision_kwargs(bf16=s.bf16, fp16=s.fp16, load_in_4bit=s.load_in_4bit, section="sft")
    check_report_to(s.report_to, "sft")
    path, gguf = resolve_base(cfg)
    tok = load_tokenizer(path, gguf)
    model = _load_for_sft(cfg, path, gguf, bf16=prec["bf16"])
    peft_config = None
    if s.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout,
            target_modules=s.lora_target_modules, task_type="CAUSAL_LM",
        )
    args = TRLSFTConfig(**trainer_kwargs(s, output_dir=out.parent / "trainer", prec=prec))
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok, peft_config=peft_config,
    )
    kept = len(trainer.train_dataset)
    if kept == 0:  # TRL drops rows whose completion was truncated away entirely
        raise ConfigError(
            f"sft.max_length={s.max_length} leaves no target tokens in any of the {len(rows)} training examples "
            "(the prompts are longer): raise sft.max_length"
        )
    train_resuming(trainer, "sft")
    # save_model is collective under FSDP/DeepSpeed: every rank calls it; it writes on the main one only.
    trainer.save_model(str(out))
    if is_main_process():
        drop_trainer_dir(out.parent)
        tok.save_pretrained(str(out))
        if not s.lora:
            write_full_marker(out, base=cfg.weak.model)
    return trainer


def _load_for_sft(cfg: RunConfig, path: str, gguf: str | None, *, bf16: bool) -> Any:
    from cowest.training import load_causal_lm, train_dtype

    s = cfg.sft
    dtype = train_dtype(cfg, bf16, frozen_base=s.lora)
    if not s.load_in_4bit:
        return load_causal_lm(path, gguf_file=gguf, dtype=dtype)
    import torch
    from accelerate import PartialState
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if bf16 else torch.float16
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute,
                           bnb_4bit_use_double_quant=True)
    # Each process keeps its own quantized copy on its own GPU.
    model = load_causal_lm(path, gguf_file=gguf, dtype=compute, quantization_config=q,
                           device_map={"": PartialState().local_process_index})
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=s.gradient_checkpointing)

