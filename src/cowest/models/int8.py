"""Linear layers with int8 weights and int8 activations, for the batch engine on CPUs (``strong.local.dtype=int8``).

Each weight row (output channel) is scaled to int8 once at load, each input row (token) when it arrives; the
product is an integer one (``torch._int_mm``: oneDNN, with AMX or VNNI int8 where the CPU has them), scaled back
to the input's dtype. Why:

- memory: 1 byte a weight instead of 2 (Qwen2.5-1.5B's linear layers: 1.5 GB instead of 3.1);
- repeatability: a row's output depends on that row alone (integer sums are exact in any order, and each row has
  its own scale), whatever shares its step. bf16 products do not: oneDNN's blocking follows the batch's shape, and
  the batch engine's bf16 answers differed run to run (bench/RESULTS.md). The batch server pairs this with
  attention per request (:mod:`cowest.models.per_request_attention`).

Quality: llama.cpp too multiplies its 4-bit weights by 8-bit activations, per block of 32 there, per row here,
which is coarser: on MedMCQA prompts the int8 engine agreed with llama.cpp less often than the bf16 one (50-52 of 64
answers against 57; bench/RESULTS.md, "int8 linears"). Inference only: no gradient.

    n = quantize_linears(model)   # every nn.Linear, the output layer included (tied: a separate int8 copy)
"""

from __future__ import annotations

from typing import Any

from cowest.errors import ModelError
from cowest.models.packed import replace_linears

CHUNK_ROWS = 4096  # weight rows converted at a time: bounds the fp32 temporary (the 1.5B's head: 24 MB, not 0.9 GB)


def _int8_linear_class() -> Any:
    import torch

    class Int8Linear(torch.nn.Module):
        """``nn.Linear`` for inference with int8 weights (one scale per output row) and int8 activations (one
        scale per input row)."""

        def __init__(self, linear: torch.nn.Linear):
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            weight = linear.weight.detach()
            q = torch.empty(weight.shape, dtype=torch.int8)
            scale = torch.empty(weight.shape[0], dtype=torch.float32)
            for lo in range(0, weight.shape[0], CHUNK_ROWS):
                w = weight[lo:lo + CHUNK_ROWS].to(torch.float32, copy=True)  # a copy: fp32 weights stay untouched
                s = w.abs().amax(1).clamp_(min=1e-12).div_(127)
                q[lo:lo + CHUNK_ROWS] = w.div_(s[:, None]).round_().to(torch.int8)
                scale[lo:lo + CHUNK_ROWS] = s
            self.weight_t = q.t()  # (in, out) view of the (out, in) rows: the layout _int_mm reads fastest
            self.weight_scale = scale
            self.bias = None if linear.bias is None else linear.bias.detach().float()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            rows = x.reshape(-1, self.in_features)
            if rows.shape[0] == 0:
                return x.new_empty(*x.shape[:-1], self.out_features)
            s = rows.abs().amax(1, keepdim=True).float().clamp_(min=1e-12).div_(127)
            q = (rows / s).round_().to(torch.int8)
            y = (torch._int_mm(q, self.weight_t) * s).mul_(self.weight_scale)
            if self.bias is not None:
                y.add_(self.bias)
            return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights and activations"

    return Int8Linear


def quantize_linears(model: Any) -> int:
    """Replace every ``nn.Linear`` of a CPU model by an :class:`Int8Linear`; returns how many. The bf16/fp32 weight's
    file pages are dropped from this process as each layer is converted (``packed.replace_linears``), so the peak
    stays near the int8 model plus one layer; a tied input embedding stays mapped and pages in only the rows read."""
    import torch

    if not hasattr(torch, "_int_mm"):
        raise ModelError(f"strong.local.dtype=int8 needs torch._int_mm (torch >= 2.2); this is torch "
                         f"{torch.__version__}")
    cls = _int8_linear_class()

    def quantize(linear: Any) -> Any:
        if linear.weight.device.type != "cpu":
            raise ModelError("strong.local.dtype=int8 runs on CPUs only (on a GPU, use vLLM: strong.local.engine)")
        return cls(linear)

    return replace_linears(model, quantize)
