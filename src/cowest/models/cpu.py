"""What the CPU can run: the instruction-set features that decide cowest's numeric paths.

    cpu_flags()            -> {"avx2", "avx512f", "amx_tile", ...}   (Linux /proc/cpuinfo; empty elsewhere)
    cpu_summary()          -> {"model": ..., "avx2": True, "avx512": True, "avx512_bf16": True, "amx": False}
    cpu_has_native_bf16()  -> whether bf16 matmuls run in hardware (weak.dtype=auto picks bf16 then)
    physical_cores()       -> cores this process may run on, hyperthread siblings counted once

Plain text parsing, no imports of torch or llama.cpp: cheap enough for ``cowest env`` and set-up scripts.
"""

from __future__ import annotations

import os
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
AMX_FLAGS = frozenset({"amx_tile", "amx_int8", "amx_bf16"})
AVX512_FLAGS = frozenset({"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"})  # ggml's GGML_AVX512 set


def _cpuinfo(path: Path = CPUINFO) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_flags(text: str | None = None) -> frozenset[str]:
    """The first core's feature flags (all cores of a machine report the same set)."""
    text = _cpuinfo() if text is None else text
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[-1].split())
    return frozenset()


def cpu_model(text: str | None = None) -> str:
    text = _cpuinfo() if text is None else text
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[-1].strip()
    return "unknown"


def cpu_summary(text: str | None = None) -> dict[str, object]:
    flags = cpu_flags(text)
    return {
        "model": cpu_model(text),
        "avx2": {"avx2", "fma", "f16c"} <= flags,
        "avx512": AVX512_FLAGS <= flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": bool(AMX_FLAGS & flags),
    }


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether this CPU has bf16 matmul instructions (x86 avx512_bf16 or AMX-BF16)."""
    flags = cpu_flags() if flags is None else flags
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def physical_cores(text: str | None = None, allowed: set[int] | None = None) -> int:
    """Cores this process may run on, counting hyperthread siblings once (llama.cpp's own default for its
    threads). llama-cpp-python defaults to half the logical CPUs instead, which on a 2-core VM without SMT is one
    thread for generation: half the machine idle."""
    text = _cpuinfo() if text is None else text
    if allowed is None:
        allowed = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    for block in text.split("\n\n"):
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if "processor" not in fields or not fields["processor"].isdigit() or int(fields["processor"]) not in allowed:
            continue
        if "core id" not in fields:  # no topology (some VMs, non-x86): each logical CPU is a core
            cores.add(("cpu", fields["processor"]))
        else:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
    return max(1, len(cores) or len(allowed))
