"""Decoding without ``model.generate``: the weak model's own sampling loop.

For K samples per prompt, generate() encodes every prompt K times; here each prompt's KV cache is computed
once and repeated. Rows that reached EOS leave the batch (their cache too) once they are an eighth of it
(``compact``), so neither the forward passes nor the per-step cache copies keep paying for them. Same
distribution as generate(): temperature, then nucleus (top-p) filtering. Also the lm_head hook that keeps a
frozen model's logits from copying the output embedding per row (:func:`dense_head_input`).

torch/transformers are imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

from typing import Any, Callable


def forward_names(model: Any) -> tuple[str, str | None] | None:
    """(cache kwarg, logits-to-keep kwarg) of the model's forward, or None: use model.generate."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        params = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        params = {}
    cache = next((k for k in ("cache", "past_key_values") if k in params), None)
    if cache and not getattr(base.config, "is_encoder_decoder", False):
        return cache, next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in params), None)
    return None


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """The token ids that end a sequence: the generation config's, else the tokenizer's (else pad)."""
    gc = getattr(model, "generation_config", None)
    eos = getattr(gc, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    return ids or [tokenizer.pad_token_id]


def decode(model: Any, input_ids: Any, mask: Any, *, names: tuple[str, str | None], eos: list[int], pad: int, n: int,
           temperature: float, top_p: float, max_new_tokens: int, generator: Any, compact: int = 8,
           prealloc: bool = True, on_step: Callable[[Any, int, Any, Any], None] | None = None) -> list[list[int]]:
    """Token ids of ``n`` continuations per left-padded row (prompt-major), pad after EOS. ``compact``: drop
    finished rows once they are >= 1/compact of the batch; ``prealloc``: room for the new tokens in the KV
    cache up front (no whole-cache copy per step); ``on_step(rows, t, tokens, logits)``: called with each step's
    original row indices, step, chosen tokens and float logits (token log-probs for an OpenAI-style server)."""
    import torch

    cache_kw, keep_kw = names
    device = input_ids.device
    eos_t = torch.tensor(eos, device=device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    extra = {keep_kw: 1} if keep_kw else {}
    with torch.inference_mode():
        out = model(input_ids=input_ids, attention_mask=mask, position_ids=pos, use_cache=True, **extra)
        cache = getattr(out, "cache", None)
        if cache is None:
            cache = out.past_key_values  # transformers 4.x names it so
        logits = out.logits[:, -1].float()
        del out
        next_pos = mask.sum(-1)
        if n > 1:
            cache.batch_repeat_interleave(n)
            logits, mask, next_pos = (x.repeat_interleave(n, 0) for x in (logits, mask, next_pos))
        if prealloc:
            _preallocate(cache, max_new_tokens)
        rows = logits.shape[0]
        tokens = torch.full((rows, max_new_tokens), pad, dtype=torch.long, device=device)
        alive = torch.arange(rows, device=device)  # original row of each row still in the batch
        done = torch.zeros(rows, dtype=torch.bool, device=device)
        for t in range(max_new_tokens):
            tok = _pick(logits, temperature, top_p, generator).masked_fill(done, pad)
            tokens[alive, t] = tok
            if on_step is not None:
                on_step(alive, t, tok, logits)
            done |= torch.isin(tok, eos_t)
            if t + 1 == max_new_tokens or bool(done.all()):
                break
            n_done = int(done.sum())
            if n_done and n_done * compact >= len(alive):
                idx = (~done).nonzero().squeeze(1)
                cache.batch_select_indices(idx)
                alive, tok, mask, next_pos, done = (x[idx] for x in (alive, tok, mask, next_pos, done))
            mask = torch.cat([mask, mask.new_ones((len(alive), 1))], dim=1)
            out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                    use_cache=True, **{cache_kw: cache})
            logits = out.logits[:, -1].float()
            del out
            next_pos = next_pos + 1
    return tokens.tolist()


def _pick(logits: Any, temperature: float, top_p: float, generator: Any) -> Any:
    """One token per row: argmax when ``temperature`` is 0, else a draw from softmax(logits / T) restricted to
    the nucleus (the smallest top set with mass >= ``top_p``, as transformers' TopPLogitsWarper).

    Cheaper than sort + multinomial over the whole vocabulary (for 64 rows x 49k tokens: ~250 ms + ~100 ms a
    step on 2 cores, more than the forward pass): the nucleus is looked for in the top 1024 tokens and only
    rows whose nucleus is larger are sorted in full; the draw is an inverse-CDF lookup on the cumulative sum."""
    import torch

    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p >= 1.0:
        return _draw(probs, None, probs.cumsum(-1), probs.shape[-1], generator)
    vals, idx = probs.topk(min(1024, probs.shape[-1]))  # sorted, largest first
    wide = vals.sum(-1) < top_p  # the nucleus reaches past the top 1024
    if bool(wide.any()):
        out = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
        narrow = ~wide
        if bool(narrow.any()):
            out[narrow] = _nucleus(vals[narrow], idx[narrow], top_p, generator)
        v, i = probs[wide].sort(dim=-1, descending=True)
        out[wide] = _nucleus(v, i, top_p, generator)
        return out
    return _nucleus(vals, idx, top_p, generator)


def _nucleus(vals: Any, idx: Any, top_p: float, generator: Any) -> Any:
    """Draw from sorted (descending) ``vals``: keep tokens whose mass before them is < top_p."""
    cum = vals.cumsum(-1)
    kept = ((cum - vals) < top_p).sum(-1)  # the kept tokens are a prefix; at least one
    return _draw(vals, idx, cum, kept, generator)


def _draw(vals: Any, idx: Any, cum: Any, kept: Any, generator: Any) -> Any:
    """Inverse CDF over the first ``kept`` entries of each row (``cum`` = cumulative sum of ``vals``)."""
    import torch

    rows = vals.shape[0]
    if isinstance(kept, int):
        kept = torch.full((rows,), kept, dtype=torch.long, device=vals.device)
    last = (kept - 1).clamp(min=0)[:, None]
    u = torch.rand((rows, 1), generator=generator, device=vals.device, dtype=cum.dtype) * cum.gather(1, last)
    j = torch.searchsorted(cum, u, right=True).clamp(max=last)  # first index with cum > u, within the kept prefix
    return (j if idx is None else idx.gather(1, j)).squeeze(1)


_ROOMY: Any = None


def _preallocate(cache: Any, extra: int) -> bool:
    """Give every layer of a transformers ``DynamicCache`` room for ``extra`` more tokens, so that decoding
    writes each step's keys/values in place instead of concatenating (copying the whole cache) every step.
    Only plain full-attention ``DynamicLayer`` layers are converted; otherwise the cache is left as it is."""
    global _ROOMY
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:  # transformers 4.x: no cache layers
        return False
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not DynamicLayer or not layer.is_initialized for layer in layers):
        return False
    if _ROOMY is None:

        class RoomyLayer(DynamicLayer):
            """A DynamicLayer whose keys/values are views into buffers with room to grow."""

            def make_room(self, extra: int) -> None:
                b, h, n, d = self.keys.shape
                self._kbuf = self.keys.new_empty((b, h, n + extra, d))
                self._vbuf = self.values.new_empty((b, h, n + extra, self.values.shape[-1]))
                self._kbuf[:, :, :n] = self.keys
                self._vbuf[:, :, :n] = self.values
                self.keys, self.values = self._kbuf[:, :, :n], self._vbuf[:, :, :n]

            def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> Any:
                n, m = self.keys.shape[-2], key_states.shape[-2]
                if n + m > self._kbuf.shape[-2]:
                    self.make_room(max(m, n))
                self._kbuf[:, :, n:n + m] = key_states
                self._vbuf[:, :, n:n + m] = value_states
                self.keys, self.values = self._kbuf[:, :, :n + m], self._vbuf[:, :, :n + m]
                return self.keys, self.values

            def batch_select_indices(self, indices: Any) -> None:
                n = self.keys.shape[-2]
                self._kbuf, self._vbuf = self._kbuf[indices], self._vbuf[indices]
                self.keys, self.values = self._kbuf[:, :, :n], self._vbuf[:, :, :n]

        _ROOMY = RoomyLayer
    for layer in layers:
        layer.__class__ = _ROOMY
        layer.make_room(extra)
    return True


