"""Folding SFT LoRA + DPO LoRA into one adapter is exact: same logits as merging them one after another."""

import pytest


def _adapter(base_dir, out, seed, r, alpha, targets, rslora=False, start=None):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = start if start is not None else AutoModelForCausalLM.from_pretrained(str(base_dir))
    peft = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, use_rslora=rslora))
    g = torch.Generator().manual_seed(seed)
    for name, p in peft.named_parameters():
        if "lora_B" in name:  # B starts at zero; give it values so the adapter does something
            p.data = torch.randn(p.shape, generator=g) * 0.05
    peft.save_pretrained(str(out))
    return out


def _logits(model, ids):
    import torch

    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("t1,t2,rslora", [
    (["q_proj", "v_proj"], ["q_proj", "v_proj"], False),
    (["q_proj", "v_proj", "down_proj"], ["q_proj", "o_proj"], True),  # partly different modules
])
def test_folded_adapter_equals_stacked_merge(tmp_path, tiny_model_dir, t1, t2, rslora):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from cowest.align.combine import combinable, combine_lora

    first = _adapter(tiny_model_dir, tmp_path / "sft", 1, 4, 8, t1)
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), str(first)).merge_and_unload()
    second = _adapter(tiny_model_dir, tmp_path / "dpo", 2, 2, 16, t2, rslora=rslora, start=merged)
    assert combinable(first, second)
    out = combine_lora(first, second, tmp_path / "folded")

    ids = torch.tensor([[1, 5, 9, 200, 17, 33, 2]])
    stacked = PeftModel.from_pretrained(
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), str(first)).merge_and_unload(),
        str(second),
    )
    folded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), str(out))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    want, got = _logits(stacked, ids), _logits(folded, ids)
    assert torch.allclose(want, got, atol=1e-5)
    assert not torch.allclose(want, _logits(base, ids), atol=1e-3)  # the adapters do change the model


def test_not_combinable_without_plain_lora(tmp_path, tiny_model_dir):
    import json

    from cowest.align.combine import combinable

    a = _adapter(tiny_model_dir, tmp_path / "a", 1, 4, 8, ["q_proj"])
    assert combinable(a)
    cfg = json.loads((a / "adapter_config.json").read_text())
    cfg["use_dora"] = True
    (a / "adapter_config.json").write_text(json.dumps(cfg))
    assert not combinable(a)
    assert not combinable(tmp_path / "missing")
