"""`cowest serve` behind the confidence gate, over real loopback HTTP: a draft that passes is the answer (no
strong call), the rest collaborate; every response says which route it took, with usage and cost."""

from __future__ import annotations

import json

import pytest

from cowest.errors import ConfigError
from cowest.inference.gate import Gate
from cowest.inference.prompts import weak_messages
from cowest.tasks.base import Example
from cowest.tasks.demo import DemoTask

from .conftest import serve_config
from .test_app import ask, client

Q = "Which team owns the Zephyr drone?"


def test_a_confident_draft_is_answered_by_the_weak_model_alone(served, weak_model):
    st, srv, _ = served(gate=Gate("seq_logprob", -1e9, 0.5, "sft"))  # every draft passes
    resp = ask(client(st), Q)
    assert srv.bodies == []  # no strong call
    extra = resp.model_extra["cowest"]
    assert extra["route"] == "weak" and extra["score"] == "seq_logprob" and "draft" not in extra
    msgs = weak_messages(DemoTask(), Example(id="x", question=Q, gold=[]), "cot")
    draft = weak_model.generate([msgs], n=1, temperature=0.0, max_new_tokens=8)[0][0]
    assert resp.choices[0].message.content == draft
    (lp, ntok), = weak_model.continuation_logprobs([msgs], [""], [draft])
    assert extra["confidence"] == pytest.approx(lp / ntok)  # the draft's mean token log-prob
    assert extra["usage"]["strong"] == {"prompt_tokens": 0, "completion_tokens": 0} and extra["cost_usd"] == 0.0
    assert resp.usage.completion_tokens == extra["usage"]["weak"]["completion_tokens"] > 0


def test_an_unsure_draft_collaborates_and_its_cost_is_reported(served):
    st, srv, _ = served(gate=Gate("seq_logprob", 1e9, 0.5, "sft"),  # no draft passes
                        overrides=("strong.price_prompt_per_1k=2.0", "strong.price_completion_per_1k=10.0"))
    resp = ask(client(st), Q, extra_body={"cowest": {"return_draft": True}})
    assert len(srv.bodies) == 1
    extra = resp.model_extra["cowest"]
    assert extra["route"] == "strong" and isinstance(extra["draft"], str) and extra["confidence"] < 0
    s = extra["usage"]["strong"]
    assert s["prompt_tokens"] > 0
    assert extra["cost_usd"] == pytest.approx((2.0 * s["prompt_tokens"] + 10.0 * s["completion_tokens"]) / 1000)


def test_a_draft_without_an_answer_always_collaborates(served):
    # answer_prob needs a parsed answer; the tiny random model's 8-token drafts have none
    st, srv, _ = served(gate=Gate("answer_prob", 0.0, 0.5, "sft"))
    resp = ask(client(st), Q)
    extra = resp.model_extra["cowest"]
    assert extra["route"] == "strong" and extra["confidence"] is None and len(srv.bodies) == 1


def test_streamed_responses_say_the_route(served):
    st, srv, _ = served(gate=Gate("seq_logprob", -1e9, 0.5, "sft"))
    chunks = list(client(st).chat.completions.create(model="served", messages=[{"role": "user", "content": Q}],
                                                     stream=True))
    routes = [(ch.model_extra or {}).get("cowest", {}).get("route") for ch in chunks]
    assert "weak" in routes and srv.bodies == []


def test_serving_gate_needs_a_calibrated_gate_for_the_served_model(tiny_model_dir, tmp_path):
    from cowest.serve.weak import serving_gate

    cfg = serve_config(tiny_model_dir, tmp_path, "serve.gate=true")
    with pytest.raises(ConfigError, match="cowest calibrate"):
        serving_gate(cfg, use_task=True)
    gate_json = cfg.run_dir / "gate" / "gate.json"
    gate_json.parent.mkdir(parents=True)
    gate_json.write_text(json.dumps({"score": "agreement", "threshold": 0.5, "strong_share": 0.3, "model": "aligned"}))
    with pytest.raises(ConfigError, match="calibrated on the aligned model but this run serves the sft"):
        serving_gate(cfg, use_task=True)
    gate_json.write_text(json.dumps({"score": "agreement", "threshold": 0.5, "strong_share": 0.3, "model": "sft"}))
    with pytest.raises(ConfigError, match="task's prompts"):
        serving_gate(cfg, use_task=False)
    assert serving_gate(cfg, use_task=True) == Gate("agreement", 0.5, 0.3, "sft")
