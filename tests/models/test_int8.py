"""int8 linears (strong.local.dtype=int8): close to the float product, exactly the same for a row alone or in any
batch, every linear of a real (tiny) model converted, and a clear error where they cannot run."""

from __future__ import annotations

import pytest

from cowest.errors import ModelError
from cowest.models import int8


def _linear(in_f, out_f, bias, seed=0):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Linear(in_f, out_f, bias=bias)


@pytest.mark.parametrize("bias", [False, True])
def test_int8_linear_is_close_to_the_float_product(bias):
    import torch

    lin = _linear(256, 96, bias)
    q = int8._int8_linear_class()(lin)
    x = torch.randn(3, 5, 256)
    with torch.inference_mode():
        ref, got = lin(x), q(x)
    assert got.shape == ref.shape == (3, 5, 96) and got.dtype == x.dtype
    rel = (got - ref).norm() / ref.norm()
    assert rel < 0.02, rel  # 8 bits a side: ~0.5% here; a wrong scale or layout is off by 100%


def test_int8_linear_gives_a_row_the_same_output_alone_and_in_any_batch():
    # The reason for int8 in the batch engine: bf16 products change with the batch's shape, integer ones cannot.
    import torch

    lin = _linear(512, 384, True, seed=1).to(torch.bfloat16)
    q = int8._int8_linear_class()(lin)
    x = torch.randn(33, 512, dtype=torch.bfloat16)
    x[7] *= 50  # a row with large values must not change the scale of the others
    with torch.inference_mode():
        batch = q(x)
        alone = torch.cat([q(x[i:i + 1]) for i in range(33)])
        halves = torch.cat([q(x[:16]), q(x[16:])])
    assert torch.equal(batch, alone) and torch.equal(batch, halves)
    assert q(x[:0]).shape == (0, 384)


def test_quantize_linears_converts_a_real_model_and_keeps_its_next_tokens(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    n_linear = sum(type(m) is torch.nn.Linear for m in model.modules())
    torch.manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (4, 24))
    with torch.inference_mode():
        n = int8.quantize_linears(model)
        assert n == n_linear and not any(type(m) is torch.nn.Linear for m in model.modules())
        got, ref = model(input_ids=ids).logits.float(), plain(input_ids=ids).logits.float()
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.9
    assert (got - ref).norm() / ref.norm() < 0.05


def test_quantize_linears_refuses_a_model_off_the_cpu():
    import torch

    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    with pytest.raises(ModelError, match="runs on CPUs only"):
        int8.quantize_linears(model)


def test_quantize_linears_names_a_torch_without_integer_products(monkeypatch):
    import torch

    monkeypatch.delattr(torch, "_int_mm")
    with pytest.raises(ModelError, match=r"needs torch._int_mm \(torch >= 2.2\)"):
        int8.quantize_linears(torch.nn.Sequential(torch.nn.Linear(8, 8)))
