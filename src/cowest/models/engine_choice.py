"""What ``strong.local.engine=auto`` means on this machine, decided from the CPU's flags.

    engine, why = engine_decision(cpu_flags(), llama_cpp_installed=True)   # cowest env prints both
"""

from __future__ import annotations

import importlib.util


def engine_decision(flags: frozenset[str], *, llama_cpp_installed: bool) -> tuple[str, str]:
    """(engine, why) for ``strong.local.engine=auto``: llama.cpp wherever it is installed. Its answers repeat run
    to run, and it needs the least memory. On a CPU with AMX the batch engine
    answered 2.6-3.8x its calls/s in bf16 and 1.9-3.4x in int8 (matmuls on the AMX tiles; llama.cpp's AMX kernels
    stay off), at 2.1x the memory in bf16 or 1.4x in int8 (``strong.local.dtype=int8``), and its answers agreed less
    with llama.cpp's in int8 (bench/RESULTS.md, "On an Intel Xeon with AMX", "int8 linears" and "Where the batch
    engine's time goes"); on Zen 4 (avx512_bf16) 1.6x in bf16 and 0.9x in int8 ("The strong engines on Zen 4");
    ``why`` says so on both, for the user to choose."""
    if not llama_cpp_installed:
        return "batch", "llama-cpp-python is not installed (the [local] extra)"
    if "amx_bf16" in flags:
        return "llama.cpp", ("installed; on this AMX CPU strong.local.engine=batch answers 2.6-3.8x the calls/s at 2.1x "
                             "the memory (1.4x with strong.local.dtype=int8), with answers that vary run to run")
    if "avx512_bf16" in flags:
        return "llama.cpp", ("installed; on this bf16 CPU strong.local.engine=batch answered 1.6x the calls/s on "
                             "feedback prompts (Zen 4) at 2.1x the memory, with answers that vary run to run")
    return "llama.cpp", "installed; the batch engine runs fp32 on CPUs without native bf16, not measured faster"


def resolve_engine(engine: str) -> str:
    """The engine ``strong.local.engine`` names; ``auto``: see :func:`engine_decision`."""
    if engine != "auto":
        return engine
    from cowest.models.cpu import cpu_flags

    return engine_decision(cpu_flags(), llama_cpp_installed=importlib.util.find_spec("llama_cpp") is not None)[0]
