"""What strong.local.engine=auto picks, from the CPU's flags and the [local] extra."""

from __future__ import annotations

import pytest

from cowest.models.engine_choice import engine_decision


@pytest.mark.parametrize("flags, installed, engine", [
    # Sapphire Rapids
    ({"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}, True, "llama.cpp"),
    ({"avx2", "avx512f", "avx512_bf16"}, True, "llama.cpp"),  # Zen 4
    ({"avx2"}, True, "llama.cpp"),
    ({"avx2"}, False, "batch"),  # no [local] extra
])
def test_auto_engine_follows_the_extra_and_names_batch_on_bf16_cpus(flags, installed, engine):
    got, why = engine_decision(frozenset(flags), llama_cpp_installed=installed)
    assert got == engine and why
    # on native bf16 (AMX, Zen 4), where the batch engine is the faster one, the reason names it for the user, and its
    # int8 setting on AMX only (slower than bf16 on Zen 4)
    bf16 = bool({"amx_bf16", "avx512_bf16"} & set(flags)) and installed
    on_amx = "amx_bf16" in flags and installed
    assert ("strong.local.engine=batch" in why) == bf16 and ("strong.local.dtype=int8" in why) == on_amx
