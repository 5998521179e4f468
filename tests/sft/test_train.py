"""SFT on the tiny random model: LoRA parameters move, base weights stay, outputs and stage markers."""

import json

import pytest

from cowest.config import load_config
from cowest.errors import ConfigError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """The tiny model with its 600-token built-in tokenizer: a 49k-token vocabulary would make the
    logits, and so every training step, ~40x bigger."""
    from support.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny_small_vocab"), tokenizer="builtin")


def _cfg(tmp_path, tiny_model_dir, *extra):
    return load_config(None, [
        "task.name=demo", "task.n_train=8", f"weak.model={tiny_model_dir}", f"output_dir={tmp_path}", "name=sft",
        "sft.max_steps=3", "sft.batch_size=2", "sft.learning_rate=0.01", "sft.logging_steps=1",
        "sft.max_length=512", "sft.lora_r=4", "sft.lora_alpha=8", *extra,
    ])


def _state(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_lora_sft_changes_adapter_only(tmp_path, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from cowest.sft.train import run_sft

    base_before = _state(tiny_model_dir / "model.safetensors")
    cfg = _cfg(tmp_path, tiny_model_dir)
    out = run_sft(cfg)
    assert (out / "adapter_config.json").exists() and (out / "tokenizer_config.json").exists()
    lora = _state(out / "adapter_model.safetensors")
    b_keys = [k for k in lora if "lora_B" in k]
    assert b_keys and all("lora_" in k for k in lora)
    # LoRA B starts at zero: training moved it
    assert max(lora[k].abs().max().item() for k in b_keys) > 1e-4
    # the base checkpoint on disk is untouched ...
    after = _state(tiny_model_dir / "model.safetensors")
    assert all(torch.equal(base_before[k], after[k]) for k in base_before)
    # ... and so are the base layers under the loaded adapter
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), str(out))
    for name, p in model.named_parameters():
        if "base_layer" in name and name.endswith("q_proj.base_layer.weight") and ".0." in name:
            key = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(p.detach(), base_before[key])
            break
    else:
        pytest.fail("no base layer found under the adapter")
    # loss curve, plot and stage marker
    m = json.loads((out.parent / "metrics.json").read_text())
    assert [r["step"] for r in m["log_history"] if "loss" in r] == [1, 2, 3]
    assert m["global_step"] == 3 and m["seconds_per_step"] > 0 and m["data"]["n_examples"] == 8
    assert (out.parent / "loss.png").stat().st_size > 1000
    assert (out.parent / ".done.json").exists()
    # same config: skipped (no retraining); another config: refused unless overwrite
    mtime = (out / "adapter_model.safetensors").stat().st_mtime_ns
    assert run_sft(cfg) == out
    assert (out / "adapter_model.safetensors").stat().st_mtime_ns == mtime
    # n_eval only picks evaluation questions: another n_eval resumes too, and so does a run made before
    # the fingerprint left n_eval out (its marker holds the legacy fingerprint)
    from cowest.rundir import mark_done
    from cowest.sft.train import sft_fingerprint

    assert run_sft(_cfg(tmp_path, tiny_model_dir, "task.n_eval=5")) == out
    old = _cfg(tmp_path, tiny_model_dir, "task.n_eval=7")
    assert sft_fingerprint(old, legacy=True) != sft_fingerprint(old) == sft_fingerprint(cfg)
    mark_done(out.parent, sft_fingerprint(old, legacy=True))
    assert run_sft(old) == out
    assert (out / "adapter_model.safetensors").stat().st_mtime_ns == mtime
    with pytest.raises(ConfigError, match="different config"):  # the legacy one holds only for its own n_eval
        run_sft(_cfg(tmp_path, tiny_model_dir, "task.n_eval=8"))
    with pytest.raises(ConfigError, match="different config"):
        run_sft(_cfg(tmp_path, tiny_model_dir, "sft.max_steps=2"))


def test_full_finetune_writes_a_full_model(tmp_path, tiny_model_dir):
    import torch

    from cowest.sft.train import run_sft
    from cowest.training import is_full_model_dir

    cfg = _cfg(tmp_path, tiny_model_dir, "sft.lora=false", "sft.max_steps=2", "sft.learning_rate=0.001")
    out = run_sft(cfg)
    assert is_full_model_dir(out) and not (out / "adapter_config.json").exists()
    before, after = _state(tiny_model_dir / "model.safetensors"), _state(out / "model.safetensors")
    changed = [k for k in before if k in after and not torch.equal(before[k], after[k])]
    assert changed  # every weight is trainable in full fine-tuning


@pytest.mark.parametrize("override,match", [
    ("sft.bf16=true", "sft.bf16=true on CPU needs bf16 instructions"),
    ("sft.fp16=true", "CUDA"),
    ("sft.load_in_4bit=true", "QLoRA"),
])
def test_precision_the_hardware_lacks_is_a_config_error(tmp_path, tiny_model_dir, override, match, monkeypatch):
    import torch

    from cowest.models import cpu
    from cowest.sft.train import run_sft

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.setattr(cpu, "cpu_has_native_bf16", lambda: False)  # a CPU without bf16 (this one may have it)
    with pytest.raises(ConfigError, match=match):
        run_sft(_cfg(tmp_path, tiny_model_dir, override))


def test_a_killed_sft_resumes_from_its_last_checkpoint(tmp_path, tiny_model_dir, monkeypatch):
    from support.trainer_faults import count_steps, kill_before_step

    from cowest.rundir import RunDir
    from cowest.sft.train import run_sft

    cfg = _cfg(tmp_path, tiny_model_dir, "sft.max_steps=4")
    kill_before_step(monkeypatch, 4)
    with pytest.raises(RuntimeError, match="killed"):
        run_sft(cfg)
    steps = count_steps(monkeypatch)
    out = run_sft(cfg)
    assert steps == [4] and (out / "adapter_model.safetensors").exists()
    metrics = json.loads((RunDir(cfg).sft / "metrics.json").read_text())
    assert metrics["resumed_from"] == "checkpoint-3" and metrics["global_step"] == 4
    # another config refuses a half-done stage's checkpoint instead of resuming it
    (RunDir(cfg).sft / ".done.json").unlink()
    (RunDir(cfg).sft / "trainer" / "checkpoint-3").mkdir(parents=True)
    (RunDir(cfg).sft / "trainer" / "checkpoint-3" / "trainer_state.json").write_text("{}")
    with pytest.raises(ConfigError, match="different config"):
        run_sft(_cfg(tmp_path, tiny_model_dir, "sft.max_steps=4", "sft.learning_rate=0.02"))
