"""What ``strong.local.engine=auto`` means on this machine, decided from the CPU's flags.

    engine, why = engine_decision(cpu_flags(), llama_cpp_installed=True)   # cowest env prints both
"""

from __future__ import annotations

import importlib.util


def engine_decision(flags: frozenset[str], *, llama_cpp_installed: bool) -> tuple[str, str]:
    """(engine, why) for ``strong.local.engine=auto``: llama.cpp wherever it is installed; with
    ``strong.local.parallel`` > 1 (the default) it decodes the requests in flight together
    (:mod:`cowest.models.llama_batch`), in the least memory. On Zen 4 (avx512_bf16) that answered 1.6-1.9x the
    one-slot server's calls/s on feedback prompts (2.4-2.7x on chain of thought), against the batch engine's 1.6x at
    2.5x the memory (bench/RESULTS.md,
    "llama.cpp with many requests at once"). On a CPU with AMX the batch engine answered 2.6-3.8x the one-slot
    server's calls/s in bf16 (matmuls on the AMX tiles; llama.cpp's AMX kernels stay off), at 2.1x its memory
    ("On an Intel Xeon with AMX"); llama.cpp batched was not measured there. ``why`` names the batch engine on both,
    for the user to choose."""
    if not llama_cpp_installed:
        return "batch", "llama-cpp-python is not installed (the [local] extra)"
    if "amx_bf16" in flags:
        return "llama.cpp", ("installed; on this AMX CPU strong.local.engine=batch answered 2.6-3.8x the one-slot llama.cpp "
                             "server's calls/s at 2.1x the memory (1.4x with strong.local.dtype=int8), with answers that "
                             "vary run to run; llama.cpp with many requests at once was not measured on AMX")
    if "avx512_bf16" in flags:
        return "llama.cpp", ("installed; on Zen 4, with many requests at once, it answered 1.6-1.9x its one-slot calls/s "
                             "on feedback prompts and 2.4-2.7x on chain of thought; strong.local.engine=batch 1.6x on "
                             "feedback prompts at 2.5x the memory")
    return "llama.cpp", "installed; the batch engine runs fp32 on CPUs without native bf16, not measured faster"


def resolve_engine(engine: str) -> str:
    """The engine ``strong.local.engine`` names; ``auto``: see :func:`engine_decision`."""
    if engine != "auto":
        return engine
    from cowest.models.cpu import cpu_flags

    return engine_decision(cpu_flags(), llama_cpp_installed=importlib.util.find_spec("llama_cpp") is not None)[0]
