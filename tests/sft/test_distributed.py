"""SFT under ``accelerate launch`` with 2 CPU processes (gloo) equals 1 process with twice the batch.

Data parallelism splits each global batch of 2b examples into two per-process batches of b and averages
the gradients, so with the same data, seed and global batch the LoRA weights must match a single
process trained at batch 2b, up to float error. A 1-process run at batch b (what a launch that silently
runs one process would train) is the negative control: it must differ by far more than the tolerance.

Tolerance: atol 5e-5 + rtol 1e-3 on float32 LoRA weights. The runs differ only in summation order (two
half-batch gradients all-reduced vs one batch) and in padding width per batch: ~1e-7 relative error per
step, which Adam's division by sqrt(v) amplifies as the steps go. Observed here (2-core x86, lr 5e-3, 8
steps): max |Δ| 5e-6, i.e. 1/10 of the tolerance, leaving room for other CPUs' kernels. The LoRA B
matrices (zero at init) move by ~2e-2, 400x the tolerance, and the control differs by > 1e-3.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CPU_2PROC = ROOT / "recipes" / "accelerate" / "cpu_2proc.yaml"
N_TRAIN, B, EPOCHS = 16, 2, 2
STEPS = N_TRAIN // (2 * B) * EPOCHS  # with a global batch of 2B


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sft_args(model_dir: Path, out: Path, batch: int) -> list[str]:
    return [
        "-m", "cowest", "sft", "name=dist", f"output_dir={out}", "task.name=demo", f"task.n_train={N_TRAIN}",
        "task.format=direct", f"weak.model={model_dir}", "strong.api_key_env=null", f"sft.batch_size={batch}",
        f"sft.epochs={EPOCHS}", "sft.learning_rate=5e-3", "sft.lora_dropout=0", "sft.logging_steps=1", "sft.seed=0",
        # fp32, which the tolerance is for: bf16=auto would train in bf16 on a CPU with native bf16 (~2e-3 apart)
        "sft.bf16=false", "weak.dtype=float32",
    ]


def env() -> dict[str, str]:
    # one thread per process: the same arithmetic in every run, and no oversubscription on small machines; no GPU, so
    # the two processes are two CPU ranks (gloo) also on a machine with one GPU
    return {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false",
            "CUDA_VISIBLE_DEVICES": ""}


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def lora(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "dist" / "sft" / "adapter" / "adapter_model.safetensors"))


def metrics(run: Path) -> dict:
    return json.loads((run / "dist" / "sft" / "metrics.json").read_text())


@pytest.mark.slow
def test_two_process_sft_matches_one_process_with_double_batch(tmp_path):
    import torch

    from support.tiny import make_tiny_model

    model_dir = make_tiny_model(tmp_path / "tiny", tokenizer="builtin")  # small vocab: seconds per run
    one, control, two = tmp_path / "one", tmp_path / "control", tmp_path / "two"
    singles = [subprocess.Popen([sys.executable, *sft_args(model_dir, out, batch)], env=env(), cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for out, batch in ((one, 2 * B), (control, B))]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_2PROC),
              "--main_process_port", str(free_port()), *sft_args(model_dir, two, B)]
    dist = subprocess.run(launch, env=env(), cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert dist.returncode == 0, dist.stdout[-3000:] + dist.stderr[-3000:]
    assert "terminate called" not in dist.stderr  # no rank aborted at exit (rc 0 can hide it if rank 0 is first)
    for p in singles:
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0, out[-3000:]

    # two processes of batch B took as many steps as one of 2B: the data really was split in two
    assert metrics(two)["global_step"] == metrics(one)["global_step"] == STEPS
    assert metrics(control)["global_step"] == 2 * STEPS

    a, b, c = lora(one), lora(two), lora(control)
    assert sorted(a) == sorted(b) and any("lora_B" in k for k in a)
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=5e-5, rtol=1e-3, msg=lambda m, k=k: f"{k}: {m}")
    moved = max(a[k].abs().max().item() for k in a if "lora_B" in k)  # B starts at zero
    assert moved > 1e-3
    assert max((c[k] - a[k]).abs().max().item() for k in a) > 1e-3  # the tolerance does discriminate
    losses = lambda m: [r["loss"] for r in m["log_history"] if "loss" in r]  # noqa: E731
    assert losses(metrics(two)) == pytest.approx(losses(metrics(one)), abs=1e-4)

    # only the main process wrote: the same files as a single-process run, nothing extra, one summary line
    assert files(two) == files(one)
    assert not [f for f in files(two) if f.endswith(".tmp")]
    assert len(metrics(two)["log_history"]) == len(metrics(one)["log_history"])
    assert dist.stdout.count("sft: ") == 1, dist.stdout


@pytest.mark.parametrize("name, kind", [("ddp", "MULTI_GPU"), ("deepspeed_zero2", "DEEPSPEED"),
                                        ("deepspeed_zero3", "DEEPSPEED"), ("fsdp", "FSDP"), ("cpu_2proc", "MULTI_GPU")])
def test_accelerate_configs_load_and_leave_precision_to_the_recipe(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(ROOT / "recipes" / "accelerate" / f"{name}.yaml"))
    assert cfg.distributed_type.value == kind and cfg.num_machines == 1 and cfg.num_processes >= 2
    # 'bf16' here would turn on autocast even with sft.bf16=false: the recipe must be the one switch
    assert cfg.mixed_precision == "no" and not cfg.use_cpu  # use_cpu would fall back to one process
    if kind == "DEEPSPEED":
        stage = cfg.deepspeed_config["zero_stage"]
        assert stage == int(name[-1])
        # batch/accumulation/clipping left "auto" so the trainer fills them from the recipe
        assert not {"gradient_accumulation_steps", "gradient_clipping"} & set(cfg.deepspeed_config)
        assert stage < 3 or cfg.deepspeed_config["zero3_save_16bit_model"]  # a loadable adapter is saved
    if kind == "FSDP":
        assert cfg.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
