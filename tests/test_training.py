"""Helpers SFT and DPO share: precision checks, the full-model marker, logs and trainer arguments."""

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
    assert kw["max_steps"] == 3 and kw["seed"] == kw["data_seed"] == 7 and kw["save_strategy"] == "no"
    assert kw["output_dir"] == str(tmp_path) and kw["use_cpu"] is True
