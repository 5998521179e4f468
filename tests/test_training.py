"""Helpers SFT and DPO share: precision checks, the full-model marker, logs, trainer arguments, checkpoints."""

import json

import pytest

from cowest.config import load_config
from cowest.errors import ConfigError
from cowest.training import (is_full_model_dir, plot_curves, precision_kwargs, seconds_per_step, trainer_kwargs,
                             write_full_marker)


def test_precision_refuses_both_and_missing_hardware():
    import torch

    with pytest.raises(ConfigError, match="both true"):
        precision_kwargs(bf16=True, fp16=True)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="align.fp16=true needs a CUDA GPU"):
            precision_kwargs(bf16=False, fp16=True, section="align")
        assert precision_kwargs(bf16=False, fp16=False) == {"bf16": False, "fp16": False, "use_cpu": True}


@pytest.mark.parametrize("native", [True, False])
def test_bf16_auto_follows_the_cpu(monkeypatch, native):
    # Both CPUs this project runs on have native bf16 (Zen 4, Sapphire Rapids); a Broadwell does not.
    import torch

    from cowest.models import cpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(cpu, "cpu_has_native_bf16", lambda flags=None: native)
    assert precision_kwargs(bf16="auto", fp16=False)["bf16"] is native
    if native:
        assert precision_kwargs(bf16=True, fp16=False)["bf16"] is True
    else:
        with pytest.raises(ConfigError, match="sft.bf16=true on CPU needs bf16 instructions"):
            precision_kwargs(bf16=True, fp16=False)
    assert precision_kwargs(bf16=False, fp16=False)["bf16"] is False


def test_bf16_auto_steps_aside_for_an_explicit_fp16(monkeypatch):
    from cowest.training import resolve_bf16

    assert resolve_bf16("auto", fp16=True) is False


def test_full_model_marker(tmp_path):
    assert not is_full_model_dir(tmp_path)
    write_full_marker(tmp_path, base="m")
    assert is_full_model_dir(tmp_path)


def test_seconds_per_step_and_an_empty_plot(tmp_path):
    hist = [{"loss": 1.0, "step": 1}, {"train_runtime": 12.0, "step": 4}]
    assert seconds_per_step(hist, 4) == 3.0 and seconds_per_step(hist, 0) is None
    assert plot_curves(tmp_path / "p.png", [], ["loss"], "t") is False and not (tmp_path / "p.png").exists()
    assert plot_curves(tmp_path / "p.png", hist, ["loss"], "t") and (tmp_path / "p.png").stat().st_size > 1000


def test_trainer_kwargs_from_a_stage_section(tmp_path):
    cfg = load_config(None, ["align.max_steps=3", "align.seed=7"])
    kw = trainer_kwargs(cfg.align, output_dir=tmp_path, prec={"bf16": False, "fp16": False, "use_cpu": True})
    assert kw["max_steps"] == 3 and kw["seed"] == kw["data_seed"] == 7
    assert kw["save_strategy"] == "steps" and 0 < kw["save_steps"] < 1 and kw["save_total_limit"] == 1
    assert kw["output_dir"] == str(tmp_path) and kw["use_cpu"] is True


def test_bf16_weights_only_under_a_frozen_base():
    import torch

    from cowest.training import train_dtype

    cfg = load_config(None, [])
    assert train_dtype(cfg, True) is torch.bfloat16  # LoRA: the base never updates
    assert train_dtype(cfg, True, frozen_base=False) is torch.float32  # full fine-tune: fp32 master weights
    assert train_dtype(cfg, False) is torch.float32
    assert train_dtype(load_config(None, ["weak.dtype=bfloat16"]), False, frozen_base=False) is torch.bfloat16


