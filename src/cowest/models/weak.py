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
from typing import Any, Sequence

from cowest.config import WeakConfig
from cowest.errors import ModelError

Messages = list[dict[str, str]]
Prompt = Messages | str  # a str is taken as already formatted text


class WeakModel:
    def __init__(self, model: Any, tokenizer: Any, cfg: WeakConfig):
        self.model = model
        self.tokenizer = tokenizer
        self.cfg = cfg

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

        if cfg.backend != "transformers":
            raise ModelError(f"weak.backend={cfg.backend} is not supported by WeakModel; use transformers")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        path, gguf_file = resolve_weak_model(cfg.model, cfg.gguf_file)
        device = resolve_device(cfg.device)
        dtype = resolve_dtype(cfg.dtype, device)
        extra = {"gguf_file": gguf_file} if gguf_file else {}
        try:
            tok = AutoTokenizer.from_pretrained(path, padding_side="left", **extra)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **extra)
        except Exception as e:  # noqa: BLE001 - hub/IO/parse failures all mean "cannot load this model"
            raise ModelError(f"cannot load weak model {path}: {_first_line(e)}") from None
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model.to(device)

        adapters = [adapter] if isinstance(adapter, (str, Path)) else list(adapter or [])
        if not adapters and cfg.adapter:
            adapters = [cfg.adapter]
        if len(adapters) > 1 and not merge:
            raise ValueError("several adapters can only be loaded with merge=True")
        for a in adapters:
            model = _load_adapter(model, str(a), merge=merge)
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

    def _encode_prompts(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        # A chat template already writes its own special tokens; plain text gets the tokenizer's.
        special = not getattr(self.tokenizer, "chat_template", None)
        texts = [self.format_prompt(p) for p in prompts]
        ids = self.tokenizer(texts, add_special_tokens=special)["input_ids"]
        limit = self.cfg.max_prompt_tokens
        return [x[-limit:] if limit and len(x) > limit else x for x in ids]  # keep the end: the question

    # ------------------------------------------------------------------ generation

    def generate(
        self,
        prompts: list[Messages],
        *,
        n: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_new_tokens: int | None = None,
        seed: int = 0,
        desc: str = "weak",
    ) -> list[list[str]]:
        """``n`` completions per prompt (greedy when ``temperature`` is 0), in prompt order."""
        import torch
        from tqdm.auto import tqdm

        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        sample = temperature > 0
        ids = self._encode_prompts(prompts)
        pad = self.tokenizer.pad_token_id
        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens or self.cfg.max_new_tokens,
            "do_sample": sample,
            "pad_token_id": pad,
            # greedy runs once and is copied n times (identical anyway)
            "num_return_sequences": n if sample else 1,
        }
        if sample:  # top_k=0: sample exactly what temperature/top_p say, not a model default top-k
            gen_kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
        else:
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)

        results: list[list[str]] = [[] for _ in prompts]
        with tqdm(total=len(prompts), desc=desc, unit="prompt", dynamic_ncols=True) as bar:
            for b, batch in enumerate(self._batches(ids)):
                input_ids, mask = self._pad_left([ids[i] for i in batch], pad)
                torch.manual_seed(seed + b)
                with torch.inference_mode():
                    out = self.model.generate(input_ids=input_ids, attention_mask=mask, **gen_kwargs)
                texts = self.tokenizer.batch_decode(out[:, input_ids.shape[1] :], skip_special_tokens=True)
                per = gen_kwargs["num_return_sequences"]
                for j, i in enumerate(batch):
                    got = [t.strip() for t in texts[j * per : (j + 1) * per]]
                    results[i] = got if sample else got * n
                bar.update(len(batch))
        return results

    def _batches(self, ids: list[list[int]]) -> list[list[int]]:
        # longest first: similar lengths share a batch (less padding), and an OOM shows up at once
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        size = self.cfg.batch_size
        return [order[k : k + size] for k in range(0, len(order), size)]

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

    def choice_probs(
        self, prompts: list[Messages], candidates: list[list[str]] | list[str]
    ) -> list[list[float]]:
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
            for c, text in enumerate(cands):
                cont = self.tokenizer(text, add_special_tokens=False)["input_ids"]
                if not cont:
                    raise ValueError(f"candidate {text!r} encodes to no tokens")
                items.append((p, c, ctx[p], cont))
        scores = [[0.0] * len(c) for c in candidates]
        order = sorted(range(len(items)), key=lambda k: -(len(items[k][2]) + len(items[k][3])))
        size = self.cfg.batch_size
        for start in range(0, len(order), size):
            batch = [items[k] for k in order[start : start + size]]
            for (p, c, _, _), lp in zip(batch, self._continuation_logprobs(batch)):
                scores[p][c] = lp
        out = []
        for row in scores:
            t = torch.softmax(torch.tensor(row, dtype=torch.float64), dim=0)
            out.append(t.tolist())
        return out

    def _continuation_logprobs(self, batch: list[tuple]) -> list[float]:
        """Sum of log-probs of each continuation after its context; right padding (positions exact)."""
        import torch

        seqs = [ctx + cont for _, _, ctx, cont in batch]
        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            input_ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
        with torch.inference_mode():
            logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits
        logp = torch.log_softmax(logits.float(), dim=-1).cpu()
        result = []
        for r, (_, _, ctx, cont) in enumerate(batch):
            # token at position t is predicted by the logits at t-1
            pos = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1)
            result.append(logp[r, pos, torch.tensor(cont)].sum().item())
        return result


# ---------------------------------------------------------------------- helpers


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
    import torch

    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32  # CPU half precision is slow and lossy
    return getattr(torch, dtype)


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
