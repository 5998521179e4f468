"""The batch engine's token log-probs in OpenAI's wire format, and cut where a stop string cut the answer."""

from __future__ import annotations

import math

from cowest.models.batch_server import cut_at_stop
from cowest.models.token_logprobs import cut_to_text, openai_logprobs
from cowest.models.transport import parse_logprobs
from cowest.models.weak import Completion

TOKENS = [{"token": "The", "logprob": -0.1, "top": [["The", -0.1], ["A", -2.4]]},
          {"token": " answer", "logprob": -0.2, "top": [[" answer", -0.2]]},
          {"token": " is", "logprob": -0.3, "top": []},
          {"token": " B", "logprob": -0.05, "top": [[" B", -0.05], [" C", -3.0]]},
          {"token": ".\n", "logprob": -0.5, "top": [[".\n", -0.5]]}]


def test_the_wire_format_reads_back_as_the_client_reads_llama_cpp_and_openai():
    wire = openai_logprobs(TOKENS)
    assert wire["content"][3]["bytes"] == list(b" B")
    assert parse_logprobs(wire) == TOKENS
    assert openai_logprobs(None) is None


def test_a_stop_string_cuts_the_log_probs_with_the_text():
    c = Completion("The answer is B.\n", 12, 6, "stop", TOKENS)
    cut = cut_at_stop(c, [" is"])
    assert cut["text"] == "The answer" and [t["token"] for t in cut["logprobs"]] == ["The", " answer"]
    assert cut["completion_tokens"] == 6  # generated all the same
    assert cut_at_stop(c, [])["logprobs"] == TOKENS
    assert cut_to_text(TOKENS, 0) == [] and cut_to_text(TOKENS, 11) == TOKENS[:3]
    # tokens that straddle the cut stay (the stop string starts inside them)
    assert [t["token"] for t in cut_to_text(TOKENS, 5)] == ["The", " answer"]
    assert math.isclose(sum(t["logprob"] for t in cut_to_text(TOKENS, 14)), -0.65)
