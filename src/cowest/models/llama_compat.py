"""What llama_cpp.server does to a chat request before and after the model, reproduced for
:mod:`cowest.models.llama_batch`, whose answers share the one-slot server's cache name: the GGUF's chat template and
tokenizer, the repeat penalty it applies to every request by default, and its sampling chain.

    ids, stop = ChatTemplate(gguf)(messages)
    z = penalized(logits, generated[-PENALTY_LAST_N:], REPEAT_PENALTY)
    token = int(z.argmax()) if temperature == 0 else draw(z, temperature, top_p, rng)
"""

from __future__ import annotations

import numpy as np

# llama_cpp.server's defaults, which it applies to every request that does not set them: a repeat penalty of 1.1
# over the last 64 generated tokens (llama_batch: a request's ``repeat_penalty`` replaces it), then greedy at
# temperature 0, else top-k 40, top-p, min-p 0.05, temperature.
REPEAT_PENALTY, PENALTY_LAST_N, TOP_K, MIN_P = 1.1, 64, 40, 0.05


class ChatTemplate:
    """A GGUF's tokenizer and chat template, applied exactly as llama_cpp.server applies them (vocab only: no
    weights): ``ids, stop_strings = ChatTemplate(gguf)(messages)``."""

    def __init__(self, gguf: str):
        from llama_cpp import Llama, llama_chat_format

        self.vocab = Llama(gguf, vocab_only=True, verbose=False)
        meta, m = self.vocab.metadata, self.vocab._model
        eos, bos = self.vocab.token_eos(), self.vocab.token_bos()
        if "tokenizer.chat_template" not in meta:
            raise SystemExit(f"{gguf} has no chat template (tokenizer.chat_template)")
        self.formatter = llama_chat_format.Jinja2ChatFormatter(
            template=meta["tokenizer.chat_template"], eos_token=m.token_get_text(eos) if eos != -1 else "",
            bos_token=m.token_get_text(bos) if bos != -1 else "", stop_token_ids=[eos])

    def __call__(self, messages: list[dict[str, str]]) -> tuple[list[int], list[str]]:
        res = self.formatter(messages=messages)
        stop = [res.stop] if isinstance(res.stop, str) else list(res.stop or [])
        return self.vocab.tokenize(res.prompt.encode(), add_bos=not res.added_special, special=True), stop


def penalized(x: np.ndarray, recent: list[int], penalty: float) -> np.ndarray:
    """``x`` with llama.cpp's repeat penalty on the tokens of ``recent`` (a positive logit divided by it, a negative
    one multiplied), as llama_cpp.server applies it (1.1 unless the request sets ``repeat_penalty``)."""
    if not recent or penalty == 1.0:
        return x
    ids = np.fromiter(set(recent), dtype=np.int64)
    z = x.copy()
    v = z[ids]
    z[ids] = np.where(v <= 0, v * penalty, v / penalty)
    return z


def draw(z: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    """A token from logits ``z`` by llama_cpp.server's chain after the penalty: top-k 40, top-p, min-p 0.05 (each at
    temperature 1), then the temperature and a draw."""
    k = min(TOP_K, z.size)
    top = np.argpartition(-z, k - 1)[:k]
    top = top[np.argsort(-z[top])]
    logits = z[top].astype(np.float64)
    p = np.exp(logits - logits[0])
    p /= p.sum()
    n = int(np.searchsorted(np.cumsum(p), top_p)) + 1 if top_p < 1.0 else len(top)
    n = max(1, min(n, int((logits >= logits[0] + np.log(MIN_P)).sum())))
    q = np.exp((logits[:n] - logits[0]) / temperature)
    return int(top[rng.choice(n, p=q / q.sum())])
