"""The weak model on vLLM (``weak.backend: vllm``): the same contract as :class:`cowest.models.weak.WeakModel`.

    wm = VLLMWeakModel.load(cfg.weak, adapter="runs/x/sft/adapter")
    outs = wm.generate(list_of_chat_messages, n=4, temperature=1.0, top_p=0.95, max_new_tokens=128)
    # -> list (one per prompt) of lists (n strings each), prompt order kept

vLLM serves the base model and applies the LoRA adapter per request (``LoRARequest``), so drafting K
samples for thousands of questions during feedback runs at GPU-batched speed. Prompts are rendered
with the tokenizer's chat template and truncated exactly as the transformers backend does (keep the
end), then passed as token ids, so both backends see the same prompt.

vLLM needs a CUDA machine (``pip install 'cowest[vllm]'``); its import is guarded. The request building
(:func:`to_prompts`, :func:`build_sampling_kwargs`, :func:`lora_rank`) and the response mapping
(:func:`map_outputs`, :func:`continuation_logprob`) are pure functions, tested without vLLM against
stand-ins shaped like vLLM's ``RequestOutput``/``CompletionOutput``/``Logprob``. See docs/scaling.md.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from cowest.chat import Messages
from cowest.config import WeakConfig
from cowest.errors import ModelError

Prompt = Messages | str

INSTALL_HINT = "vLLM is not installed: pip install 'cowest[vllm]' on a CUDA machine (or set weak.backend=transformers)"
# max_lora_rank values vLLM accepts
_VLLM_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def import_vllm() -> tuple[Any, Any, Any]:
    """(LLM, SamplingParams, LoRARequest), or a ModelError saying how to get them."""
    try:
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest
    except ImportError:
        raise ModelError(INSTALL_HINT) from None
    return LLM, SamplingParams, LoRARequest


# ---------------------------------------------------------------------- pure request/response helpers


def render_prompt(tokenizer: Any, messages: Prompt) -> str:
    """The chat template with the assistant turn opened (the same text WeakModel.format_prompt makes)."""
    if isinstance(messages, str):
        return messages
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join(lines + ["Assistant:"])


def to_prompts(tokenizer: Any, prompts: Sequence[Prompt], max_prompt_tokens: int | None) -> list[dict[str, list[int]]]:
    """vLLM ``TokensPrompt`` dicts: chat-templated, tokenised, truncated from the left like WeakModel."""
    special = not getattr(tokenizer, "chat_template", None)  # a template writes its own special tokens
    texts = [render_prompt(tokenizer, p) for p in prompts]
    ids = tokenizer(texts, add_special_tokens=special)["input_ids"]
    limit = max_prompt_tokens
    return [{"prompt_token_ids": list(x[-limit:] if limit and len(x) > limit else x)} for x in ids]


def build_sampling_kwargs(*, n: int, temperature: float, top_p: float, max_tokens: int, seed: int | None) -> dict[str, Any]:
    """``SamplingParams`` keyword arguments. Greedy (temperature 0) asks for one output: vLLM rejects
    n > 1 without sampling, and the n greedy outputs would be identical anyway (see map_outputs)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if temperature <= 0:
        return {"n": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": max_tokens}
    # top_k=-1: sample exactly what temperature/top_p say (as the transformers backend's top_k=0)
    return {"n": n, "temperature": float(temperature), "top_p": float(top_p), "top_k": -1,
            "max_tokens": max_tokens, "seed": seed}


def map_outputs(request_outputs: Sequence[Any], n: int, n_prompts: int | None = None) -> list[list[str]]:
    """``RequestOutput``s (prompt order) -> n stripped texts per prompt; one greedy output is repeated n times."""
    if n_prompts is not None and len(request_outputs) != n_prompts:
        raise ModelError(f"vLLM returned {len(request_outputs)} outputs for {n_prompts} prompts")
    result = []
    for ro in request_outputs:
        outs = sorted(ro.outputs, key=lambda o: getattr(o, "index", 0))
        texts = [o.text.strip() for o in outs]
        if len(texts) == 1 and n > 1:
            texts = texts * n
        if len(texts) != n:
            raise ModelError(f"vLLM returned {len(texts)} completions for a prompt, expected {n}")
        result.append(texts)
    return result


def continuation_logprob(request_output: Any, start: int) -> float:
    """Sum of log p(token) over prompt positions ``start..end`` (``prompt_logprobs`` of a request run with
    ``SamplingParams(prompt_logprobs=0)``: one ``{token_id: Logprob}`` per position, None at position 0)."""
    ids = request_output.prompt_token_ids
    plp = request_output.prompt_logprobs
    if plp is None:
        raise ModelError("vLLM returned no prompt_logprobs (request them with prompt_logprobs=0)")
    if start < 1 or start >= len(ids):
        raise ValueError(f"continuation start {start} outside 1..{len(ids) - 1}")
    return float(sum(plp[i][ids[i]].logprob for i in range(start, len(ids))))


def lora_rank(adapter_dir: str | Path) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that fits the adapter's rank ``r``."""
    cfg_path = Path(adapter_dir) / "adapter_config.json"
    try:
        r = int(json.loads(cfg_path.read_text(encoding="utf-8"))["r"])
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"cannot read the LoRA rank from {cfg_path}: {e}") from None
    for v in _VLLM_RANKS:
        if r <= v:
            return v
    raise ModelError(f"LoRA rank {r} in {adapter_dir} is above vLLM's largest max_lora_rank ({_VLLM_RANKS[-1]})")


