"""Token log-probs from the project's decode loop, for the batch engine's OpenAI ``logprobs``/``top_logprobs``.

The likelihood evaluator reads the strong model's probability of the gold option where its answer states one
(:mod:`cowest.feedback.likelihood`), so the batch engine must return what llama.cpp's server and hosted APIs
return: per generated token its log-prob and the ``top_logprobs`` most likely alternatives. Both come from the
logits the decode loop computes anyway (:func:`cowest.models.decoding.decode`'s ``on_step``): a log-softmax
and a top-k per step, a few ms for 32 rows of a 152k vocabulary against ~1 s for the step's forward pass.

Log-probs are of the model's distribution (temperature 1, before any top-p cut), as OpenAI's are.

    rec = StepLogprobs(k=10)
    rows = decode(..., on_step=rec)
    rec.tokens(row, n_kept, tokenizer)  # -> [{"token", "logprob", "top": [[token, logprob], ...]}, ...]
"""

from __future__ import annotations

from typing import Any

MAX_TOP_LOGPROBS = 20  # OpenAI's limit


class StepLogprobs:
    """Per key (a decode row, or a request id), each step's chosen token, its log-prob and the top ``k``.

    As ``decode``'s ``on_step`` it records under the rows' indices; :meth:`entries` + :meth:`add` let a caller that
    knows which request each logits row belongs to record under request ids (:mod:`cowest.models.continuous`)."""

    def __init__(self, k: int):
        self.k = k
        self.steps: dict[Any, list[tuple[int, float, list[int], list[float]]]] = {}
        self.texts: dict[int, str] = {}  # token id -> its text

    def entries(self, tokens: Any, logits: Any) -> list[tuple[int, float, list[int], list[float]]]:
        """(chosen token, its log-prob, top-k ids, top-k log-probs) per row of ``logits``."""
        import torch

        logp = torch.log_softmax(logits.float(), dim=-1)
        chosen = logp.gather(1, tokens[:, None].long()).squeeze(1).tolist()
        if self.k:
            vals, idx = logp.topk(self.k, dim=-1)
            top_ids, top_lps = idx.tolist(), vals.tolist()
        else:
            top_ids = top_lps = [[] for _ in chosen]
        return list(zip(tokens.tolist(), chosen, top_ids, top_lps))

    def add(self, key: Any, entry: tuple[int, float, list[int], list[float]]) -> None:
        self.steps.setdefault(key, []).append(entry)

    def forget(self, key: Any = None) -> None:
        """Drop what was recorded under ``key`` (a finished or cancelled request), or everything (a finished batch)."""
        if key is None:
            self.steps.clear()
        else:
            self.steps.pop(key, None)

    def __call__(self, rows: Any, t: int, tokens: Any, logits: Any) -> None:
        for r, entry in zip(rows.tolist(), self.entries(tokens, logits)):
            self.add(r, entry)

    def tokens(self, key: Any, n: int, tokenizer: Any, k: int | None = None) -> list[dict[str, Any]]:
        """The first ``n`` steps under ``key`` as ``{"token", "logprob", "top"}`` with the top ``k`` (default: all
        recorded) alternatives; token texts decoded one by one, as OpenAI's are."""
        def text(token_id: int) -> str:
            if token_id not in self.texts:
                self.texts[token_id] = tokenizer.decode([token_id])
            return self.texts[token_id]

        k = self.k if k is None else k
        return [{"token": text(tok), "logprob": lp, "top": [[text(i), v] for i, v in zip(ids[:k], lps[:k])]}
                for tok, lp, ids, lps in self.steps.get(key, [])[:n]]


def cut_to_text(logprobs: list[dict[str, Any]], n_chars: int) -> list[dict[str, Any]]:
    """The tokens that begin within the first ``n_chars`` characters (the answer was cut at a stop string)."""
    out, at = [], 0
    for t in logprobs:
        if at >= n_chars:
            break
        out.append(t)
        at += len(t["token"])
    return out


def openai_logprobs(logprobs: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """``choices[i].logprobs`` as OpenAI's chat API writes it (what ``transport.parse_logprobs`` reads)."""
    if logprobs is None:
        return None
    return {"content": [
        {"token": t["token"], "logprob": t["logprob"], "bytes": list(t["token"].encode()),
         "top_logprobs": [{"token": s, "logprob": v, "bytes": list(s.encode())} for s, v in t["top"]]}
        for t in logprobs]}
