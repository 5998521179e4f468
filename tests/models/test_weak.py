"""WeakModel on a tiny random Llama: batching, order, seeding, choice probabilities, adapters."""

from __future__ import annotations

import math

import pytest

from cowest.config import WeakConfig
from cowest.errors import ModelError
from cowest.models.weak import WeakModel, resolve_dtype
from support.tiny import TEST_DEVICE

QUESTIONS = [
    "Is it safe?",
    "What is the dose of vitamin D for a patient with a deficiency and chronic kidney disease?",
    "Why?",
    "Which option is correct: A, B, C or D? Explain because the doctor would want to know.",
    "Where is the river?",
]


def msgs(q: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": q}]


def cfg_for(path, **kw) -> WeakConfig:
    # fp32: these tests compare batched against one-by-one outputs exactly
    defaults = {"device": TEST_DEVICE, "batch_size": 2, "max_new_tokens": 8, "dtype": "float32"}
    return WeakConfig(model=str(path), **{**defaults, **kw})


@pytest.fixture(scope="module")
def wm(tiny_model_dir) -> WeakModel:
    return WeakModel.load(cfg_for(tiny_model_dir))


def first_logits(model, tokenizer, text):
    import torch

    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(model.device)
    with torch.inference_mode():
        return model(input_ids=ids).logits[0, -1]


def test_load_defaults(wm):
    import torch

    assert wm.tokenizer.padding_side == "left"
    assert wm.tokenizer.pad_token is not None
    assert wm.device.type == TEST_DEVICE.split(":")[0] and wm.model.dtype == torch.float32
    assert not wm.model.training


def test_auto_dtype_is_bf16_only_on_native_bf16_cpus(monkeypatch):
    import torch

    import cowest.models.weak as weak

    monkeypatch.setattr(weak, "cpu_has_native_bf16", lambda: True)
    assert resolve_dtype("auto", torch.device("cpu")) == torch.bfloat16
    assert resolve_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(weak, "cpu_has_native_bf16", lambda: False)
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("float32", torch.device("cpu")) == torch.float32  # an explicit dtype always wins
    monkeypatch.undo()
    flags = open("/proc/cpuinfo").read() if __import__("os").path.exists("/proc/cpuinfo") else ""
    assert weak.cpu_has_native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_batches_respect_the_token_budget(tiny_model_dir):
    w = WeakModel(None, None, WeakConfig(model=str(tiny_model_dir), batch_size=3, max_batch_tokens=100))
    lengths = [10, 40, 10, 30, 10, 10, 10, 5]
    batches = w._batches(lengths, rows_per_prompt=2, new_tokens=10)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # each index exactly once
    for b in batches:
        widest = max(lengths[i] for i in b)
        assert len(b) <= 3
        assert len(b) == 1 or (widest + 10) * 2 * len(b) <= 100  # a single over-budget prompt still runs
    assert [[lengths[i] for i in b] for b in batches] == [[40], [30], [10, 10], [10, 10], [10, 5]]
    assert w._batches([1] * 7) == [[0, 1, 2], [3, 4, 5], [6]]  # only batch_size binds for short items


def test_token_budget_does_not_change_greedy_outputs(wm, tiny_model_dir):
    tight = WeakModel(wm.model, wm.tokenizer, cfg_for(tiny_model_dir, batch_size=64, max_batch_tokens=60))
    prompts = [msgs(q) for q in QUESTIONS]
    assert len(tight._batches([len(x) for x in tight._encode_prompts(prompts)], rows_per_prompt=2, new_tokens=8)) > 1
    assert tight.generate(prompts, n=2, max_new_tokens=8) == wm.generate(prompts, n=2, max_new_tokens=8)


def test_format_prompt_uses_chat_template(wm):
    text = wm.format_prompt(msgs("Why?"))
    assert text.endswith("assistant\n") and "Why?" in text
    assert wm.format_prompt("raw text") == "raw text"


def test_format_prompt_without_template(tiny_model_dir):
    plain = WeakModel.load(cfg_for(tiny_model_dir))
    plain.tokenizer.chat_template = None
    text = plain.format_prompt([{"role": "system", "content": "Be brief."}, *msgs("Why?")])
    assert text == "System: Be brief.\nUser: Why?\nAssistant:"
    assert len(plain.generate([msgs("Why?")], max_new_tokens=3)[0]) == 1


def test_batched_greedy_matches_one_by_one(wm):
    prompts = [msgs(q) for q in QUESTIONS]
    batched = wm.generate(prompts, n=2, max_new_tokens=8)
    alone = [wm.generate([p], n=2, max_new_tokens=8)[0] for p in prompts]
    assert [len(o) for o in batched] == [2] * len(prompts)
    assert batched == alone  # same text in the same order: left padding and reordering are exact
    firsts = [o[0] for o in batched]
    assert any(firsts) and len(set(firsts)) > 1  # not trivially equal (all empty / all the same)


def test_sampling_is_seeded(wm):
    prompts = [msgs(q) for q in QUESTIONS[:3]]
    kw = dict(n=3, temperature=1.0, top_p=1.0, max_new_tokens=8)
    a = wm.generate(prompts, seed=7, **kw)
    assert a == wm.generate(prompts, seed=7, **kw)
    assert a != wm.generate(prompts, seed=8, **kw)
    assert all(len(o) == 3 for o in a)
    assert any(len(set(o)) > 1 for o in a)  # the n samples are distinct draws


def test_prompt_truncated_from_left(tiny_model_dir):
    short = WeakModel.load(cfg_for(tiny_model_dir, max_prompt_tokens=6))
    full = short.tokenizer(short.format_prompt(msgs(QUESTIONS[1])), add_special_tokens=False)["input_ids"]
    assert short._encode_prompts([msgs(QUESTIONS[1])]) == [full[-6:]]
    assert len(short.generate([msgs(QUESTIONS[1])], max_new_tokens=2)) == 1


def whole_candidate_probs(wm, prompt, cands):
    """By hand: a full forward of context + candidate, the candidate's token log-probs summed, then a softmax."""
    import torch

    ctx = wm.tokenizer(wm.format_prompt(prompt), add_special_tokens=False)["input_ids"]
    scores = []
    for c in cands:
        cont = wm.tokenizer(c, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logp = torch.log_softmax(wm.model(input_ids=torch.tensor([ctx + cont], device=wm.device)).logits[0], -1)
        scores.append(sum(logp[len(ctx) - 1 + k, t].item() for k, t in enumerate(cont)))
    return torch.softmax(torch.tensor(scores, dtype=torch.float64), 0).tolist()


def test_choice_probs_match_direct_forward(wm):
    cands = ["yes", "no maybe", "A"]
    prompts = [msgs(q) for q in QUESTIONS[:3]]
    probs = wm.choice_probs(prompts, [cands] * 3)
    for row in probs:
        assert len(row) == 3 and math.isclose(sum(row), 1.0, abs_tol=1e-9)
    assert wm.choice_probs(prompts, cands) == probs  # a shared candidate list broadcasts
    assert probs[1] == pytest.approx(whole_candidate_probs(wm, prompts[1], cands), abs=1e-5)
    assert probs[1] != pytest.approx([1 / 3] * 3, abs=1e-4)  # the candidates are actually scored


def test_choice_probs_with_a_shared_reasoning_prefix(wm):
    """SuperICL's candidates share the draft's reasoning; the shared tokens move into the context (their
    log-prob is the same under every candidate), and the result equals scoring the whole candidates."""
    from cowest.models.decoding import common_prefix_len as _common_prefix_len

    assert _common_prefix_len([[1, 2, 3], [1, 2, 4]]) == 2
    assert _common_prefix_len([[1, 2], [1, 2, 5]]) == 1  # at least one token stays with each candidate
    reasoning = "The ticket names the product, and that team owns it, so it goes there.\nAnswer: "
    cands = [reasoning + lab for lab in ("billing", "platform", "security")]
    prompt = msgs(QUESTIONS[1])
    got = wm.choice_probs([prompt], [cands])[0]
    assert got == pytest.approx(whole_candidate_probs(wm, prompt, cands), abs=1e-5)


def test_adapter_changes_outputs(tiny_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    lora = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    )
    with torch.no_grad():  # make the adapter strong enough to move the logits clearly
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    lora.save_pretrained(tmp_path / "adapter")

    plain = WeakModel.load(cfg_for(tiny_model_dir))
    merged = WeakModel.load(cfg_for(tiny_model_dir), adapter=str(tmp_path / "adapter"))
    live = WeakModel.load(cfg_for(tiny_model_dir), adapter=str(tmp_path / "adapter"), merge=False)
    via_cfg = WeakModel.load(cfg_for(tiny_model_dir, adapter=str(tmp_path / "adapter")))
    text = plain.format_prompt(msgs(QUESTIONS[0]))
    l_plain, l_merged, l_live, l_cfg = (first_logits(w.model, w.tokenizer, text) for w in (plain, merged, live, via_cfg))
    assert (l_plain - l_merged).abs().max() > 1e-2
    assert torch.allclose(l_merged, l_live, atol=1e-4)  # merging does not change the function
    assert torch.allclose(l_merged, l_cfg)
    assert type(live.model).__name__.startswith("Peft") and not type(merged.model).__name__.startswith("Peft")
    prompts = [msgs(q) for q in QUESTIONS]
    assert merged.generate(prompts, max_new_tokens=8) != plain.generate(prompts, max_new_tokens=8)

    # bf16 inference: the adapter is folded in at fp32 and the sum rounded once
    half = WeakModel.load(cfg_for(tiny_model_dir, dtype="bfloat16"), adapter=str(tmp_path / "adapter"))
    assert half.model.dtype == torch.bfloat16
    want = dict(merged.model.named_parameters())
    for name, p in half.model.named_parameters():
        assert torch.equal(p, want[name].to(torch.bfloat16)), name


def test_missing_paths_raise_model_error(tiny_model_dir, tmp_path):
    with pytest.raises(ModelError, match="not found") as e:
        WeakModel.load(cfg_for(tmp_path / "no_model"))
    assert str(tmp_path / "no_model") in str(e.value)
    with pytest.raises(ModelError, match="adapter") as e:
        WeakModel.load(cfg_for(tiny_model_dir), adapter=str(tmp_path / "no_adapter"))
    assert str(tmp_path / "no_adapter") in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="adapter_config.json"):
        WeakModel.load(cfg_for(tiny_model_dir), adapter=str(tmp_path / "empty"))


def test_unloadable_model_dir(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot load weak model") as e:
        WeakModel.load(cfg_for(tmp_path))
    assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)


def test_continuation_logprobs_match_choice_scoring(tiny_model_dir):
    """Sum log-probs of a continuation after prompt+prefix, checked against a direct forward pass."""
    import torch

    from cowest.config import WeakConfig
    from cowest.models.weak import WeakModel

    wm = WeakModel.load(WeakConfig(model=str(tiny_model_dir), batch_size=2, dtype="float32"))
    msgs = [[{"role": "user", "content": "Name a colour."}], [{"role": "user", "content": "And a longer question here?"}]]
    got = wm.continuation_logprobs(msgs, ["Because.\nAnswer: ", "Answer: "], ["red", "blue sky"])
    for (lp, n), m, pre, cont in zip(got, msgs, ["Because.\nAnswer: ", "Answer: "], ["red", "blue sky"]):
        head = wm.tokenizer(wm.format_prompt(m), add_special_tokens=False)["input_ids"]
        head += wm.tokenizer(pre, add_special_tokens=False)["input_ids"]
        tail = wm.tokenizer(cont, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([head + tail], device=wm.device)
        with torch.no_grad():
            logp = torch.log_softmax(wm.model(ids).logits.float(), -1)[0]
        want = sum(logp[len(head) - 1 + i, t].item() for i, t in enumerate(tail))
        assert n == len(tail)
        assert lp == pytest.approx(want, abs=1e-4)
        assert lp < 0


@pytest.fixture(scope="module")
def frozen_adapter(tiny_model_dir, tmp_path_factory):
    """A non-zero LoRA on every linear layer but the output one (what SFT's ``all-linear`` trains)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    out = tmp_path_factory.mktemp("lora") / "adapter"
    lora.save_pretrained(out)
    return str(out)


def _largest_allocation(fn) -> tuple[int, list]:
    """(bytes of the largest single CPU allocation while ``fn`` runs, input shapes of each aten::bmm)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True) as prof:
        fn()
    events = prof.events()
    return max(e.cpu_memory_usage for e in events), [e.input_shapes for e in events if e.name == "aten::bmm"]


@pytest.mark.parametrize("merge", [True, False])
def test_merged_model_does_not_copy_the_output_layer_per_row(tiny_model_dir, frozen_adapter, merge):
    """bench/RESULTS.md 5b: a bf16 forward cost +3.3 GB once an adapter was merged. PEFT leaves the weights
    frozen, and with frozen weights torch.matmul ran lm_head on the ``logits_to_keep`` slice as a bmm against
    the output weight expanded over the batch, which bf16 bmm copied: one (vocab x hidden) copy per row."""
    import torch

    # CPU: the profiler below reads CPU allocations (the case of bench/RESULTS.md 5b)
    wm = WeakModel.load(cfg_for(tiny_model_dir, dtype="bfloat16", batch_size=8, device="cpu"), adapter=frozen_adapter,
                        merge=merge)
    head = wm.model.get_output_embeddings()
    assert not any(p.requires_grad for p in wm.model.parameters())  # the trigger: PEFT froze the weights
    vocab, hidden = head.weight.shape
    head_bytes = head.weight.numel() * head.weight.element_size()
    rows = 8
    g = torch.Generator().manual_seed(0)
    batch = [(0, 0, torch.randint(3, vocab, (40 + r,), generator=g).tolist(), [5, 6]) for r in range(rows)]

    peak, bmms = _largest_allocation(lambda: wm._continuation_logprobs(batch))
    assert not [s for s in bmms if any(vocab in shape for shape in s)], bmms
    assert peak < 2 * head_bytes, (peak, head_bytes)  # before the fix: rows * head_bytes in one allocation
    prompts = [msgs(q) for q in QUESTIONS] * 2  # generate's prefill keeps 1 position: the same slice
    peak, bmms = _largest_allocation(lambda: wm.generate(prompts[:rows], max_new_tokens=2))
    assert not [s for s in bmms if any(vocab in shape for shape in s)], bmms
    assert peak < 2 * head_bytes, (peak, head_bytes)

    # the hook changes the memory, not the numbers; and wrapping the same model again adds no second hook
    again = WeakModel(wm.model, wm.tokenizer, wm.cfg)
    assert len(again.model.get_output_embeddings()._forward_pre_hooks) == 1
    ids = torch.tensor([batch[0][2]], device=wm.device)
    with torch.inference_mode():
        hidden_states = wm.model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        want = torch.nn.functional.linear(hidden_states[:, -3:].contiguous(), head.weight)
        got = wm.model(input_ids=ids, logits_to_keep=3).logits
    assert torch.equal(got, want)
