"""How cowest builds and runs llama.cpp (llama-cpp-python) on a CPU, so that the same steps work on every x86 CPU.

Two rules, both because of ggml's AMX kernels (Intel Xeon 4th gen and later): on Linux kernels that gate AMX
tile state per thread (XFD), ggml's worker threads die with SIGILL on the first ``tilezero`` (llama.cpp PR
#26954, open). ``-march=native`` turns those kernels on wherever the CPU has AMX.

- **Build** (``scripts/setup.sh``): no ``-march=native``. Each instruction set is named explicitly, only from an
  allow-list seen to work on this project's machines (x86-64-v3, and AVX-512 where the CPU has it), and only
  where this CPU reports it; AMX is always off. The wheel is cached under a key of the version and these flags,
  never in pip's cache (whose key ignores ``CMAKE_ARGS``, so an old ``-march=native`` wheel would come back).
- **Run** (:mod:`cowest.models.llama_launch`): a library built elsewhere with AMX kernels (e.g. a plain
  ``pip install llama-cpp-python`` on an AMX machine) is loaded with ``use_extra_bufts = False``, which keeps
  the weights out of AMX buffers (at the cost of ggml's weight repacking).

    python -m cowest.models.llama_build cmake-args   # the CMAKE_ARGS for this CPU
    python -m cowest.models.llama_build key VERSION  # the wheel-cache key for this CPU and version
"""

from __future__ import annotations

import hashlib
import re
import sys

from cowest.models.cpu import AMX_FLAGS, AVX512_FLAGS, cpu_flags

# (ggml CMake option, the /proc/cpuinfo flags it needs). Order matters only for readability.
ISA_OPTIONS: tuple[tuple[str, frozenset[str]], ...] = (
    ("GGML_SSE42", frozenset({"sse4_2"})),
    ("GGML_AVX", frozenset({"avx"})),
    ("GGML_AVX2", frozenset({"avx2"})),
    ("GGML_FMA", frozenset({"fma"})),
    ("GGML_F16C", frozenset({"f16c"})),
    ("GGML_BMI2", frozenset({"bmi2"})),
    ("GGML_AVX512", AVX512_FLAGS),
    ("GGML_AVX512_VBMI", frozenset({"avx512vbmi"})),
    ("GGML_AVX512_VNNI", frozenset({"avx512_vnni"})),
    ("GGML_AVX512_BF16", frozenset({"avx512_bf16"})),
)
ALWAYS_OFF = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")
# Build only what the Python package loads: the multimodal library (mtmd) is imported lazily and unused here.
EXTRA = ("-DLLAVA_BUILD=OFF",)


def cmake_args(flags: frozenset[str] | None = None, machine: str | None = None) -> list[str]:
    """CMAKE_ARGS for llama-cpp-python on a CPU with ``flags``. Never ``-march=native``; never AMX."""
    import platform

    flags = cpu_flags() if flags is None else flags
    machine = (machine or platform.machine()).lower()
    args = ["-DGGML_NATIVE=OFF"]
    if machine in ("x86_64", "amd64"):
        for option, needs in ISA_OPTIONS:
            on = needs <= flags
            if option.startswith("GGML_AVX512_") and not AVX512_FLAGS <= flags:
                on = False  # the AVX-512 extensions only with the AVX-512 base
            args.append(f"-D{option}={'ON' if on else 'OFF'}")
        args += [f"-D{option}=OFF" for option in ALWAYS_OFF]
    return args + list(EXTRA)


def build_key(version: str, args: list[str]) -> str:
    """The wheel-cache key: the package version and a hash of the exact CMake arguments."""
    digest = hashlib.sha256(" ".join(args).encode()).hexdigest()[:12]
    return f"llama-cpp-python-{version}-{digest}"


# -------------------------------------------------------------------------------------------------------
# a built library, at run time


def library_features(system_info: str) -> dict[str, bool]:
    """ggml's ``llama_print_system_info()`` (``"CPU : SSE3 = 1 | AVX2 = 1 | AMX_INT8 = 1 | ..."``) as flags."""
    return {name: value == "1" for name, value in re.findall(r"([A-Z0-9_]+) = (\d)", system_info)}


def has_amx_kernels(system_info: str) -> bool:
    """Whether the library was built with any of ggml's AMX kernels."""
    return any(k.startswith("AMX") and v for k, v in library_features(system_info).items())


def extra_bufts_decision(flags: frozenset[str], system_info: str) -> tuple[bool, str]:
    """(use_extra_bufts, why): off only when the library has AMX kernels and this CPU would run them."""
    lib_amx = has_amx_kernels(system_info)
    cpu_amx = bool(AMX_FLAGS & flags)
    if lib_amx and cpu_amx:
        return False, ("this llama.cpp build has AMX kernels and this CPU has AMX, which crash on kernels that "
                       "gate AMX per thread: extra buffer types (AMX, weight repacking) are off; rebuild with "
                       "scripts/setup.sh for a build without AMX")
    if lib_amx:
        return True, "this llama.cpp build has AMX kernels, but this CPU has no AMX: they are never used"
    return True, "this llama.cpp build has no AMX kernels"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["cmake-args"]:
        print(" ".join(cmake_args()))
        return 0
    if argv[:1] == ["key"] and len(argv) == 2:
        print(build_key(argv[1], cmake_args()))
        return 0
    print("usage: python -m cowest.models.llama_build cmake-args | key VERSION", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
