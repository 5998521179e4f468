"""Packed linears on a tiny random Llama mapped from its safetensors file: same logits, file pages dropped."""

from __future__ import annotations

import pytest

from cowest.models import packed


def test_packing_a_mapped_model_keeps_its_logits_and_drops_its_file_pages(tiny_model_dir, tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    if not packed.can_pack(plain.model.layers[0].mlp.up_proj.weight):
        pytest.skip("no oneDNN bf16 packing on this torch build or CPU (needs AVX-512 or AVX-NE-CONVERT)")
    plain.save_pretrained(tmp_path)  # bf16 on disk: loading maps the weights from the file, no conversion
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    files = packed.file_mappings()
    mapped = [m for m in model.modules() if type(m) is torch.nn.Linear and m is not model.lm_head
              and any(lo <= m.weight.data_ptr() < hi for lo, hi in files)]
    dropped = []
    real = packed.drop_file_pages
    monkeypatch.setattr(packed, "drop_file_pages", lambda w, f: (dropped.append(w.data_ptr()), real(w, f)))
    with torch.inference_mode():
        n = packed.pack_linears(model, rows=4)
        ids = torch.tensor([[5, 9, 17, 33, 2, 8]])
        assert torch.equal(model(input_ids=ids).logits, plain(input_ids=ids).logits)
    assert n == 14 and len(dropped) == 14  # 2 layers x 7 linears, each weight's pages offered back
    assert len(mapped) == 14 and all(m.weight.data_ptr() in dropped for m in mapped)


def test_a_cpu_without_onednn_bf16_keeps_the_plain_linears(tiny_model_dir, monkeypatch):
    """On an AVX2-only CPU oneDNN's bf16 reorder raises; packing must be skipped there, not crash the server."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    monkeypatch.setattr(packed, "_onednn_bf16_cpu", lambda: False)
    assert not packed.can_pack(model.model.layers[0].mlp.up_proj.weight)
    with torch.inference_mode():
        assert packed.pack_linears(model, rows=4) == 0
        assert model(input_ids=torch.tensor([[5, 9, 17]])).logits.shape[-1] == model.config.vocab_size
    assert sum(type(m) is torch.nn.Linear for m in model.modules()) >= 14
