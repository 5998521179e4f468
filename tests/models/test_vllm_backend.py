"""The vLLM weak backend without vLLM: pure request/response helpers, and the backend on a fake engine.

vLLM needs CUDA and cannot run here. The stand-ins below have the shape of ``vllm.outputs.RequestOutput``
(``request_id``, ``prompt_token_ids``, ``prompt_logprobs``, ``outputs``), ``CompletionOutput`` (``index``,
``text``) and ``vllm.sequence.Logprob`` (``logprob``); ``FakeLLM`` answers ``LLM.generate(prompts,
sampling_params, use_tqdm=, lora_request=)`` deterministically. docs/scaling.md says how to run the
real engine on a GPU.
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass, field

import pytest

from cowest.config import WeakConfig
from cowest.errors import ModelError
from cowest.models import vllm_backend as vb


@dataclass
class CompletionOutput:
    index: int
    text: str


@dataclass
class Logprob:
    logprob: float


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None


@dataclass
class FakeSamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 16
    seed: int | None = None
    prompt_logprobs: int | None = None


@dataclass
class FakeLoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str


def fake_lp(token: int) -> float:
    return -0.05 * (token % 11) - 0.01


@dataclass
class FakeLLM:
    calls: list = field(default_factory=list)

    def generate(self, prompts, sampling_params, *, use_tqdm=True, lora_request=None):
        self.calls.append((prompts, sampling_params, lora_request))
        outs = []
        for i, p in enumerate(prompts):
            ids = p["prompt_token_ids"]
            # completions deliberately out of index order: the backend must sort them
            comps = [CompletionOutput(k, f" p{i} s{k} len{len(ids)} ") for k in reversed(range(sampling_params.n))]
            plp = None
            if sampling_params.prompt_logprobs is not None:
                plp = [None] + [{t: Logprob(fake_lp(t)), t + 1: Logprob(-9.0)} for t in ids[1:]]
            outs.append(RequestOutput(str(i), list(ids), comps, plp))
        return outs


@pytest.fixture
def fake_vllm(monkeypatch):
    monkeypatch.setattr(vb, "import_vllm", lambda: (FakeLLM, FakeSamplingParams, FakeLoRARequest))


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def chat(q: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are a careful domain expert."}, {"role": "user", "content": q}]


# ---------------------------------------------------------------------- pure helpers


def test_build_sampling_kwargs_sampling_and_greedy():
    assert vb.build_sampling_kwargs(n=4, temperature=0.8, top_p=0.9, max_tokens=64, seed=3) == {
        "n": 4, "temperature": 0.8, "top_p": 0.9, "top_k": -1, "max_tokens": 64, "seed": 3}
    # greedy: one output (vLLM refuses n>1 without sampling); map_outputs repeats it
    assert vb.build_sampling_kwargs(n=4, temperature=0.0, top_p=0.9, max_tokens=64, seed=3) == {
        "n": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": 64}
    with pytest.raises(ValueError):
        vb.build_sampling_kwargs(n=0, temperature=1.0, top_p=1.0, max_tokens=8, seed=0)


def test_map_outputs_orders_strips_and_repeats_greedy():
    outs = [
        RequestOutput("0", [1], [CompletionOutput(1, " b "), CompletionOutput(0, "a\n")]),
        RequestOutput("1", [1], [CompletionOutput(0, " only ")]),
    ]
    assert vb.map_outputs(outs[:1], 2) == [["a", "b"]]
    assert vb.map_outputs(outs[1:], 3) == [["only", "only", "only"]]
    with pytest.raises(ModelError, match="2 completions"):
        vb.map_outputs(outs[:1], 3)
    with pytest.raises(ModelError, match="1 outputs for 2 prompts"):
        vb.map_outputs(outs[:1], 2, n_prompts=2)


def test_to_prompts_matches_the_transformers_backend_exactly(tiny_model_dir, tok):
    from cowest.models.weak import WeakModel

    wm = WeakModel.load(WeakConfig(model=str(tiny_model_dir), device="cpu", max_prompt_tokens=40))
    prompts = [chat("the patient has a fever " * 20), chat("short question?")]
    got = vb.to_prompts(tok, prompts, 40)
    assert [g["prompt_token_ids"] for g in got] == wm._encode_prompts(prompts)
    assert len(got[0]["prompt_token_ids"]) == 40  # truncated from the left: the question's end is kept
    assert vb.render_prompt(tok, prompts[1]) == wm.format_prompt(prompts[1])


def test_continuation_logprob_sums_the_prompt_positions():
    ids = [5, 7, 9, 2]
    plp = [None] + [{t: Logprob(fake_lp(t)), 0: Logprob(-50.0)} for t in ids[1:]]
    ro = RequestOutput("0", ids, [], plp)
    assert vb.continuation_logprob(ro, 2) == pytest.approx(fake_lp(9) + fake_lp(2))
    with pytest.raises(ValueError):
        vb.continuation_logprob(ro, 0)
    with pytest.raises(ModelError, match="prompt_logprobs"):
        vb.continuation_logprob(RequestOutput("0", ids, []), 1)


@pytest.mark.parametrize("r, rank", [(4, 8), (16, 16), (24, 32), (32, 32), (48, 64)])
def test_lora_rank_rounds_up_to_a_vllm_rank(tmp_path, r, rank):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": r}))
    assert vb.lora_rank(tmp_path) == rank


def test_check_servable_adapter(tmp_path):
    ad = tmp_path / "align" / "round1" / "adapter"
    ad.mkdir(parents=True)
    with pytest.raises(ModelError, match="no adapter_config.json"):
        vb.check_servable_adapter(ad)
    (ad / "adapter_config.json").write_text(json.dumps({"r": 16}))
    vb.check_servable_adapter(ad)  # no adapter_info: a plain adapter
    (ad.parent / "adapter_info.json").write_text(json.dumps({"self_contained": True, "merge": ["align/round1/adapter"]}))
    vb.check_servable_adapter(ad)
    (ad.parent / "adapter_info.json").write_text(
        json.dumps({"self_contained": False, "merge": ["sft/adapter", "align/round1/adapter"]}))
    with pytest.raises(ModelError, match="sft/adapter"):
        vb.check_servable_adapter(ad)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_load_without_vllm_says_how_to_install(tiny_model_dir):
    with pytest.raises(ModelError, match=r"pip install 'cowest\[vllm\]'"):
        vb.VLLMWeakModel.load(WeakConfig(model=str(tiny_model_dir), backend="vllm"))


# ---------------------------------------------------------------------- the backend on a fake engine


def test_generate_on_fake_engine(fake_vllm, tok):
    llm = FakeLLM()
    lora = FakeLoRARequest("cowest-weak", 1, "/runs/x/sft/adapter")
    wm = vb.VLLMWeakModel(llm, tok, WeakConfig(max_new_tokens=33), lora)
    out = wm.generate([chat("q one"), chat("q two")], n=3, temperature=1.0, top_p=0.9, seed=7)
    assert [row[0].split()[:2] for row in out] == [["p0", "s0"], ["p1", "s0"]]
    assert [r.split()[1] for r in out[0]] == ["s0", "s1", "s2"]
    prompts, params, lr = llm.calls[0]
    assert lr is lora and params == FakeSamplingParams(n=3, temperature=1.0, top_p=0.9, max_tokens=33, seed=7)
    assert prompts == vb.to_prompts(tok, [chat("q one"), chat("q two")], WeakConfig().max_prompt_tokens)
    greedy = wm.generate([chat("q")], n=2, temperature=0.0)
    assert greedy[0][0] == greedy[0][1] and llm.calls[-1][1].n == 1
    assert wm.generate([], n=2) == []


def test_choice_probs_and_continuation_logprobs_on_fake_engine(fake_vllm, tok):
    wm = vb.VLLMWeakModel(FakeLLM(), tok, WeakConfig())
    msgs = [chat("which letter?")]
    probs = wm.choice_probs(msgs, ["A", "B", "C"])[0]
    ctx = vb.to_prompts(tok, msgs, WeakConfig().max_prompt_tokens)[0]["prompt_token_ids"]
    want = [sum(fake_lp(t) for t in tok(c, add_special_tokens=False)["input_ids"]) for c in "ABC"]
    z = sum(math.exp(w) for w in want)
    assert probs == pytest.approx([math.exp(w) / z for w in want])
    assert len(ctx) > 1
    [(lp, ntok)] = wm.continuation_logprobs(msgs, ["It is "], ["B"])
    b_ids = tok("B", add_special_tokens=False)["input_ids"]
    assert ntok == len(b_ids) and lp == pytest.approx(sum(fake_lp(t) for t in b_ids))


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_weak_model_load_dispatches_to_vllm(tiny_model_dir):
    """`weak.backend=vllm` goes through the vLLM backend everywhere WeakModel.load is used (eval, feedback)."""
    from cowest.models.weak import WeakModel

    with pytest.raises(ModelError, match=r"pip install 'cowest\[vllm\]'"):
        WeakModel.load(WeakConfig(model=str(tiny_model_dir), backend="vllm"))
    with pytest.raises(ModelError, match="one LoRA adapter"):
        WeakModel.load(WeakConfig(model=str(tiny_model_dir), backend="vllm"), adapter=["a", "b"])
