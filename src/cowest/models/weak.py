"""The weak model: transformers causal LM (+ optional PEFT LoRA adapter), batched sampling.

INTERFACE STUB — implemented by the weak-model work. Contract:

    wm = WeakModel.load(cfg.weak, adapter="runs/x/sft/adapter")   # adapter optional
    outs = wm.generate(list_of_chat_messages, n=4, temperature=1.0, top_p=0.95, max_new_tokens=128)
    # -> list (one per prompt) of lists (n strings each), prompt order kept
    probs = wm.choice_probs(list_of_chat_messages, [["A","B","C","D"], ...])  # SuperICL confidence
"""

from __future__ import annotations

from typing import Any

from cowest.config import WeakConfig

Messages = list[dict[str, str]]


class WeakModel:
    def __init__(self, model: Any, tokenizer: Any, cfg: WeakConfig):
        self.model = model
        self.tokenizer = tokenizer
        self.cfg = cfg

    @classmethod
    def load(cls, cfg: WeakConfig, adapter: str | None = None) -> "WeakModel":
        raise NotImplementedError

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
        raise NotImplementedError

    def choice_probs(self, prompts: list[Messages], candidates: list[list[str]]) -> list[list[float]]:
        raise NotImplementedError
