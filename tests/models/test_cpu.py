"""CPU feature parsing on /proc/cpuinfo texts of the CPUs this project runs on."""

from __future__ import annotations

from cowest.models.cpu import cpu_flags, cpu_has_native_bf16, cpu_summary

# Trimmed from real /proc/cpuinfo lines (first core only matters).
ZEN4 = """processor\t: 0
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse4_2 avx f16c fma bmi2 avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16 avx512vbmi avx512_vnni
"""
SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu sse4_2 avx f16c fma bmi2 avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16 avx512vbmi avx512_vnni amx_bf16 amx_tile amx_int8
"""
HASWELL = """model name\t: Intel(R) Xeon(R) CPU E5-2686 v4
flags\t\t: fpu sse4_2 avx f16c fma bmi2 avx2
"""


def test_summary_per_cpu():
    assert cpu_summary(ZEN4) == {"model": "AMD EPYC 9R14 96-Core Processor", "avx2": True, "avx512": True,
                                 "avx512_bf16": True, "amx": False}
    assert cpu_summary(SAPPHIRE_RAPIDS)["amx"] is True
    assert cpu_summary(HASWELL) == {"model": "Intel(R) Xeon(R) CPU E5-2686 v4", "avx2": True, "avx512": False,
                                    "avx512_bf16": False, "amx": False}
    assert cpu_summary("") == {"model": "unknown", "avx2": False, "avx512": False, "avx512_bf16": False, "amx": False}


def test_native_bf16():
    assert cpu_has_native_bf16(cpu_flags(ZEN4)) and cpu_has_native_bf16(cpu_flags(SAPPHIRE_RAPIDS))
    assert not cpu_has_native_bf16(cpu_flags(HASWELL))
