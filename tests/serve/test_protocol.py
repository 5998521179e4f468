"""The OpenAI chat-completions protocol as cowest serve speaks it: request checks and response bodies."""

import json

import pytest

from cowest.serve.protocol import ApiError, Reply, completion_body, parse_request, sse_chunks


def _req(**body):
    return parse_request(json.dumps({"model": "m", "messages": [{"role": "user", "content": "Q?"}], **body}).encode())


def test_a_valid_request_gives_the_last_user_question():
    r = _req(stop="END", temperature=0.2)
    assert r.question() == "Q?" and r.stop_list() == ["END"] and not r.cowest.return_draft
    parts = parse_request(json.dumps({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}).encode())
    assert parts.question() == "ab"


@pytest.mark.parametrize("raw, param", [
    (b"not json", None),
    (b"[]", None),
    (json.dumps({"model": "m", "messages": []}).encode(), "messages"),
    (json.dumps({"model": "m", "messages": [{"role": "user", "content": "q"}], "n": 2}).encode(), "n"),
    (json.dumps({"model": "m", "messages": [{"role": "user", "content": "q"}], "temperature": 3}).encode(),
     "temperature"),
    (json.dumps({"model": "m", "messages": [{"role": "user", "content": "q"}], "cowest": {"x": 1}}).encode(),
     "cowest.x"),
])
def test_bad_requests_are_400_naming_the_field(raw, param):
    with pytest.raises(ApiError) as e:
        parse_request(raw)
    assert e.value.status == 400 and e.value.param == param
    assert e.value.body()["error"]["type"] == "invalid_request_error"


def test_the_last_message_must_be_a_non_empty_user_turn():
    for messages in ([{"role": "assistant", "content": "hi"}], [{"role": "user", "content": "  "}]):
        req = parse_request(json.dumps({"model": "m", "messages": messages}).encode())
        with pytest.raises(ApiError, match="user"):
            req.question()


def test_bodies_carry_usage_and_the_draft_only_when_asked():
    reply = Reply(content="Answer: B", draft="d", weak_prompt_tokens=3, weak_completion_tokens=2,
                  strong_prompt_tokens=10, strong_completion_tokens=4, answer="B")
    body = completion_body(reply, "m", with_draft=False)
    assert body["choices"][0]["message"]["content"] == "Answer: B" and "cowest" not in body
    assert body["usage"] == {"prompt_tokens": 13, "completion_tokens": 6, "total_tokens": 19}
    assert completion_body(reply, "m", with_draft=True)["cowest"]["draft"] == "d"
    events = sse_chunks(reply, "m", with_draft=True, include_usage=True)
    assert events[-1] == b"data: [DONE]\n\n"
    data = [json.loads(e[len(b"data: "):]) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in data if c["choices"]) == "Answer: B"
    assert data[-1]["usage"]["total_tokens"] == 19 and data[2]["cowest"]["answer"] == "B"
