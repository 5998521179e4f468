"""The llama.cpp build flags and the run-time AMX guard, for CPUs this machine is not (the failure paths)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cowest.models.cpu import cpu_flags
from cowest.models.llama_build import (
    build_key, cmake_args, extra_bufts_decision, has_amx_kernels, library_features, main,
)

from .test_cpu import HASWELL, SAPPHIRE_RAPIDS, ZEN4

AMX_LIB = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | REPACK = 1 |"
PLAIN_LIB = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | REPACK = 1 |"


def _opts(args):
    return dict(a.removeprefix("-D").split("=", 1) for a in args)


def test_never_native_never_amx_on_any_cpu():
    for text in (ZEN4, SAPPHIRE_RAPIDS, HASWELL, ""):
        args = cmake_args(cpu_flags(text), machine="x86_64")
        assert not any("march" in a for a in args)
        opts = _opts(args)
        assert opts["GGML_NATIVE"] == "OFF"
        assert all(opts[k] == "OFF" for k in ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"))


def test_instruction_sets_follow_the_cpu():
    spr = _opts(cmake_args(cpu_flags(SAPPHIRE_RAPIDS), machine="x86_64"))
    assert spr["GGML_AVX2"] == spr["GGML_AVX512"] == spr["GGML_AVX512_BF16"] == "ON"
    hsw = _opts(cmake_args(cpu_flags(HASWELL), machine="x86_64"))
    assert hsw["GGML_AVX2"] == hsw["GGML_FMA"] == "ON"
    assert hsw["GGML_AVX512"] == hsw["GGML_AVX512_VNNI"] == hsw["GGML_AVX512_BF16"] == "OFF"
    # an AVX-512 extension flag without the AVX-512 base is not enough
    odd = _opts(cmake_args(cpu_flags(HASWELL) | {"avx512_vnni"}, machine="x86_64"))
    assert odd["GGML_AVX512_VNNI"] == "OFF"
    # not x86: no x86 options at all
    assert _opts(cmake_args(frozenset(), machine="aarch64")) == {"GGML_NATIVE": "OFF", "LLAVA_BUILD": "OFF"}


def test_the_cache_key_changes_with_the_flags_and_the_version():
    a, b = cmake_args(cpu_flags(SAPPHIRE_RAPIDS), "x86_64"), cmake_args(cpu_flags(HASWELL), "x86_64")
    assert build_key("0.3.36", a) != build_key("0.3.36", b) != build_key("0.3.37", b)
    assert build_key("0.3.36", a) == build_key("0.3.36", list(a))


def test_extra_bufts_off_only_for_amx_kernels_on_an_amx_cpu():
    assert library_features(AMX_LIB)["AMX_INT8"] is True and library_features(PLAIN_LIB).get("AMX_INT8") is None
    assert has_amx_kernels(AMX_LIB) and not has_amx_kernels(PLAIN_LIB) and not has_amx_kernels("AMX_INT8 = 0")
    use, why = extra_bufts_decision(cpu_flags(SAPPHIRE_RAPIDS), AMX_LIB)
    assert use is False and "scripts/setup.sh" in why
    assert extra_bufts_decision(cpu_flags(ZEN4), AMX_LIB)[0] is True
    assert extra_bufts_decision(cpu_flags(SAPPHIRE_RAPIDS), PLAIN_LIB)[0] is True


def test_cli_prints_args_and_key(capsys):
    assert main(["cmake-args"]) == 0 and "-DGGML_NATIVE=OFF" in capsys.readouterr().out
    assert main(["key", "0.3.36"]) == 0 and capsys.readouterr().out.startswith("llama-cpp-python-0.3.36-")
    assert main([]) == 2


def test_setup_script_builds_with_these_flags_and_its_own_cache():
    text = (Path(__file__).resolve().parents[2] / "scripts" / "setup.sh").read_text()
    assert 'CMAKE_ARGS="$cmake_args" pip wheel' in text and "--no-cache-dir" in text
    assert "python -m cowest.models.llama_build key" in text


@pytest.mark.parametrize("mode,expect", [("off", "use_extra_bufts=False: set by"), ("bogus", "must be auto")])
def test_launcher_modes(mode, expect, tmp_path):
    # The launcher's own decisions, before llama.cpp loads anything (a stub llama_cpp stands in for the library).
    stub = tmp_path / "llama_cpp"
    (stub / "server").mkdir(parents=True)
    (stub / "__init__.py").write_text("__version__ = 'stub'\ndef llama_print_system_info():\n    return b'" + AMX_LIB + "'\n")
    (stub / "llama_cpp.py").write_text(
        "class P:\n    use_extra_bufts = True\ndef llama_model_default_params():\n    return P()\n")
    (stub / "server" / "__init__.py").write_text("")
    (stub / "server" / "__main__.py").write_text(
        "import sys\nimport llama_cpp.llama_cpp as lib\n"
        "def main():\n    print('serve', sys.argv[1:], lib.llama_model_default_params().use_extra_bufts)\n")
    src = str(Path(__file__).resolve().parents[2] / "src")
    p = subprocess.run([sys.executable, "-m", "cowest.models.llama_launch", "--extra-bufts", mode, "--model", "m.gguf"],
                       capture_output=True, text=True, env={"PYTHONPATH": f"{tmp_path}:{src}", "PATH": "/usr/bin:/bin"})
    assert expect in p.stdout + p.stderr
    if mode == "off":
        assert "serve ['--model', 'm.gguf'] False" in p.stdout