def dense_head_input(model: Any) -> bool:
    """Make the output layer (lm_head) get a densely strided input; True if the hook is (already) there.

    With ``logits_to_keep`` the causal LMs call ``lm_head(hidden[:, -k:, :])``, a strided view of the hidden
    states, and lm_head has no bias, so ``F.linear`` goes to ``torch.matmul``. matmul folds a 3-D input into
    one ``mm`` only if the weight requires grad or the input's leading dims are dense; otherwise it runs
    ``bmm`` against the (vocab x hidden) weight expanded over the batch, and the CPU bf16 ``bmm`` makes that
    expansion contiguous: one copy of the output embedding per row (49,152 x 576 x 2 bytes = 54 MB a row on
    SmolLM2, 3.5 GB at batch 64, whatever the length). ``from_pretrained`` leaves weights requiring grad, so
    a plain model folds; PEFT freezes the base weights and ``merge_and_unload`` keeps them frozen, so a merged
    (or live-adapter, or aligned) model took the ``bmm`` path. Copying the kept rows (rows x k x hidden) into
    a dense tensor makes matmul fold whatever ``requires_grad`` says. See bench/profile_memory.py."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if head is None or not hasattr(head, "register_forward_pre_hook"):
        return False
    if not getattr(head, "_cowest_dense_input", False):
        head.register_forward_pre_hook(_dense_input_hook)
        head._cowest_dense_input = True
    return True


def _dense_input_hook(module: Any, args: tuple) -> tuple | None:
    x = args[0] if args else None
    if x is None or not hasattr(x, "stride") or x.dim() < 3:
        return None
    # matmul's own test (should_fold): each leading dim steps over exactly the dims after it. is_contiguous()
    # is not enough, as it ignores the stride of a size-1 dim (batch 1: still one copy of the weight).
    if all(x.stride(i) == x.stride(i + 1) * x.size(i + 1) for i in range(x.dim() - 2)):
        return None
    import torch

    return (x.clone(memory_format=torch.contiguous_format), *args[1:])


def common_prefix_len(seqs: list[list[int]]) -> int:
    """Length of the token prefix all ``seqs`` share, leaving at least one token in each."""
    limit = min(len(x) for x in seqs) - 1
    n = 0
    while n < limit and all(x[n] == seqs[0][n] for x in seqs):
        n += 1
    return n
