"""The weak model: transformers causal LM (+ optional PEFT LoRA adapter), batched sampling.

Contract:

    wm = WeakModel.load(cfg.weak, adapter="runs/x/sft/adapter")   # adapter optional
    outs = wm.generate(list_of_chat_messages, n=4, temperature=1.0, top_p=0.95, max_new_tokens=128)
    # -> list (one per prompt) of lists (n strings each), prompt order kept
    probs = wm.choice_probs(list_of_chat_messages, [["A","B","C","D"], ...])  # SuperICL confidence

torch/transformers are imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Sequence

from cowest.chat import Messages
from cowest.config import WeakConfig
from cowest.errors import ModelError
from cowest.models.cpu import cpu_has_native_bf16  # noqa: F401 - resolve_dtype's check (tests patch it here)
# dense_head_input is looked up here when a model is wrapped (bench/profile_memory.py patches it here)
from cowest.models.decoding import common_prefix_len, decode, dense_head_input, eos_ids, forward_names
from cowest.models.hub_kernels import hub_kernels_kwargs

Prompt = Messages | str  # a str is taken as already formatted text


class Completion(NamedTuple):
    text: str
    prompt_tokens: int
    completion_tokens: int  # generated tokens, the end-of-sequence token included
    finish_reason: str  # "stop" (end of sequence) | "length" (max_new_tokens reached)
    logprobs: list[dict[str, Any]] | None = None  # per kept token {"token", "logprob", "top"}, when asked


class WeakModel:
    def __init__(self, model: Any, tokenizer: Any, cfg: WeakConfig):
        self.model = model
        self.tokenizer = tokenizer
        self.cfg = cfg
        dense_head_input(model)  # or a merged (frozen) model copies the output embedding per row: see there

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(
        cls, cfg: WeakConfig, adapter: str | Sequence[str] | None = None, *, merge: bool = True
    ) -> "WeakModel":
        """Load model + tokenizer; then the adapter(s) (``adapter`` or else ``cfg.adapter``).

        Several adapters (e.g. SFT then DPO) are merged in order; ``merge=False`` keeps a single
        adapter as a live PeftModel (slower inference, but its weights stay separate).
        """
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from cowest.models.offline import resolve_weak_model

        if cfg.backend == "vllm":  # same generate() contract, on a vLLM engine with the adapter as LoRA
            from cowest.models.vllm_backend import VLLMWeakModel

            chosen = adapter if adapter is not None else cfg.adapter
            if chosen is not None and not isinstance(chosen, str):
                raise ModelError("weak.backend=vllm serves one LoRA adapter; fold stacked adapters first")
            return VLLMWeakModel.load(cfg, adapter=chosen)  # type: ignore[return-value]
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        path, gguf_file = resolve_weak_model(cfg.model, cfg.gguf_file)
        device = resolve_device(cfg.device)
        dtype = resolve_dtype(cfg.dtype, device)
        adapters = [adapter] if isinstance(adapter, (str, Path)) else list(adapter or [])
        if not adapters and cfg.adapter:
            adapters = [cfg.adapter]
        if len(adapters) > 1 and not merge:
            raise ValueError("several adapters can only be loaded with merge=True")
        extra = {"gguf_file": gguf_file} if gguf_file else {}
        try:
            tok = AutoTokenizer.from_pretrained(path, padding_side="left", **extra)
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=merge_dtype(dtype, merging=bool(adapters) and merge), **extra, **hub_kernels_kwargs()
            )
        except Exception as e:  # noqa: BLE001 - hub/IO/parse failures all mean "cannot load this model"
            raise ModelError(f"cannot load weak model {path}: {_first_line(e)}") from None
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        for a in adapters:
            model = _load_adapter(model, str(a), merge=merge)
        model.to(device=device, dtype=dtype)
        model.eval()
        return cls(model, tok, cfg)

    # ------------------------------------------------------------------ prompts

    def format_prompt(self, messages: Prompt) -> str:
        """The chat template with the assistant turn opened, or a plain rendering without one."""
        if isinstance(messages, str):
            return messages
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return "\n".join(lines + ["Assistant:"])

    def prompt_tokens(self, prompt: Prompt) -> int:
        """Tokens of one formatted prompt, before ``weak.max_prompt_tokens`` cuts it."""
        return len(self._encode_full([prompt])[0])

    def _encode_full(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        # A chat template already writes its own special tokens; plain text gets the tokenizer's.
        special = not getattr(self.tokenizer, "chat_template", None)
        return self.tokenizer([self.format_prompt(p) for p in prompts], add_special_tokens=special)["input_ids"]

    def _encode_prompts(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        ids = self._encode_full(prompts)
        limit = self.cfg.max_prompt_tokens
        return [x[-limit:] if limit and len(x) > limit else x for x in ids]  # keep the end: the question

    # ------------------------------------------------------------------ generation

    def generate(self, prompts: list[Messages], *, n: int = 1, temperature: float = 0.0, top_p: float = 1.0,
                 max_new_tokens: int | None = None, seed: int = 0, desc: str = "weak") -> list[list[str]]:
        """``n`` completions per prompt (greedy when ``temperature`` is 0), in prompt order."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        sample = temperature > 0
        ids = self._encode_prompts(prompts)
        # greedy runs once and is copied n times (identical anyway)
        gen_kwargs = self._gen_kwargs(n if sample else 1, temperature, top_p, max_new_tokens or self.cfg.max_new_tokens)
        per = gen_kwargs["num_return_sequences"]
        results: list[list[str]] = [[] for _ in prompts]
        for batch, rows in self._generate_rows(ids, gen_kwargs, seed=seed, desc=desc):
            texts = self.tokenizer.batch_decode(rows, skip_special_tokens=True)
            for j, i in enumerate(batch):
                got = [t.strip() for t in texts[j * per : (j + 1) * per]]
                results[i] = got if sample else got * n
        return results

    def complete(self, prompts: list[Prompt], *, temperature: float = 0.0, top_p: float = 1.0,
                 max_new_tokens: int, seed: int = 0, progress: bool = False,
                 top_logprobs: int | None = None) -> list[Completion]:
        """One completion per prompt with its token counts (what an OpenAI-style server reports); with
        ``top_logprobs`` (0-20) also each kept token's log-prob and its ``top_logprobs`` most likely alternatives."""
        from cowest.models.token_logprobs import StepLogprobs

        ids = self._encode_prompts(prompts)
        gen_kwargs = self._gen_kwargs(1, temperature, top_p, max_new_tokens)
        eos = set(self._eos_ids())
        rec = None if top_logprobs is None else StepLogprobs(top_logprobs)
        out: list[Completion | None] = [None] * len(prompts)
        for batch, rows in self._generate_rows(ids, gen_kwargs, seed=seed, desc="complete", progress=progress,
                                               on_step=rec):
            for r, (i, row) in enumerate(zip(batch, rows)):
                end = next((k for k, t in enumerate(row) if t in eos), None)
                kept = row if end is None else row[:end]
                out[i] = Completion(self.tokenizer.decode(kept, skip_special_tokens=True), len(ids[i]),
                                    len(kept) + (end is not None), "length" if end is None else "stop",
                                    None if rec is None else rec.tokens(r, len(kept), self.tokenizer))
            if rec is not None:
                rec.forget()
        return out  # type: ignore[return-value]

    def _gen_kwargs(self, rows_per_prompt: int, temperature: float, top_p: float,
                    max_new_tokens: int) -> dict[str, Any]:
        """``model.generate`` settings (the own decode loop reads the same keys); greedy when temperature is 0."""
        sample = temperature > 0
        kw: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": sample,
                              "pad_token_id": self.tokenizer.pad_token_id, "num_return_sequences": rows_per_prompt}
        if sample:  # top_k=0: sample exactly what temperature/top_p say, not a model default top-k
            kw.update(temperature=temperature, top_p=top_p, top_k=0)
        else:
            kw.update(temperature=None, top_p=None, top_k=None)
        return kw

    def _generate_rows(self, ids: list[list[int]], gen_kwargs: dict[str, Any], *, seed: int, desc: str,
                       progress: bool = True, on_step: Any = None) -> Any:
        """(prompt indices, generated token rows) per batch; ``num_return_sequences`` rows per prompt;
        ``on_step``: the decode loop's per-step callback (see :func:`decode`), own decode loop only."""
        import torch
        from tqdm.auto import tqdm

        fast = self._forward_names() is not None
        if on_step is not None and not fast:
            raise ModelError(f"{type(self.model).__name__} has no cache-aware forward: no token log-probs from it")
        per, new = gen_kwargs["num_return_sequences"], gen_kwargs["max_new_tokens"]
        sample = bool(gen_kwargs["do_sample"])
        with tqdm(total=len(ids), desc=desc, unit="prompt", dynamic_ncols=True, disable=not progress) as bar:
            for b, batch in enumerate(self._batches([len(x) for x in ids], rows_per_prompt=per, new_tokens=new)):
                if fast:  # own decode loop: each prompt encoded once, finished rows dropped
                    gen = torch.Generator(device=self.device).manual_seed(seed + b)
                    rows = self._decode([ids[i] for i in batch], n=per,
                                        temperature=gen_kwargs["temperature"] if sample else 0.0,
                                        top_p=gen_kwargs["top_p"] if sample else 1.0, max_new_tokens=new, generator=gen,
                                        on_step=on_step)
                else:
                    input_ids, mask = self._pad_left([ids[i] for i in batch], self.tokenizer.pad_token_id)
                    torch.manual_seed(seed + b)
                    with torch.inference_mode():
                        out = self.model.generate(input_ids=input_ids, attention_mask=mask, **gen_kwargs)
                    rows = out[:, input_ids.shape[1] :].tolist()
                yield batch, rows
                bar.update(len(batch))

    # Decoding without ``model.generate`` (cowest.models.decoding): each prompt's KV cache is computed once for
    # its K samples, and finished rows leave the batch.
    _COMPACT = 8  # drop finished rows once they are >= 1/_COMPACT of the batch
    _PREALLOC = True  # room for the new tokens in the KV cache up front (no whole-cache copy per step)

    def _forward_names(self) -> tuple[str, str | None] | None:
        """(cache kwarg, logits-to-keep kwarg) of the model's forward, or None: use model.generate."""
        if getattr(self, "_fwd_names", False) is False:
            self._fwd_names = forward_names(self.model)
        return self._fwd_names

    def _eos_ids(self) -> list[int]:
        return eos_ids(self.model, self.tokenizer)

    def _decode(self, seqs: list[list[int]], *, n: int, temperature: float, top_p: float, max_new_tokens: int,
                generator: Any, on_step: Any = None) -> list[list[int]]:
        """Token ids of ``n`` continuations per sequence (prompt-major), pad after EOS."""
        input_ids, mask = self._pad_left(seqs, self.tokenizer.pad_token_id)
        return decode(self.model, input_ids, mask, names=self._forward_names(), eos=self._eos_ids(),
                      pad=self.tokenizer.pad_token_id, n=n, temperature=temperature, top_p=top_p,
                      max_new_tokens=max_new_tokens, generator=generator, compact=self._COMPACT,
                      prealloc=self._PREALLOC, on_step=on_step)

    def _batches(self, lengths: list[int], *, rows_per_prompt: int = 1, new_tokens: int = 0) -> list[list[int]]:
        """Indices per forward/decode call: at most ``weak.batch_size`` sequences, and at most
        ``weak.max_batch_tokens`` token slots (rows × (padded length + new tokens)), so long prompts with
        K samples get smaller batches instead of an out-of-memory error."""
        # longest first: similar lengths share a batch (less padding), and the biggest batch comes first
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        out: list[list[int]] = []
        k = 0
        while k < len(order):
            slots = (lengths[order[k]] + new_tokens) * rows_per_prompt  # the first one is the widest
            size = max(1, min(self.cfg.batch_size, self.cfg.max_batch_tokens // max(1, slots)))
            out.append(order[k : k + size])
            k += size
        return out

    def _pad_left(self, seqs: list[list[int]], pad: int) -> tuple[Any, Any]:
        import torch

        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            if s:
                input_ids[r, width - len(s) :] = torch.tensor(s)
                mask[r, width - len(s) :] = 1
        return input_ids.to(self.device), mask.to(self.device)

    # ------------------------------------------------------------------ scoring

    def choice_probs(self, prompts: list[Messages], candidates: list[list[str]] | list[str]) -> list[list[float]]:
        """Per prompt, a softmax over candidates of log p(candidate | formatted prompt).

        ``candidates`` is one list per prompt, or a single list shared by all prompts.
        """
        import torch

        if candidates and isinstance(candidates[0], str):
            candidates = [list(candidates)] * len(prompts)  # type: ignore[list-item]
        if len(candidates) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate lists")
        ctx = self._encode_prompts(prompts)
        # (prompt index, candidate index, context ids, continuation ids), scored in batches
        items = []
        for p, cands in enumerate(candidates):
            if not cands:
                raise ValueError(f"prompt {p} has no candidates")
            conts = [self.tokenizer(text, add_special_tokens=False)["input_ids"] for text in cands]
            for text, cont in zip(cands, conts):
                if not cont:
                    raise ValueError(f"candidate {text!r} encodes to no tokens")
            # Tokens every candidate starts with (e.g. SuperICL's draft reasoning + "Answer:") have the same
            # log-prob under each, which cancels in the softmax: they join the context, so logits are computed
            # only for the tokens that differ.
            shared = common_prefix_len(conts) if len(conts) > 1 else 0
            for c, cont in enumerate(conts):
                items.append((p, c, ctx[p] + cont[:shared], cont[shared:]))
        scores = [[0.0] * len(c) for c in candidates]
        for idx in self._batches([len(x[2]) + len(x[3]) for x in items]):
            batch = [items[k] for k in idx]
            for (p, c, _, _), lp in zip(batch, self._continuation_logprobs(batch)):
                scores[p][c] = lp
        out = []
        for row in scores:
            t = torch.softmax(torch.tensor(row, dtype=torch.float64), dim=0)
            out.append(t.tolist())
        return out

    def continuation_logprobs(
        self, prompts: list[Messages], prefixes: list[str], continuations: list[str]
    ) -> list[tuple[float, int]]:
        """Per prompt, (sum of log p(continuation | formatted prompt + prefix), continuation tokens).

        SuperICL's confidence for a free-form answer: the prefix is the draft's reasoning and
        ``'Answer: '``, the continuation the parsed answer."""
        ctx = self._encode_prompts(prompts)
        items = []
        for p, (pre, cont) in enumerate(zip(prefixes, continuations)):
            head = ctx[p] + self.tokenizer(pre, add_special_tokens=False)["input_ids"]
            tail = self.tokenizer(cont, add_special_tokens=False)["input_ids"] or [self.tokenizer.eos_token_id]
            items.append((p, 0, head, tail))
        out: list[tuple[float, int]] = [(0.0, 0)] * len(items)
        for idx in self._batches([len(x[2]) + len(x[3]) for x in items]):
            batch = [items[k] for k in idx]
            for (p, _, _, tail), lp in zip(batch, self._continuation_logprobs(batch)):
                out[p] = (lp, len(tail))
        return out

    def _continuation_logprobs(self, batch: list[tuple]) -> list[float]:
        """Sum of log-probs of each continuation after its context.

        Left padding puts every continuation at the right edge, so the logits are computed only for the last
        ``longest continuation + 1`` positions (``logits_to_keep``) instead of for every position: at batch 64
        with 300-token prompts the full (batch, length, vocab) tensor would be ~3.8 GB on SmolLM2."""
        import torch

        seqs = [ctx + cont for _, _, ctx, cont in batch]
        input_ids, mask = self._pad_left(seqs, self.tokenizer.pad_token_id)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        longest = max(len(cont) for _, _, _, cont in batch)
        names = self._forward_names()
        extra = {names[1]: longest + 1} if names and names[1] else {}
        with torch.inference_mode():
            logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=pos, **extra).logits
        width = logits.shape[1]
        result = []
        for r, (_, _, _, cont) in enumerate(batch):
            # the token at position t is predicted by the logits at t-1; normalise only those rows
            rows = torch.arange(width - len(cont) - 1, width - 1, device=logits.device)
            logp = torch.log_softmax(logits[r, rows].float(), dim=-1)
            result.append(logp[torch.arange(len(cont)), torch.tensor(cont, device=logits.device)].sum().item())
        return result


def resolve_device(device: str) -> Any:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ModelError(f"weak.device={device!r} is not a device: {_first_line(e)}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"weak.device={device} but CUDA is not available; use weak.device=cpu")
    return dev


def resolve_dtype(dtype: str, device: Any) -> Any:
    """``weak.dtype`` for inference. ``auto``: bf16 on GPUs that have it (else fp16); on CPUs bf16 only where
    the hardware computes it natively (avx512_bf16 / AMX: 1.5x faster drafting than fp32 in bench/speed.py),
    else fp32, because emulated half precision is slower than fp32 there."""
    import torch

    if dtype == "auto":
        device = torch.device(device)
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    return getattr(torch, dtype)


def merge_dtype(dtype: Any, *, merging: bool) -> Any:
    """The dtype to load weights in before adapters are merged and the model is cast to ``dtype``: fp32
    when merging into half precision, so a small LoRA delta is added exactly and the sum rounded once
    (added to weights already in bf16 it would be rounded twice)."""
    import torch

    return torch.float32 if merging and dtype in (torch.bfloat16, torch.float16) else dtype


def _load_adapter(model: Any, adapter: str, *, merge: bool) -> Any:
    from peft import PeftModel

    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").is_file():
        what = "has no adapter_config.json" if path.is_dir() else "not found"
        raise ModelError(f"weak adapter {what}: {path}")
    try:
        model = PeftModel.from_pretrained(model, str(path))
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"cannot load weak adapter {path}: {_first_line(e)}") from None
    return model.merge_and_unload() if merge else model


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]
