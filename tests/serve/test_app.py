"""The served collaboration over real loopback HTTP, driven by the official openai client."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time

import httpx
import openai
import pytest
from openai import OpenAI

from .conftest import MODEL


def client(st, key: str = "unused", **kw) -> OpenAI:
    return OpenAI(base_url=st.base_url, api_key=key, max_retries=0, timeout=60, **kw)


def ask(c: OpenAI, text: str, **kw):
    return c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}], **kw)


def strong_user_text(body: dict) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


def test_completion_is_the_strong_refinement_of_the_weak_draft(served, weak_model):
    st, srv, _ = served()
    resp = ask(client(st), "Which team owns the Zephyr drone?", extra_body={"cowest": {"return_draft": True}})
    assert resp.object == "chat.completion" and resp.model == MODEL
    assert len(srv.bodies) == 1
    body = srv.bodies[0]
    seen = strong_user_text(body)
    # the strong model got the question inside the task's prompt, and the draft, and answered with that
    assert "Which team owns the Zephyr drone?" in seen and "Acme Robotics" in seen
    extra = resp.model_extra["cowest"]
    assert f"<draft>\n{extra['draft'].strip()}\n</draft>" in seen
    assert resp.choices[0].message.content == srv.responder(body["messages"], body)
    assert resp.choices[0].finish_reason == "stop"
    # usage = weak + strong; the strong part is what the strong server reported (its word counts)
    strong_prompt = sum(len(m["content"].split()) for m in body["messages"])
    strong_completion = len(resp.choices[0].message.content.split())
    u = extra["usage"]
    assert u["strong"] == {"prompt_tokens": strong_prompt, "completion_tokens": strong_completion}
    assert u["weak"]["prompt_tokens"] > 20 and u["weak"]["completion_tokens"] >= 1
    assert resp.usage.prompt_tokens == strong_prompt + u["weak"]["prompt_tokens"]
    assert resp.usage.completion_tokens == strong_completion + u["weak"]["completion_tokens"]
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    # the draft is exactly the weak model's greedy draft for the same prompt
    from cowest.inference.prompts import weak_messages
    from cowest.tasks.base import Example
    from cowest.tasks.demo import DemoTask

    msgs = weak_messages(DemoTask(), Example(id="x", question="Which team owns the Zephyr drone?", gold=[]), "cot")
    assert extra["draft"] == weak_model.generate([msgs], n=1, temperature=0.0, max_new_tokens=8)[0][0]


def test_draft_only_when_asked_or_configured(served):
    st, _, _ = served()
    assert "cowest" not in (ask(client(st), "hello").model_extra or {})
    st2, _, _ = served(show_draft=True)
    assert isinstance(ask(client(st2), "hello").model_extra["cowest"]["draft"], str)


def test_generic_prompt_when_no_task(served):
    st, srv, _ = served(use_task=False)
    ask(client(st), "What is 2+2?")
    seen = strong_user_text(srv.bodies[0])
    assert seen.startswith("Answer the user's question or request.")
    assert "Question:\nWhat is 2+2?\n\n<draft>" in seen
    assert "Acme Robotics" not in seen


def test_eight_concurrent_requests_all_succeed_and_strong_calls_overlap(served):
    st, srv, app = served(latency_s=0.5, max_concurrency=8)
    c = client(st)
    questions = [f"Question number {i} about the Zephyr drone?" for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        resps = list(ex.map(lambda q: ask(c, q, extra_body={"cowest": {"return_draft": True}}), questions))
    assert len(srv.bodies) == 8
    seen = {strong_user_text(b) for b in srv.bodies}
    for q, r in zip(questions, resps):
        draft = r.model_extra["cowest"]["draft"]
        # the strong request for this question carried this response's draft
        assert any(q in s and f"<draft>\n{draft.strip()}\n</draft>" in s for s in seen), q
        assert r.choices[0].message.content.endswith("Answer: A")
    assert srv.max_in_flight >= 2  # strong calls ran concurrently, not one after another
    assert sum(app.state.collab.batcher.batches) == 8  # every draft went through the one weak worker


def test_bad_or_missing_key_is_401_openai_style(served):
    st, srv, _ = served(api_key="s3cret-key")
    with pytest.raises(openai.AuthenticationError) as e:
        ask(client(st, key="wrong"), "hi")
    assert e.value.status_code == 401
    assert e.value.body["type"] == "authentication_error" and "s3cret" not in json.dumps(e.value.body)
    r = httpx.post(st.base_url + "/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client(st, key="wrong").models.list()
    assert srv.requests_total == 0  # nothing reached the strong model
    assert ask(client(st, key="s3cret-key"), "hi").choices[0].message.content


def test_oversize_body_is_413(served):
    st, srv, _ = served(max_body_bytes=2000)
    with pytest.raises(openai.APIStatusError) as e:
        ask(client(st), "x" * 5000)
    assert e.value.status_code == 413 and e.value.body["code"] == "request_too_large"

    def chunks():  # no Content-Length: the limit must hold while streaming the body in
        yield b'{"model": "served", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 500
        yield b'"}]}'

    r = httpx.post(st.base_url + "/chat/completions", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"
    assert srv.requests_total == 0
    assert ask(client(st), "short").choices[0].message.content  # a small one still passes


def test_models_lists_the_served_model_and_health(served):
    st, _, _ = served()
    ids = [m.id for m in client(st).models.list()]
    assert ids == [MODEL]
    h = httpx.get(st.base_url.removesuffix("/v1") + "/health").json()
    assert h["status"] == "ok" and h["model"] == MODEL


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": MODEL, "messages": []}, "messages"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "n": 2}, "n"),
        ({"model": MODEL, "messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": 7}, "temperature"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "cowest": {"return_drafts": True}},
         "cowest.return_drafts"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
    ],
)
def test_invalid_requests_are_400_naming_the_field(served, body, param):
    st, srv, _ = served()
    r = httpx.post(st.base_url + "/chat/completions", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param, err
    assert srv.requests_total == 0


def test_malformed_json_wrong_model_and_unknown_route(served):
    st, _, _ = served()
    r = httpx.post(st.base_url + "/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError):
        client(st).chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    assert httpx.get(st.base_url + "/nope").json()["error"]["message"].startswith("no route")
    with pytest.raises(openai.BadRequestError):  # the openai client's own validation error path
        ask(client(st), "hi", n=3)


def test_beyond_the_queue_is_429(served):
    st, srv, _ = served(latency_s=1.5, max_concurrency=1, max_queue=0)
    c = client(st)
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        first = ex.submit(ask, c, "first")
        deadline = time.monotonic() + 30
        while srv.requests_total < 1:  # the first is inside, waiting on the strong model
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with pytest.raises(openai.RateLimitError) as e:
            ask(c, "second")
        assert e.value.response.headers.get("retry-after") == "1"
        assert first.result().choices[0].message.content
    assert srv.requests_total == 1
    assert ask(c, "third").choices[0].message.content  # free again


def test_streaming_returns_openai_chunks(served):
    st, _, _ = served()
    stream = ask(client(st), "hello", stream=True, stream_options={"include_usage": True},
                 extra_body={"cowest": {"return_draft": True}})
    chunks = list(stream)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text.endswith("Answer: A")
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
    assert chunks[-1].usage.total_tokens > 0
    assert any("draft" in (ch.model_extra or {}).get("cowest", {}) for ch in chunks)


def test_strong_failure_is_502(served):
    st, _, _ = served(faults=["400"])
    with pytest.raises(openai.APIStatusError) as e:
        ask(client(st), "hello")
    assert e.value.status_code == 502 and e.value.body["type"] == "upstream_error"


def test_shutdown_waits_for_in_flight_requests_then_runs_cleanup(served):
    events: list[tuple[str, float]] = []
    st, srv, _ = served(latency_s=1.0, on_shutdown=[lambda: events.append(("cleanup", time.monotonic()))])
    out = {}

    def call():
        out["resp"] = ask(client(st), "slow one")
        events.append(("response", time.monotonic()))

    t = threading.Thread(target=call)
    t.start()
    deadline = time.monotonic() + 30
    while srv.requests_total < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    st.stop()  # as on SIGTERM: uvicorn's should_exit
    t.join(timeout=30)
    assert out["resp"].choices[0].message.content.endswith("Answer: A")
    assert [name for name, _ in sorted(events, key=lambda e: e[1])] == ["response", "cleanup"]