def test_report_to_is_validated_passed_through_and_not_fingerprinted(tmp_path, monkeypatch):
    import importlib.util

    from cowest.rundir import fingerprint
    from cowest.training import check_report_to

    prec = {"bf16": False, "fp16": False, "use_cpu": True}
    assert trainer_kwargs(load_config(None, []).sft, output_dir=tmp_path, prec=prec)["report_to"] == "none"
    cfg = load_config(None, ["sft.report_to=[tensorboard,wandb]", "align.report_to=trackio"])
    assert trainer_kwargs(cfg.sft, output_dir=tmp_path, prec=prec)["report_to"] == ["tensorboard", "wandb"]
    assert trainer_kwargs(cfg.align, output_dir=tmp_path, prec=prec)["report_to"] == "trackio"
    with pytest.raises(ConfigError, match=r"sft.report_to: 'mlflow' is not one of: none, tensorboard, wandb, trackio"):
        load_config(None, ["sft.report_to=mlflow"])
    with pytest.raises(ConfigError, match="align.report_to: none cannot be combined with wandb"):
        load_config(None, ["align.report_to=[none,wandb]"])
    # where logs go is not part of a stage's result: a finished stage is not redone for it
    assert fingerprint(cfg.sft) == fingerprint(load_config(None, []).sft)
    assert fingerprint(cfg.sft) != fingerprint(load_config(None, ["sft.seed=1"]).sft)
    # a missing integration is a one-line error before any model loads
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"^align.report_to=wandb needs the wandb package: pip install wandb"):
        check_report_to(["wandb"], "align")
    check_report_to("none", "align")


def test_tensorboard_event_files_survive_the_trainer_dir(tmp_path):
    from cowest.training import drop_trainer_dir

    (tmp_path / "trainer" / "runs" / "x").mkdir(parents=True)
    (tmp_path / "trainer" / "runs" / "x" / "events.out").write_text("e")
    (tmp_path / "trainer" / "args.json").write_text("{}")
    drop_trainer_dir(tmp_path)
    assert not (tmp_path / "trainer").exists() and (tmp_path / "tensorboard" / "x" / "events.out").read_text() == "e"
    drop_trainer_dir(tmp_path)  # nothing to keep: the earlier logs stay
    assert (tmp_path / "tensorboard" / "x" / "events.out").exists()


def test_held_out_curves_share_the_training_panel(tmp_path, monkeypatch):
    import matplotlib.axes

    drawn = []
    real = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda ax, xs, ys, **kw: drawn.append((ax.get_title(), kw.get(
        "label"), list(xs))) or real(ax, xs, ys, **kw))
    hist = [{"loss": 1.0, "step": 1}, {"loss": 0.5, "step": 2}, {"eval_loss": 0.9, "step": 2}, {"grad_norm": 1, "step": 2}]
    assert plot_curves(tmp_path / "p.png", hist, ["loss", "rewards/margins"], "t")
    assert [(label, xs) for _, label, xs in drawn] == [("train", [1, 2]), ("held-out", [2])]


def test_last_checkpoint_passes_over_one_cut_off_mid_save(tmp_path):
    from cowest.training import last_checkpoint

    assert last_checkpoint(tmp_path / "missing") is None
    for step, complete in ((5, True), (10, True), (15, False)):  # killed while saving checkpoint-15
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text('{"global_step": %d}' % step)
    (tmp_path / "checkpoint-old").mkdir()
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    # killed while writing trainer_state.json itself: the file exists but is cut off (or still empty)
    for step, text in ((20, '{"global_step": 20, "log_hi'), (25, "")):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(text)
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")


def test_checkpoints_of_another_config_are_refused_then_dropped_with_overwrite(tmp_path):
    from cowest.training import claim_checkpoints

    stage = tmp_path / "align" / "round1"
    (stage / "trainer" / "checkpoint-3").mkdir(parents=True)
    (stage / "trainer" / "checkpoint-3" / "trainer_state.json").write_text("{}")
    claim_checkpoints(stage, "fp-a", overwrite=False, name="align round 1")  # unclaimed: this config's now
    claim_checkpoints(stage, "fp-a", overwrite=False, name="align round 1")
    assert (stage / "trainer" / "checkpoint-3").is_dir()
    with pytest.raises(ConfigError, match="align round 1 .* different config .*--overwrite"):
        claim_checkpoints(stage, "fp-b", overwrite=False, name="align round 1")
    assert (stage / "trainer" / "checkpoint-3").is_dir()
    claim_checkpoints(stage, "fp-b", overwrite=True, name="align round 1")
    assert not (stage / "trainer").exists()
    assert json.loads((stage / ".started.json").read_text())["fingerprint"] == "fp-b"
    claim_checkpoints(stage, "fp-c", overwrite=False, name="align round 1")  # no checkpoint: nothing to refuse
    assert json.loads((stage / ".started.json").read_text())["fingerprint"] == "fp-c"
