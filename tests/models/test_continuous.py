"""Continuous batching in the batch engine, on a tiny random Llama: late requests start at once, greedy answers
equal one-at-a-time generation, the KV budget holds, bad requests are 400s."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from cowest.config import WeakConfig
from cowest.models.batch_server import Engine, Job, Server, cut_at_stop, make_handler
from cowest.models.continuous import BadRequest, ContinuousEngine
from cowest.models.weak import WeakModel
from support.tiny import TEST_DEVICE

pytest.importorskip("transformers.generation.continuous_batching")


@pytest.fixture(scope="module")
def wm(tiny_model_dir) -> WeakModel:
    return WeakModel.load(WeakConfig(model=str(tiny_model_dir), dtype="float32", device=TEST_DEVICE))


def _prompt(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"question {i}: what is the answer for the patient " * (1 + i % 3)}]


def _job(i: int, max_tokens: int, **kw) -> Job:
    return Job({"messages": _prompt(i), "temperature": 0, "max_tokens": max_tokens, **kw})


def _engine(wm, **kw) -> ContinuousEngine:
    fallback = Engine(wm, max_batch=8, n_ctx=512, log=lambda s: None)
    threading.Thread(target=fallback.run_forever, daemon=True).start()
    args = dict(max_rows=4, kv_tokens=512, n_ctx=512, page_tokens=16, chunk_tokens=64, finish=cut_at_stop,
                fallback=fallback, log=lambda s: None)
    return ContinuousEngine(wm, **{**args, **kw}).start()


def test_greedy_answers_equal_one_at_a_time_generation(wm):
    eng = _engine(wm)
    try:
        futures = [eng.submit(_job(i, 24)) for i in range(6)]
        got = [f.result(60) for f in futures]
    finally:
        eng.stop()
    for i, r in enumerate(got):
        alone = wm.complete([_prompt(i)], max_new_tokens=24)[0]
        assert (r["text"], r["completion_tokens"], r["prompt_tokens"], r["finish_reason"]) == \
            (alone.text, alone.completion_tokens, alone.prompt_tokens, alone.finish_reason)
    assert eng.done == 6 and eng.generated == sum(r["completion_tokens"] for r in got)


def _late_request_order(engine) -> tuple[float, float]:
    """Submit a long request, then (once it runs) a short one: (long done at, short done at)."""
    done: dict[str, float] = {}
    long_job, short_job = _job(1, 400), _job(2, 2)
    long_job.future.add_done_callback(lambda f: done.setdefault("long", time.perf_counter()))
    short_job.future.add_done_callback(lambda f: done.setdefault("short", time.perf_counter()))
    engine.submit(long_job)
    time.sleep(0.3)  # the long one is decoding (400 tokens take several seconds on the tiny model)
    engine.submit(short_job)
    long_job.future.result(120)
    short_job.future.result(120)
    assert long_job.future.result()["completion_tokens"] == 400  # the tiny model does not stop early here
    return done["long"], done["short"]


def test_a_request_arriving_while_another_decodes_finishes_first(wm):
    eng = _engine(wm, max_rows=4)
    try:
        long_at, short_at = _late_request_order(eng)
    finally:
        eng.stop()
    assert short_at < long_at
    # the static loop, on the other hand, makes it wait for the running batch's longest answer
    static = Engine(wm, max_batch=8, n_ctx=512, log=lambda s: None)
    threading.Thread(target=static.run_forever, daemon=True).start()
    long_at, short_at = _late_request_order(static)
    assert short_at > long_at


def test_the_kv_budget_is_honoured(wm):
    eng = _engine(wm, kv_tokens=128, page_tokens=16)  # 8 pages; each request below needs 4-6
    try:
        futures = [eng.submit(_job(i, 20)) for i in range(6)]
        got = [f.result(120) for f in futures]  # they queue for pages, and all finish
        per_token = 2 * 2 * 4 * 16 * 4  # layers x (K, V) x heads x head dim x fp32 bytes
        assert 0 < eng.kv_cache_bytes() <= (128 + 2 * 16) * per_token  # the pool (+ transformers' 2 trash pages)
        with pytest.raises(BadRequest, match="exceed the KV cache budget of 128 tokens"):
            eng.submit(_job(0, 120))
    finally:
        eng.stop()
    for i, r in enumerate(got):
        assert r["text"] == wm.complete([_prompt(i)], max_new_tokens=20)[0].text


def _post(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _health(url: str) -> dict:
    with urllib.request.urlopen(url.replace("/v1/chat/completions", "/health"), timeout=10) as r:
        return json.loads(r.read())


def test_http_contract_bad_requests_are_400s(wm):
    eng = _engine(wm, kv_tokens=256)
    srv = Server(("127.0.0.1", 0), make_handler(eng, "tiny"))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/v1/chat/completions"
    try:
        ok = {"messages": _prompt(3), "max_tokens": 8, "temperature": 0, "stop": ["\n"]}
        status, body = _post(url, json.dumps(ok).encode())
        assert status == 200 and body["usage"]["completion_tokens"] <= 8
        assert "\n" not in body["choices"][0]["message"]["content"]
        status, body = _post(url, json.dumps({**ok, "temperature": 0.7}).encode())  # sampled: the static loop
        assert status == 200 and body["choices"][0]["finish_reason"] in ("stop", "length")
        for bad, msg in [(b"{not json", "malformed request"), (b"[]", "must be a JSON object"),
                         (json.dumps({"messages": []}).encode(), "'messages' must be a non-empty list"),
                         (json.dumps({**ok, "max_tokens": 300}).encode(), "KV cache budget of 256 tokens"),
                         (json.dumps({**ok, "max_tokens": 600}).encode(), "exceed the context of 512 tokens")]:
            status, body = _post(url, bad)
            assert status == 400 and msg in body["error"]["message"], (bad, body)
        health = _health(url)
        assert health["scheduler"] == "continuous" and health["answered"] == 1 and health["kv_tokens"] == 256
    finally:
        srv.shutdown()
        srv.server_close()
        eng.stop()


def test_a_shared_prompt_prefix_is_computed_once(wm):
    eng = _engine(wm, page_tokens=16)
    shared = "the patient doctor disease drug dose symptom treatment " * 6
    jobs = [Job({"messages": [{"role": "user", "content": shared + q}], "temperature": 0, "max_tokens": 6})
            for q in ("question one", "question two")]
    try:
        first = eng.submit(jobs[0]).result(60)
        second = eng.submit(jobs[1]).result(60)  # after the first: its full pages are in the cache
    finally:
        eng.stop()
    assert eng.reused_total >= 48 and eng.reused_total % 16 == 0  # whole pages of the ~70 shared tokens
    for job, got in zip(jobs, (first, second)):
        assert got["text"] == wm.complete([job.messages], max_new_tokens=6)[0].text


def _wait(cond, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


def test_a_request_whose_client_leaves_is_dropped_not_finished(wm):
    """A client that times out and retries must not leave its first request running beside the retry."""
    import socket

    logs: list[str] = []
    # 5 ms a step: 400 tokens outlast the handler's 1 s poll on any machine (unslowed, a fast CPU or a GPU finished
    # them before the poll saw the client leave)
    slow = wm.model.register_forward_pre_hook(lambda module, args: time.sleep(0.005))
    eng = _engine(wm, log=logs.append)
    srv = Server(("127.0.0.1", 0), make_handler(eng, "tiny"))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    try:
        body = json.dumps({"messages": _prompt(1), "max_tokens": 400, "temperature": 0}).encode()
        conn = socket.create_connection(("127.0.0.1", port))
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        assert _wait(lambda: _health(url)["running"] == 1)
        conn.close()  # the client gives up (400 tokens take several seconds on the tiny model)
        assert _wait(lambda: _health(url)["running"] == 0)
        health = _health(url)
        assert health["dropped"] == 1 and health["answered"] == 0
        assert any("dropped after" in line and "its client left" in line for line in logs)
        status, ok = _post(url, json.dumps({"messages": _prompt(2), "max_tokens": 8, "temperature": 0}).encode())
        assert status == 200 and _health(url)["answered"] == 1  # the engine goes on serving
        assert ok["choices"][0]["message"]["content"] == wm.complete([_prompt(2)], max_new_tokens=8)[0].text
    finally:
        slow.remove()
        srv.shutdown()
        srv.server_close()
        eng.stop()


def test_the_static_loop_skips_a_request_whose_client_left_before_it_started(wm):
    static = Engine(wm, max_batch=8, n_ctx=512, log=lambda s: None)
    gone, kept = _job(1, 4), _job(2, 4)
    static.cancel(gone)
    static.run([gone, kept], 0.0, 1.0, 4)
    assert kept.future.done() and not gone.future.done()


@pytest.mark.parametrize("where", ["continuous", "static"])
def test_token_log_probs_equal_a_full_forward_pass(wm, where, monkeypatch):
    """Both schedulers: the continuous manager's steps (recorded, rows matched to requests) and the static loop's
    (the fallback, where the manager's internals are not as expected)."""
    if where == "static":
        from cowest.models import continuous

        monkeypatch.setattr(continuous, "attach_logprobs", lambda *a: False)
    eng = _engine(wm)
    try:
        # several at once, of different lengths and with a plain request among them: rows must not mix up
        futures = [eng.submit(_job(i, 10, logprobs=True, top_logprobs=3)) for i in range(3)]
        plain_f = eng.submit(_job(1, 10))
        answers, plain = [f.result(60) for f in futures], plain_f.result(60)
    finally:
        eng.stop()
    assert eng.done == (4 if where == "continuous" else 1) and eng.logprobs_here == (where == "continuous")
    assert not eng.logprobs.steps and not eng.want_logprobs  # nothing left behind
    assert (answers[1]["text"], answers[1]["completion_tokens"]) == (plain["text"], plain["completion_tokens"])
    assert plain["logprobs"] is None
    for i, r in enumerate(answers):
        alone = wm.complete([_prompt(i)], max_new_tokens=10)[0].text
        assert r["text"] == alone
        _check_against_teacher_forcing(wm, _prompt(i), r)


def test_the_static_loop_answers_right_while_the_manager_decodes(wm, monkeypatch):
    """The two schedulers share the model's weights: static-loop answers computed while manager requests decode
    must equal the answers alone (without one forward at a time they came out wrong every time)."""
    from cowest.models import continuous

    monkeypatch.setattr(continuous, "attach_logprobs", lambda *a: False)  # log-prob requests: the static loop's
    want = [wm.complete([_prompt(i)], max_new_tokens=10)[0].text for i in range(3)]
    eng = _engine(wm)
    try:
        for _ in range(3):
            busy = [eng.submit(_job(i % 3, 60)) for i in range(4)]  # decoding in the manager meanwhile
            static = [eng.submit(_job(i, 10, logprobs=True)) for i in range(3)]
            got = [f.result(60)["text"] for f in static]
            for f in busy:
                f.result(60)
            assert got == want
    finally:
        eng.stop()
    assert eng.done == 12 and eng.fallback.batches >= 1


def _check_against_teacher_forcing(wm, prompt_messages, got):
    """The answer's log-probs and top 3 equal those of one forward pass over prompt + answer."""
    import torch

    lps = got["logprobs"]
    kept = got["completion_tokens"] - (got["finish_reason"] == "stop")  # the end-of-sequence token is not returned
    assert len(lps) == kept and "".join(t["token"] for t in lps) == got["text"]
    prompt = wm._encode_prompts([prompt_messages])[0]
    # the greedy answer's token ids (its text may tokenize otherwise: the tiny model's weights are random)
    row = wm._decode([prompt], n=1, temperature=0.0, top_p=1.0, max_new_tokens=len(lps), generator=None)[0]
    answer = row[:kept]
    assert wm.tokenizer.decode(answer, skip_special_tokens=True) == got["text"]
    with torch.inference_mode():
        logits = wm.model(torch.tensor([prompt + answer], device=wm.device)).logits[0].float()
    logp = torch.log_softmax(logits[len(prompt) - 1: len(prompt) - 1 + len(answer)], dim=-1)
    want = logp.gather(1, torch.tensor(answer, device=logp.device)[:, None]).squeeze(1).tolist()
    assert [t["logprob"] for t in lps] == pytest.approx(want, abs=1e-4)
    for t, row in zip(lps, logp):
        vals, idx = row.topk(3)
        assert [v for _, v in t["top"]] == pytest.approx(vals.tolist(), abs=1e-4)
        assert [s for s, _ in t["top"]] == [wm.tokenizer.decode([i]) for i in idx.tolist()]
        assert t["logprob"] == pytest.approx(t["top"][0][1], abs=1e-5)  # greedy: the chosen token is the top one


@pytest.mark.parametrize("body, message", [
    ({"top_logprobs": 3}, "top_logprobs needs logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "between 0 and 20"),
])
def test_bad_log_prob_settings_are_refused(body, message):
    with pytest.raises(BadRequest, match=message):
        _job(0, 4, **body)
