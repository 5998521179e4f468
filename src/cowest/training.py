"""Helpers shared by the SFT and DPO stages: hardware checks, model loading, logs and plots.

Everything heavy (torch, transformers, peft) is imported inside functions so importing cowest stays
cheap. The trainers themselves are TRL's; this module only prepares their inputs and records outputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cowest.config import RunConfig
from cowest.errors import ConfigError, ModelError
from cowest.io import write_json

# Written next to a full fine-tuned model (sft.lora=false) so loaders know it is not an adapter.
FULL_MODEL_MARKER = "cowest_full_model.json"
# A killed SFT or DPO stage resumes from its last checkpoint: one every 10% of the steps (TrainingArguments'
# save_steps as a ratio), only the newest kept, all removed once the stage has saved its adapter.
CHECKPOINT_EVERY = 0.1


def is_main_process() -> bool:
    """True on the process that writes files (rank 0 under ``accelerate launch``; always when single)."""
    from accelerate import PartialState

    return PartialState().is_main_process


def hardware_bf16() -> bool:
    """Whether this machine runs bf16 matmuls natively: a GPU of Ampere or newer, else a CPU with avx512_bf16 /
    AMX."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    from cowest.models.cpu import cpu_has_native_bf16

    return cpu_has_native_bf16()


def resolve_bf16(bf16: bool | str, fp16: bool = False) -> bool:
    """``auto``: bf16 mixed precision where the hardware runs it natively (:func:`hardware_bf16`; 1.7x faster
    LoRA steps than fp32 on a Zen 4 CPU, bench/RESULTS.md), fp32 elsewhere, and never beside an explicit fp16."""
    if bf16 != "auto":
        return bool(bf16)
    return not fp16 and hardware_bf16()


def precision_kwargs(*, bf16: bool | str, fp16: bool, load_in_4bit: bool = False,
                     section: str = "sft") -> dict[str, Any]:
    """TrainingArguments precision/device settings (``bf16`` resolved), or a ConfigError when the hardware lacks
    them. On CPU, bf16 is autocast (weights and LoRA updates stay fp32 unless the weights load in bf16)."""
    import torch

    cuda = torch.cuda.is_available()
    asked = bf16 != "auto" and bool(bf16)  # an explicit true, checked against the hardware (auto adapts to it)
    if asked and fp16:
        raise ConfigError(f"{section}.bf16 and {section}.fp16 are both true; choose one")
    if asked and not hardware_bf16():
        raise ConfigError(
            f"{section}.bf16=true needs a GPU with bfloat16 support (Ampere or newer): set {section}.bf16=auto or false"
            if cuda else
            f"{section}.bf16=true on CPU needs bf16 instructions (avx512_bf16 or AMX), which this CPU lacks "
            f"(cowest env shows its features): set {section}.bf16=auto or false"
        )
    bf16 = resolve_bf16(bf16, fp16)
    if fp16 and not cuda:
        raise ConfigError(f"{section}.fp16=true needs a CUDA GPU; none found: set {section}.fp16=false")
    if load_in_4bit:
        import importlib.util

        if not cuda:
            raise ConfigError(f"{section}.load_in_4bit=true (QLoRA) needs a CUDA GPU; none found")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ConfigError(f"{section}.load_in_4bit=true (QLoRA) needs bitsandbytes: pip install bitsandbytes")
    # TRL defaults bf16 to True when unset: always pass both explicitly.
    return {"bf16": bf16, "fp16": bool(fp16), "use_cpu": not cuda}


# report_to value -> the packages (any one) its transformers callback needs
_REPORT_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "trackio": ("trackio",)}


def check_report_to(report_to: str | list[str], section: str) -> None:
    """A one-line ConfigError when a logging integration's package is missing (transformers would fail later,
    deep inside the trainer's setup)."""
    import importlib.util

    for name in [report_to] if isinstance(report_to, str) else report_to:
        pkgs = _REPORT_PACKAGES.get(name, ())
        if pkgs and not any(importlib.util.find_spec(p) is not None for p in pkgs):
            raise ConfigError(f"{section}.report_to={name} needs the {pkgs[0]} package: pip install {pkgs[0]} "
                              f"(or set {section}.report_to=none)")


