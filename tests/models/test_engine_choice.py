"""What strong.local.engine=auto picks, from the CPU's flags, the [local] extra and the stage's need for log-probs."""

from __future__ import annotations

import pytest

from cowest.models.engine_choice import engine_decision


@pytest.mark.parametrize("flags, installed, logprobs, engine", [
    # Sapphire Rapids
    ({"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}, True, False, "llama.cpp"),
    ({"avx2", "avx512f", "avx512_bf16"}, True, False, "llama.cpp"),  # Zen 4
    ({"avx2"}, True, False, "llama.cpp"),
    ({"avx2", "amx_tile", "amx_bf16"}, True, True, "llama.cpp"),  # log-probs: only llama.cpp returns them
    ({"avx2"}, False, False, "batch"),  # no [local] extra
    ({"avx2"}, False, True, "batch"),  # ... then make_server names the missing log-probs
])
def test_auto_engine_follows_the_extra_and_log_probs_and_names_batch_on_amx(flags, installed, logprobs, engine):
    got, why = engine_decision(frozenset(flags), llama_cpp_installed=installed, logprobs=logprobs)
    assert got == engine and why
    # on native bf16 (AMX, Zen 4), where the batch engine is the faster one, the reason names it for the user, and its
    # int8 setting on AMX only (slower than bf16 on Zen 4)
    bf16 = bool({"amx_bf16", "avx512_bf16"} & set(flags)) and installed and not logprobs
    on_amx = "amx_bf16" in flags and installed and not logprobs
    assert ("strong.local.engine=batch" in why) == bf16 and ("strong.local.dtype=int8" in why) == on_amx
