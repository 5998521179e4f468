"""The OpenAI chat-completions wire format: request validation, responses, SSE chunks, error bodies.

Only what a collaboration can honour is accepted: one choice (``n`` = 1), text content, no tools.
Unknown fields (``presence_penalty``, ``user``, ...) are ignored, as OpenAI-compatible servers do, so
ordinary clients work unchanged. cowest's own options ride in an extra ``cowest`` object::

    {"model": "...", "messages": [...], "cowest": {"return_draft": true}}

A response's ``cowest`` object (when the draft is asked for, and always when the server gates): the draft,
the parsed answer, weak and strong token usage, the strong call's cost, and behind a gate the ``route``
(``weak``: the draft answered alone, no strong call; ``strong``: collaborated) and the draft's ``confidence``.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ApiError(Exception):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}`` with ``status``."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[_ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            for p in self.content:
                if p.type != "text" or p.text is None:
                    raise ApiError(400, f"content parts of type {p.type!r} are not supported; send text",
                                   param="messages")
            return "".join(p.text or "" for p in self.content)
        return self.content or ""


class CowestOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo here is the user's own option: say so
    return_draft: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    tools: list[Any] | None = None
    cowest: CowestOptions = Field(default_factory=CowestOptions)

    @field_validator("n")
    @classmethod
    def _one_choice(cls, v: int) -> int:
        if v != 1:
            raise ValueError("only n=1 is supported (one collaboration per request)")
        return v

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, v: list[Any] | None) -> list[Any] | None:
        if v:
            raise ValueError("tools are not supported by a cowest collaboration")
        return v

    def question(self) -> str:
        """The text of the last message, which must be the user's."""
        last = self.messages[-1]
        if last.role != "user":
            raise ApiError(400, f"the last message must have role 'user', got {last.role!r}", param="messages")
        text = last.text().strip()
        if not text:
            raise ApiError(400, "the last user message is empty", param="messages")
        return text

    def stop_list(self) -> list[str] | None:
        return [self.stop] if isinstance(self.stop, str) else self.stop


def parse_request(raw: bytes) -> ChatCompletionRequest:
    """Validate a request body; every problem becomes a 400 naming the offending field."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise ApiError(400, "request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        param = ".".join(str(p) for p in err.get("loc", ())) or None
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        raise ApiError(400, f"{param}: {msg}" if param else msg, param=param) from None


@dataclass
class Reply:
    """One finished collaboration: the final answer plus what produced it."""

    content: str
    draft: str
    weak_prompt_tokens: int
    weak_completion_tokens: int
    strong_prompt_tokens: int
    strong_completion_tokens: int
    answer: str | None = None  # the task's parsed answer, when serving a task
    route: str | None = None  # with a gate: "weak" (the draft answered alone) | "strong" (collaborated); else None
    confidence: float | None = None  # the gate's score of the draft
    score: str | None = None  # which score the gate uses
    cost_usd: float = 0.0  # the strong call's price (strong.price_*_per_1k)

    def usage(self) -> dict[str, int]:
        p = self.weak_prompt_tokens + self.strong_prompt_tokens
        c = self.weak_completion_tokens + self.strong_completion_tokens
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    def cowest(self, with_draft: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"draft": self.draft} if with_draft else {}
        out.update({
            "answer": self.answer,
            "usage": {
                "weak": {"prompt_tokens": self.weak_prompt_tokens, "completion_tokens": self.weak_completion_tokens},
                "strong": {"prompt_tokens": self.strong_prompt_tokens,
                           "completion_tokens": self.strong_completion_tokens},
            },
            "cost_usd": self.cost_usd,
        })
        if self.route is not None:
            out.update(route=self.route, confidence=self.confidence, score=self.score)
        return out

    def shows_cowest(self, with_draft: bool) -> bool:
        """The response carries the ``cowest`` object: when the draft is asked for, and always behind a gate
        (the client learns whether the strong model answered)."""
        return with_draft or self.route is not None


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def completion_body(reply: Reply, model: str, *, with_draft: bool, id_: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": id_ or new_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.content},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": reply.usage(),
    }
    if reply.shows_cowest(with_draft):
        body["cowest"] = reply.cowest(with_draft)
    return body


def sse_chunks(reply: Reply, model: str, *, with_draft: bool, include_usage: bool) -> list[bytes]:
    """The answer as OpenAI-style stream events. The strong model is not streamed, so the text arrives
    in one content chunk once the collaboration has finished."""
    id_, created = new_id(), int(time.time())

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        data = {"id": id_, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": choices, **extra}
        return f"data: {json.dumps(data)}\n\n".encode()

    out = [
        chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]),
        chunk([{"index": 0, "delta": {"content": reply.content}, "logprobs": None, "finish_reason": None}]),
        chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
              **({"cowest": reply.cowest(with_draft)} if reply.shows_cowest(with_draft) else {})),
    ]
    if include_usage:
        out.append(chunk([], usage=reply.usage()))
    out.append(b"data: [DONE]\n\n")
    return out
