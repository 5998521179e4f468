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


def _topology(cores: list[tuple[int, int, int]]) -> str:
    """/proc/cpuinfo blocks for (processor, physical id, core id) triples."""
    return "\n\n".join(f"processor\t: {p}\nphysical id\t: {s}\ncore id\t\t: {c}\nflags\t\t: avx2" for p, s, c in cores)


def test_physical_cores_counts_hyperthread_siblings_once():
    from cowest.models.cpu import physical_cores

    two_cores_no_smt = _topology([(0, 0, 0), (1, 0, 1)])  # this project's 2-vCPU machines
    assert physical_cores(two_cores_no_smt, allowed={0, 1}) == 2
    one_core_two_threads = _topology([(0, 0, 0), (1, 0, 0)])
    assert physical_cores(one_core_two_threads, allowed={0, 1}) == 1
    two_sockets_smt = _topology([(0, 0, 0), (1, 0, 1), (2, 1, 0), (3, 1, 1), (4, 0, 0), (5, 0, 1), (6, 1, 0), (7, 1, 1)])
    assert physical_cores(two_sockets_smt, allowed=set(range(8))) == 4
    assert physical_cores(two_sockets_smt, allowed={0, 4}) == 1  # taskset to one core's two siblings
    assert physical_cores(ZEN4, allowed={0}) == 1  # no topology lines: one core per logical CPU
    assert physical_cores("", allowed={0, 1, 2}) == 3  # no /proc/cpuinfo: the CPUs we may use