def train_dtype(cfg: RunConfig, bf16: bool, *, frozen_base: bool = True) -> Any:
    """Weights dtype for training: weak.dtype when set; else bf16 under bf16 training when the base is frozen
    (LoRA: half the memory, 1.5x faster steps on CPU than fp32 weights under autocast); else fp32, so that a full
    fine-tune keeps fp32 master weights under autocast."""
    import torch

    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if cfg.weak.dtype != "auto":
        return names[cfg.weak.dtype]
    return torch.bfloat16 if bf16 and frozen_base else torch.float32


def load_tokenizer(path: str, gguf_file: str | None = None) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, gguf_file=gguf_file) if gguf_file else AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load the tokenizer of {path}: {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        raise ModelError(
            f"{path} has no chat template; cowest trains on chat-formatted prompts (use an instruction-tuned "
            "model or one whose tokenizer defines chat_template)"
        )
    return tok


def load_causal_lm(path: str, *, gguf_file: str | None = None, dtype: Any = None, quantization_config: Any = None,
                   device_map: Any = None) -> Any:
    """A trainable causal LM. A GGUF-loaded model cannot be trained or saved, so it is rebuilt plain."""
    from transformers import AutoModelForCausalLM

    from cowest.models.hub_kernels import hub_kernels_kwargs

    kw: dict[str, Any] = hub_kernels_kwargs()  # else transformers 5 fetches kernel code from the Hub on a GPU
    if dtype is not None:
        kw["dtype"] = dtype
    if quantization_config is not None:
        kw["quantization_config"] = quantization_config
    if device_map is not None:
        kw["device_map"] = device_map
    try:
        if gguf_file:
            g = AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf_file, **hub_kernels_kwargs())
            model = AutoModelForCausalLM.from_config(g.config, **({"dtype": dtype} if dtype is not None else {}))
            model.load_state_dict(g.state_dict())
            model.generation_config = g.generation_config
            del g
            return model
        return AutoModelForCausalLM.from_pretrained(path, **kw)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load the weak model {path}: {str(e).splitlines()[0]}") from None


def resolve_base(cfg: RunConfig) -> tuple[str, str | None]:
    """(path or hub id, gguf_file) of the weak base model, through the offline resolver."""
    from cowest.models.offline import resolve_weak_model

    return resolve_weak_model(cfg.weak.model, cfg.weak.gguf_file)


def is_full_model_dir(path: str | Path) -> bool:
    return (Path(path) / FULL_MODEL_MARKER).exists()


def seconds_per_step(log_history: list[dict[str, Any]], global_step: int) -> float | None:
    """Training wall time per optimizer step, from the trainer's final summary line."""
    for row in reversed(log_history):
        if "train_runtime" in row and global_step:
            return round(float(row["train_runtime"]) / global_step, 4)
    return None


def save_metrics(path: Path, log_history: list[dict[str, Any]], **extra: Any) -> None:
    write_json(path, {"log_history": log_history, **extra})


def plot_curves(path: Path, log_history: list[dict[str, Any]], keys: list[str], title: str) -> bool:
    """A PNG with one panel per logged key against step, the held-out ``eval_<key>`` drawn on the same panel
    when it was logged; False (and no file) when nothing was logged."""
    def pts(k: str) -> list[tuple[Any, Any]]:
        return [(r["step"], r[k]) for r in log_history if k in r and "step" in r]

    series = {k: (pts(k), pts("eval_" + k)) for k in keys}
    series = {k: v for k, v in series.items() if v[0] or v[1]}
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3.2), squeeze=False)
    for ax, (k, (train, held)) in zip(axes[0], series.items()):
        for line, label in ((train, "train"), (held, "held-out")):
            if line:
                xs, ys = zip(*line)
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3, label=label)
        if held:
            ax.legend(fontsize=7)
        ax.set_title(k)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_full_marker(out: Path, **info: Any) -> None:
    write_json(Path(out) / FULL_MODEL_MARKER, {"kind": "full_model", **info})


