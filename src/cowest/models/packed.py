"""Linear layers whose weights are packed once for oneDNN: fast CPU bf16 inference at small batch sizes.

torch's CPU bf16 ``F.linear`` passes oneDNN the plain (out, in) weight, and oneDNN reorders it into its blocked
layout on every call. For a decode step of a few rows the reorder costs more than the product itself: on
Qwen2.5-1.5B (2 cores, AMD Zen 4) a decode step took 732 ms at batch 1 and 1,358 ms at batch 16 plain, 148 ms
and 301 ms packed (bench/RESULTS.md). Packing once at load removes the reorder; the products are the same
oneDNN kernels, so the outputs are the same. Inference only: a packed layer has no gradient.

    n = pack_linears(model)   # 0 where packing does not apply (not CPU, not bf16, or torch lacks the ops)
"""

from __future__ import annotations

from typing import Any


def can_pack(weight: Any) -> bool:
    import torch

    return (weight.device.type == "cpu" and weight.dtype == torch.bfloat16 and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight") and hasattr(torch.ops.mkldnn, "_linear_pointwise")
            and _onednn_bf16_cpu())


def _onednn_bf16_cpu() -> bool:
    """Whether oneDNN's bf16 linear runs on this CPU: it needs AVX-512 (bw, vl, dq) or AVX-NE-CONVERT, so on an
    AVX2-only CPU (AMD Zen 3, for one) the reorder raises instead and the plain linears stay."""
    import torch

    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else False


def _packed_linear_class() -> Any:
    import torch

    class PackedLinear(torch.nn.Module):
        """``nn.Linear`` for inference with its weight in oneDNN's blocked layout (packed for ``rows``)."""

        def __init__(self, linear: torch.nn.Linear, rows: int):
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            weight = linear.weight.detach()
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, rows)
            self.bias = None if linear.bias is None else linear.bias.detach()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, packed for oneDNN"

    return PackedLinear


def pack_linears(model: Any, *, rows: int = 16, include_head: bool = False) -> int:
    """Replace the model's ``nn.Linear`` layers by packed ones; returns how many. The output layer is left alone
    unless ``include_head`` (it is often tied to the input embedding, and a packed copy would double it).

    Weights that transformers mapped from a safetensors file stay mapped while any tensor of the file lives, and the
    file pages read for packing would stay in the RSS beside the packed copies (Qwen2.5-1.5B: 6.0 GB instead of
    3.1): each packed weight's pages are dropped from this process (``MADV_DONTNEED``; the file is untouched, and
    a later read maps them again)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    cls = _packed_linear_class()

    def pack(linear: Any) -> Any:
        return cls(linear, rows) if can_pack(linear.weight) else None

    return replace_linears(model, pack, skip=() if include_head else (head,))


def replace_linears(model: Any, convert: Any, *, skip: tuple = ()) -> int:
    """Replace each ``nn.Linear`` of ``model`` (but those in ``skip``) by ``convert(linear)``, dropping the replaced
    weight's file pages (:func:`drop_file_pages`); stops at the first layer ``convert`` returns None for. Returns how
    many were replaced. Shared by the packed and the int8 (:mod:`cowest.models.int8`) linears."""
    import torch

    files = file_mappings()
    n = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is not torch.nn.Linear or any(child is s for s in skip):
                continue
            new = convert(child)
            if new is None:
                return n
            setattr(module, name, new)
            drop_file_pages(child.weight, files)
            n += 1
    return n


def file_mappings() -> list[tuple[int, int]]:
    """(start, end) of this process's private mappings of files (Linux; else none). safetensors maps its files
    copy-on-write (``rw-p``); weights are never written, so their pages are the file's."""
    out = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and parts[5].startswith("/") and parts[1].endswith("p"):
                    lo, hi = parts[0].split("-")
                    out.append((int(lo, 16), int(hi, 16)))
    except OSError:
        pass
    return out


def drop_file_pages(weight: Any, files: list[tuple[int, int]]) -> None:
    """Drop the whole pages of ``weight``'s data from this process if they lie in a file mapping (the weight is
    replaced; a read of it, e.g. through a tied module, maps the file's pages again)."""
    import ctypes
    import mmap

    start = weight.data_ptr()
    end = start + weight.numel() * weight.element_size()
    if not any(lo <= start and end <= hi for lo, hi in files):
        return  # anonymous memory: freed with the tensor, and DONTNEED there would zero it
    page = mmap.PAGESIZE
    lo, hi = -(-start // page) * page, end // page * page
    if hi > lo:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), 4)  # 4 = MADV_DONTNEED
