"""transformers' Hub kernels stay off in cowest's loads unless USE_HUB_KERNELS is set: on a GPU, transformers 5 fetched
kernel code from the Hub at ``model.train()`` and SFT failed offline (bench/RESULTS.md, "The CUDA paths on a GPU")."""

from __future__ import annotations

import pytest

from cowest.config import WeakConfig
from cowest.models.hub_kernels import hub_kernels_kwargs
from cowest.models.weak import WeakModel
from cowest.training import load_causal_lm
from support.tiny import TEST_DEVICE

transformers = pytest.importorskip("transformers")
V5 = int(transformers.__version__.split(".")[0]) >= 5


def test_the_kwargs_follow_the_environment_and_the_transformers_version(monkeypatch):
    monkeypatch.delenv("USE_HUB_KERNELS", raising=False)
    assert hub_kernels_kwargs() == ({"use_kernels": False} if V5 else {})
    monkeypatch.setenv("USE_HUB_KERNELS", "YES")  # the user asked: transformers decides
    assert hub_kernels_kwargs() == {}


@pytest.mark.skipif(not V5, reason="transformers < 5 has no Hub kernels on by default")
def test_the_weak_model_and_the_trainable_model_load_without_hub_kernels(tiny_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.delenv("USE_HUB_KERNELS", raising=False)
    # the trigger: a plain load turns them on, and model.train() would kernelize (on a GPU, from the Hub)
    assert AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).use_kernels
    wm = WeakModel.load(WeakConfig(model=str(tiny_model_dir), device=TEST_DEVICE, dtype="float32"))
    trainable = load_causal_lm(str(tiny_model_dir))
    assert not wm.model.use_kernels and not trainable.use_kernels
    trainable.train()  # no kernelization, so nothing is fetched
    assert not trainable.use_kernels