def trainer_kwargs(section: Any, *, output_dir: Path | str, prec: dict[str, Any]) -> dict[str, Any]:
    """The TrainingArguments that SFT and DPO share, from their config section (``cfg.sft`` / ``cfg.align``).

    ``prec`` is :func:`precision_kwargs`' result (checked before the model is loaded). Checkpoints under
    ``output_dir`` are for resuming a killed stage (:func:`train_resuming`); each stage saves its adapter itself
    once training ends."""
    return {
        "output_dir": str(output_dir),
        "num_train_epochs": section.epochs,
        "max_steps": section.max_steps,
        "learning_rate": section.learning_rate,
        "per_device_train_batch_size": section.batch_size,
        "gradient_accumulation_steps": section.gradient_accumulation_steps,
        "max_length": section.max_length,
        "logging_steps": section.logging_steps,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": CHECKPOINT_EVERY,
        "save_total_limit": 1,
        "report_to": section.report_to,  # TRL's own integrations; "none" keeps training offline
        "seed": section.seed,
        "data_seed": section.seed,
        "dataloader_pin_memory": False,
        **prec,
        **checkpointing_kwargs(section.gradient_checkpointing),
    }


def claim_checkpoints(stage: Path, fp: str, *, overwrite: bool, name: str, legacy: str | None = None) -> None:
    """Checkpoints in ``<stage>/trainer`` are resumed only under the config that wrote them: a stage started
    under another one is refused, or with ``overwrite`` its checkpoints are dropped. A stage that left no complete
    checkpoint just starts again. Call on the main process."""
    import shutil

    from cowest.rundir import claim

    if last_checkpoint(Path(stage) / "trainer") is None:
        shutil.rmtree(Path(stage) / "trainer", ignore_errors=True)
        (Path(stage) / ".started.json").unlink(missing_ok=True)
    claim(Path(stage) / ".started.json", fp, overwrite=overwrite, legacy=legacy,
          clear=lambda: shutil.rmtree(Path(stage) / "trainer", ignore_errors=True),
          refusal=f"{name} in {stage} was started with a different config and has checkpoints; pass --overwrite "
                  "to drop them or choose another run name")


def last_checkpoint(output_dir: Path | str) -> str | None:
    """The newest complete ``checkpoint-<step>`` under ``output_dir``, or None. The trainer writes
    ``trainer_state.json`` last, so a checkpoint cut off mid-save is passed over for the one before it (which
    the trainer deletes only after that file is written)."""
    done = [p for p in Path(output_dir).glob("checkpoint-*")
            if _checkpoint_step(p) is not None and _state_written(p / "trainer_state.json")]
    return str(max(done, key=_checkpoint_step)) if done else None


def _state_written(path: Path) -> bool:
    """Whether ``trainer_state.json`` is whole: the trainer writes it in place, so a kill mid-write leaves a
    file that exists but does not parse (and resuming from it would fail on every rerun)."""
    try:
        return isinstance(json.loads(path.read_text()), dict)
    except (OSError, ValueError):
        return False


def _checkpoint_step(path: Path | str) -> int | None:
    """The step of a ``checkpoint-<step>`` directory, None for any other name."""
    step = Path(path).name.removeprefix("checkpoint-")
    return int(step) if step.isdigit() else None


def train_resuming(trainer: Any, name: str) -> None:
    """``trainer.train()``, from the last complete checkpoint when a killed run left one (model, optimizer,
    scheduler, RNG and data position restored)."""
    ckpt = last_checkpoint(trainer.args.output_dir)
    if ckpt and is_main_process():
        print(f"{name}: resuming from the checkpoint at step {_checkpoint_step(ckpt)} ({ckpt})", flush=True)
    trainer.train(resume_from_checkpoint=ckpt)


def drop_trainer_dir(stage: Path) -> None:
    """Remove ``<stage>/trainer`` (checkpoints and run metadata), keeping TensorBoard's event files (written
    under it as ``runs/``) as ``<stage>/tensorboard``."""
    import shutil

    runs, keep = Path(stage) / "trainer" / "runs", Path(stage) / "tensorboard"
    if runs.is_dir():
        shutil.rmtree(keep, ignore_errors=True)
        shutil.move(str(runs), str(keep))
    shutil.rmtree(Path(stage) / "trainer", ignore_errors=True)


def checkpointing_kwargs(enabled: bool) -> dict[str, bool]:
    """Gradient checkpointing under the argument name this transformers version uses (renamed in 5.x)."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    key = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return {key: bool(enabled)}