def check_servable_adapter(adapter_dir: str | Path) -> None:
    """vLLM applies ONE LoRA on the original base. An aligned adapter that only makes sense on top of a
    merged SFT model (``adapter_info.json`` with ``self_contained: false``) cannot be served that way."""
    path = Path(adapter_dir)
    if not (path / "adapter_config.json").is_file():
        raise ModelError(f"weak adapter has no adapter_config.json: {path}")
    info_path = path.parent / "adapter_info.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if not info.get("self_contained", True):
            raise ModelError(
                f"the aligned adapter {path} applies on top of {', '.join(info.get('merge', [])[:-1]) or 'a merged model'}, "
                "so vLLM cannot apply it to the base alone; use weak.backend=transformers for this run"
            )


# ---------------------------------------------------------------------- the backend


class VLLMWeakModel:
    """Drop-in for WeakModel's ``generate``/``choice_probs``/``continuation_logprobs`` on a vLLM engine."""

    def __init__(self, llm: Any, tokenizer: Any, cfg: WeakConfig, lora_request: Any = None):
        self.llm, self.tokenizer, self.cfg, self.lora_request = llm, tokenizer, cfg, lora_request

    @classmethod
    def load(cls, cfg: WeakConfig, adapter: str | None = None, **engine_kwargs: Any) -> "VLLMWeakModel":
        """Start a vLLM engine on the weak base model, with ``adapter`` (or ``cfg.adapter``) as its LoRA.

        ``engine_kwargs`` go to ``vllm.LLM`` (e.g. ``gpu_memory_utilization=0.4`` when the strong model
        shares the GPU, ``max_model_len=2048``).
        """
        LLM, _, LoRARequest = import_vllm()
        from transformers import AutoTokenizer

        from cowest.models.offline import resolve_weak_model

        path, _ = resolve_weak_model(cfg.model, cfg.gguf_file)  # GGUF/offline aliases become HF dirs
        adapter = adapter or cfg.adapter
        kwargs: dict[str, Any] = {"model": path, "dtype": cfg.dtype, "seed": 0}
        lora = None
        if adapter:
            check_servable_adapter(adapter)
            kwargs.update(enable_lora=True, max_lora_rank=lora_rank(adapter), max_loras=1)
            lora = LoRARequest("cowest-weak", 1, str(Path(adapter).resolve()))
        kwargs.update(engine_kwargs)
        # The adapter dir holds the tokenizer the adapter was trained with (same vocabulary as the base).
        tok_dir = adapter if adapter and (Path(adapter) / "tokenizer_config.json").is_file() else path
        try:
            tok = AutoTokenizer.from_pretrained(tok_dir)
            llm = LLM(**kwargs)
        except Exception as e:  # noqa: BLE001 - CUDA/engine/hub failures all mean "cannot start"
            raise ModelError(f"vLLM cannot load weak model {path}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
        return cls(llm, tok, cfg, lora)

    def format_prompt(self, messages: Prompt) -> str:
        return render_prompt(self.tokenizer, messages)

    def _run(self, prompts: list[dict[str, list[int]]], params: dict[str, Any]) -> list[Any]:
        _, SamplingParams, _ = import_vllm()
        return self.llm.generate(prompts, SamplingParams(**params), use_tqdm=False, lora_request=self.lora_request)

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
        if not prompts:
            return []
        reqs = to_prompts(self.tokenizer, prompts, self.cfg.max_prompt_tokens)
        params = build_sampling_kwargs(n=n, temperature=temperature, top_p=top_p,
                                       max_tokens=max_new_tokens or self.cfg.max_new_tokens, seed=seed)
        return map_outputs(self._run(reqs, params), n, len(prompts))

    def continuation_logprobs(self, prompts: list[Messages], prefixes: list[str], continuations: list[str]) -> list[tuple[float, int]]:
        """(sum log p(continuation | prompt + prefix), continuation tokens) per prompt."""
        ctx = to_prompts(self.tokenizer, prompts, self.cfg.max_prompt_tokens)
        items = []
        for c, pre, cont in zip(ctx, prefixes, continuations):
            head = c["prompt_token_ids"] + self.tokenizer(pre, add_special_tokens=False)["input_ids"]
            tail = self.tokenizer(cont, add_special_tokens=False)["input_ids"]
            items.append((head, tail))
        return [(lp, len(t)) for lp, (_, t) in zip(self._score(items), items)]

    def choice_probs(self, prompts: list[Messages], candidates: list[list[str]] | list[str]) -> list[list[float]]:
        """Per prompt, a softmax over candidates of log p(candidate | formatted prompt)."""
        if candidates and isinstance(candidates[0], str):
            candidates = [list(candidates)] * len(prompts)  # type: ignore[list-item]
        if len(candidates) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate lists")
        ctx = to_prompts(self.tokenizer, prompts, self.cfg.max_prompt_tokens)
        items, shape = [], []
        for c, cands in zip(ctx, candidates):
            shape.append(len(cands))
            for text in cands:
                items.append((c["prompt_token_ids"], self.tokenizer(text, add_special_tokens=False)["input_ids"]))
        scores = self._score(items)
        out, k = [], 0
        for m in shape:
            row = scores[k : k + m]
            k += m
            top = max(row)
            ex = [math.exp(s - top) for s in row]
            out.append([e / sum(ex) for e in ex])
        return out

    def _score(self, items: list[tuple[list[int], list[int]]]) -> list[float]:
        for head, tail in items:
            if not head or not tail:
                raise ValueError("a scored continuation needs a non-empty context and continuation")
        reqs = [{"prompt_token_ids": h + t} for h, t in items]
        outs = self._run(reqs, {"max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0})
        return [continuation_logprob(o, len(h)) for o, (h, _) in zip(outs, items)]
