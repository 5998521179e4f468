"""llama_cpp.server's handling reproduced (cowest.models.llama_compat): its defaults, repeat penalty and sampling."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from cowest.models.llama_compat import MIN_P, REPEAT_PENALTY, TOP_K, draw, penalized

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed")


def test_the_repeat_penalty_is_llama_cpp_s():
    x = np.array([2.2, -1.0, 3.0, 0.5], dtype=np.float32)
    z = penalized(x, [0, 1, 0], 1.1)  # each recent token once, however often it came
    assert np.allclose(z, [2.0, -1.1, 3.0, 0.5]) and x[0] == np.float32(2.2)  # the logits buffer is not written
    assert penalized(x, [0], 1.0) is x and penalized(x, [], 1.1) is x


def test_sampling_keeps_llama_cpp_s_top_k_top_p_and_min_p():
    rng = np.random.default_rng(0)
    z = np.zeros(100, dtype=np.float32)
    z[7] = 10.0  # every other token below min-p of the top one
    assert {draw(z, 1.0, 1.0, rng) for _ in range(50)} == {7}
    z = np.linspace(0, 1, 100).astype(np.float32)  # nearly flat: top-k 40 bounds the draws
    assert {draw(z, 1.0, 1.0, rng) for _ in range(400)} <= set(range(60, 100))
    assert {draw(z, 1.0, 0.001, rng) for _ in range(20)} == {99}  # top-p: the first token alone reaches it
    z = np.array([1.0, 1.0 + np.log(MIN_P) - 0.01, 0.5], dtype=np.float32)
    assert {draw(z, 2.0, 1.0, rng) for _ in range(200)} == {0, 2}


def test_the_defaults_are_llama_cpp_server_s():
    # the one-slot server's answers share the cache name: the same decoding defaults
    from llama_cpp.server import types

    assert (REPEAT_PENALTY, TOP_K, MIN_P) == (types.repeat_penalty_field.default, types.top_k_field.default,
                                              types.min_p_field.default)
