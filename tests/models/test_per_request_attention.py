"""Attention per request in a packed continuous-batching step: each request's output is what it gets alone, bit for
bit, and it is causal attention over that request's own keys."""

from __future__ import annotations

import math

from cowest.models import per_request_attention as pra


def _packed(seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    # three requests in one step: a decode step (1 query, 9 past keys), a whole prompt (5 queries, 5 keys) and a
    # later prompt chunk (3 queries after 5 cached keys); 4 query heads over 2 KV heads
    lens = [(1, 10), (5, 5), (3, 8)]
    cu_q = torch.tensor([0, 1, 6, 9], dtype=torch.int32)
    cu_k = torch.tensor([0, 10, 15, 23], dtype=torch.int32)
    q = torch.randn(1, 4, 9, 16, generator=g, dtype=torch.bfloat16)
    k = torch.randn(1, 2, 23, 16, generator=g, dtype=torch.bfloat16)
    v = torch.randn(1, 2, 23, 16, generator=g, dtype=torch.bfloat16)
    return lens, cu_q, cu_k, q, k, v


def test_each_request_gets_what_it_gets_alone_bit_for_bit():
    import torch

    lens, cu_q, cu_k, q, k, v = _packed()
    packed, _ = pra.per_request_sdpa(None, q, k, v, None, scaling=0.25, cu_seq_lens_q=cu_q, cu_seq_lens_k=cu_k)
    assert packed.shape == (1, 9, 4, 16)
    for i in range(3):
        q0, q1, k0, k1 = int(cu_q[i]), int(cu_q[i + 1]), int(cu_k[i]), int(cu_k[i + 1])
        alone, _ = pra.per_request_sdpa(None, q[:, :, q0:q1], k[:, :, k0:k1], v[:, :, k0:k1], None, scaling=0.25,
                                        cu_seq_lens_q=torch.tensor([0, q1 - q0]),
                                        cu_seq_lens_k=torch.tensor([0, k1 - k0]))
        assert torch.equal(packed[:, q0:q1], alone)


def test_it_is_causal_attention_over_the_requests_own_keys():
    import torch

    lens, cu_q, cu_k, q, k, v = _packed(1)
    got, _ = pra.per_request_sdpa(None, q, k, v, None, scaling=0.25, cu_seq_lens_q=cu_q, cu_seq_lens_k=cu_k)
    qf, kf, vf = (t.float()[0] for t in (q, k, v))
    for i, (n_q, n_k) in enumerate(lens):
        q0, k0 = int(cu_q[i]), int(cu_k[i])
        for j in range(n_q):
            seen = n_k - n_q + j + 1  # its own position included
            for h in range(4):
                keys, vals = kf[h // 2, k0:k0 + seen], vf[h // 2, k0:k0 + seen]
                w = torch.softmax(keys @ qf[h, q0 + j] * 0.25, dim=0)
                ref = w @ vals
                assert torch.allclose(got[0, q0 + j, h].float(), ref, atol=3e-2), (i, j, h)
    assert not math.isnan(got.float().sum().item())


def test_calls_without_a_packed_step_go_to_transformers_own_sdpa(monkeypatch):
    import torch

    seen = []
    monkeypatch.setattr(pra, "_INSTALLED", [lambda *a, **kw: (seen.append(kw), ("theirs", None))[1]])
    q = torch.zeros(2, 4, 3, 16)
    assert pra.per_request_sdpa(None, q, q, q, None, scaling=0.5) == ("theirs", None)
    assert seen and seen[0]["scaling"] == 0.5


def test_sdpa_broadcasting_the_key_heads_gives_the_bits_of_repeating_them(monkeypatch):
    import pytest
    import torch

    if not pra._sdpa_broadcasts_heads():
        pytest.skip(f"torch {torch.__version__} has no enable_gqa")
    _, cu_q, cu_k, q, k, v = _packed(2)
    broadcast, _ = pra.per_request_sdpa(None, q, k, v, None, scaling=0.25, cu_seq_lens_q=cu_q, cu_seq_lens_k=cu_k)
    monkeypatch.setattr(pra, "_sdpa_broadcasts_heads", lambda: False)
    repeated, _ = pra.per_request_sdpa(None, q, k, v, None, scaling=0.25, cu_seq_lens_q=cu_q, cu_seq_lens_k=cu_k)
    assert torch.equal(broadcast, repeated)
