"""Attention computed request by request inside the continuous batching manager's packed step.

transformers' continuous batching packs the queries of every request in a step into one row and gives SDPA one
long key row with a block mask. Two costs: SDPA computes every query against every key of the step, masked or not
(a 512-token prompt chunk sharing a step with 18 decoding requests: 512 x ~3,500 products where the chunk needs
512 x ~200; on the feedback workload that attention took 20.7 s of 106, per request 8.9 s: bench/RESULTS.md), and
how the kernel tiles those keys, and so the rounding of each request's softmax, depends on which other requests
share the step. Here each request's queries attend to its own keys in their own SDPA call (causal over its past),
so its result depends on that request alone. With int8 linear layers (:mod:`cowest.models.int8`) a request
prefilled whole then gets the same greedy answer alone or in any batch (tests/models/test_local_server.py). Not
every time at scale: how a long prompt is split into prefill chunks, and which of its pages are shared with an
earlier request, still depend on arrival and change the kernels' shapes
(bench/RESULTS.md: 25-30 of 32 chain-of-thought answers repeated run to run). The cost is one small SDPA call per
request and layer; grouped-query heads are broadcast by SDPA itself where torch has ``enable_gqa`` (2.5+: the
same bits as repeating the key heads, without the copies).

    use_per_request_attention()   # in the batch server's process (every dtype): "sdpa" for the packed steps only

Calls without the packed step's ``cu_seq_lens_q``/``cu_seq_lens_k`` (the static decode loop's padded batches) go
to transformers' own SDPA function unchanged.
"""

from __future__ import annotations

import functools
from typing import Any

_INSTALLED: list[Any] = []


def use_per_request_attention() -> None:
    """Register the per-request function under transformers' "sdpa" name, once per process."""
    if _INSTALLED:
        return
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    _INSTALLED.append(sdpa_attention_forward)
    AttentionInterface.register("sdpa", per_request_sdpa)


def per_request_sdpa(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                     scaling: float | None = None, **kwargs: Any) -> tuple[Any, None]:
    import torch

    cu_q, cu_k = kwargs.get("cu_seq_lens_q"), kwargs.get("cu_seq_lens_k")
    if cu_q is None or cu_k is None or query.shape[0] != 1:
        return _INSTALLED[0](module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    # query (1, heads, total queries, dim); key, value (1, kv heads, total keys, dim)
    qs, ks = cu_q.tolist(), cu_k.tolist()
    groups = query.shape[1] // key.shape[1]
    gqa = {"enable_gqa": True} if groups > 1 and _sdpa_broadcasts_heads() else {}
    out = torch.zeros(1, query.shape[2], query.shape[1], value.shape[-1], dtype=query.dtype, device=query.device)
    for i in range(len(qs) - 1):
        q0, q1, k0, k1 = qs[i], qs[i + 1], ks[i], ks[i + 1]
        if q1 == q0:
            continue
        q, k, v = query[:, :, q0:q1], key[:, :, k0:k1], value[:, :, k0:k1]
        n_q, n_k = q1 - q0, k1 - k0
        if groups > 1 and not gqa:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        mask = None
        if n_q > 1:  # query j sits at position n_k - n_q + j and sees the keys up to it
            pos = torch.arange(n_k - n_q, n_k, device=query.device)
            mask = torch.arange(n_k, device=query.device)[None, :] <= pos[:, None]
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling, **gqa)
        out[0, q0:q1] = o[0].transpose(0, 1)
    return out, None


@functools.lru_cache(maxsize=1)
def _sdpa_broadcasts_heads() -> bool:
    """Whether this torch's SDPA takes ``enable_gqa`` (2.5+)."""
    import torch
    from packaging.version import Version

    return Version(torch.__version__.split("+")[0]) >= Version("2.5")
