"""A real aligned round for eval tests: a LoRA with non-zero weights saved by the align stage's own writer."""

from __future__ import annotations

from cowest.rundir import RunDir


def aligned_adapter(cfg, tiny_model_dir):
    """A LoRA with non-zero weights, saved as align round 1 by the stage's own writer (save_aligned)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cowest.align.dpo import save_aligned

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    lora = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                      task_type="CAUSAL_LM")
    dpo_dir = RunDir(cfg).align(1) / "dpo_adapter"
    get_peft_model(base, lora).save_pretrained(str(dpo_dir))
    save_aligned(cfg, 1, {"base": "weak", "merge": []}, dpo_dir, AutoTokenizer.from_pretrained(str(tiny_model_dir)))
