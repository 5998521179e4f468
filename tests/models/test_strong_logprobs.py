"""Token log-probs through the strong client: asked for, parsed, cached under their own key."""

from __future__ import annotations

import math

from cowest.config import StrongConfig
from cowest.models.cache import cache_key
from cowest.models.strong import ChatRequest, StrongClient
from cowest.testing.openai_server import OpenAITestServer, logprobs_content

ALTS = {" B": {" B": 0.7, " C": 0.2, " A": 0.06, " D": 0.04}}


def responder(messages, body):
    text = "Thinking.\nAnswer: B"
    return {"content": text, "logprobs": logprobs_content(text, ALTS)}


def test_logprobs_are_requested_parsed_and_cached_apart(tmp_path):
    with OpenAITestServer(responder) as srv:
        cfg = StrongConfig(base_url=srv.base_url, model="m", api_key_env=None, max_retries=0)
        msgs = [{"role": "user", "content": "q"}]
        with StrongClient(cfg, cache_path=tmp_path / "c.sqlite", progress=False) as c:
            (r,) = c.chat_batch([ChatRequest(messages=msgs, top_logprobs=3)], tag="t")
            assert srv.bodies[-1]["logprobs"] is True and srv.bodies[-1]["top_logprobs"] == 3
            assert "".join(t["token"] for t in r.logprobs) == r.text == "Thinking.\nAnswer: B"
            last = r.logprobs[-1]
            assert last["token"] == " B" and math.isclose(last["logprob"], math.log(0.7))
            assert [t for t, _ in last["top"]] == [" B", " C", " A"]  # top 3 of 4, most likely first
            (again,) = c.chat_batch([ChatRequest(messages=msgs, top_logprobs=3)], tag="t")
            assert again.cached and again.logprobs == r.logprobs and srv.requests_total == 1
            # an answer cached without log-probs never stands in for one that needs them, nor the reverse
            (plain,) = c.chat_batch([ChatRequest(messages=msgs)], tag="t")
            assert not plain.cached and plain.logprobs is None and "logprobs" not in srv.bodies[-1]
            (five,) = c.chat_batch([ChatRequest(messages=msgs, top_logprobs=5)], tag="t")
            assert not five.cached and len(five.logprobs[-1]["top"]) == 4 and srv.requests_total == 3


def test_cache_keys_without_logprobs_are_unchanged():
    kw = dict(model="m", messages=[{"role": "user", "content": "q"}], temperature=0.0, max_tokens=8)
    assert cache_key(**kw) == cache_key(**kw, logprobs=None, top_logprobs=None)
    assert cache_key(**kw) != cache_key(**kw, logprobs=True, top_logprobs=10) != cache_key(**kw, logprobs=True,
                                                                                          top_logprobs=5)
