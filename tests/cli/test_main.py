import subprocess
import sys


def _cowest(*args, env=None):
    return subprocess.run([sys.executable, "-m", "cowest", *args], capture_output=True, text=True, env=env, timeout=120)


def test_help_lists_subcommands():
    r = _cowest("--help")
    assert r.returncode == 0
    for cmd in ("demo", "run", "eval", "score", "env"):
        assert cmd in r.stdout


def test_config_error_is_one_line_exit_2():
    r = _cowest("eval", "task.nmae=ifqa")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: unknown config key 'task.nmae'")
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_missing_recipe_exit_2(tmp_path):
    r = _cowest("eval", str(tmp_path / "none.yaml"))
    assert r.returncode == 2 and "recipe not found" in r.stderr


def test_debug_shows_traceback():
    r = _cowest("--debug", "eval", "task.nmae=ifqa")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_env_json():
    import json

    r = _cowest("env", "--json")
    assert r.returncode == 0
    info = json.loads(r.stdout)
    assert info["packages"]["torch"]
    # what weak.dtype=auto resolves to here, as the weak model would load it
    import torch

    from cowest.models.weak import resolve_dtype

    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert info["torch"]["weak_dtype_auto"] == str(resolve_dtype("auto", device)).removeprefix("torch.")
    from cowest.models.cpu import physical_cores
    from cowest.training import resolve_bf16

    assert info["torch"]["train_bf16_auto"] is resolve_bf16("auto")
    assert info["cpu"]["physical_cores"] == physical_cores()
    # what strong.local.engine=auto picks on this machine, and why
    from cowest.models.engine_choice import resolve_engine

    assert info["strong_engine_auto"]["engine"] == resolve_engine("auto") and info["strong_engine_auto"]["why"]


def test_help_lists_every_stage_command():
    r = _cowest("--help")
    for cmd in ("sft", "feedback", "align", "serve"):
        assert cmd in r.stdout  # registered unconditionally: a broken import fails loudly, never hides a command


def test_missing_optional_dependency_names_the_extra(tmp_path):
    """Without the [serve] extra, `cowest serve` prints one line saying what to install (exit 2)."""
    import os

    fake = tmp_path / "site" / "uvicorn"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'uvicorn'\", name='uvicorn')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])}
    r = _cowest("serve", "task.name=demo", env=env)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'cowest[serve]'" in lines[0] and "uvicorn" in lines[0]


def test_missing_extra_ignores_required_modules():
    from cowest.cli.main import missing_extra

    assert missing_extra(ModuleNotFoundError("x", name="vllm.lora"), "eval").endswith("pip install 'cowest[vllm]'")
    assert missing_extra(ModuleNotFoundError("x", name="torch"), "eval") is None


def test_a_finished_command_ends_the_process_group(tmp_path, monkeypatch):
    # a rank left to tear its gloo group down at interpreter exit died with SIGABRT after a finished
    # `accelerate launch` run (CI, 2026-12-04); main() ends the group itself once the command has succeeded
    import torch.distributed as dist

    from cowest.cli import main as cli

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        monkeypatch.setattr(cli, "_register", lambda: None)
        monkeypatch.setattr(cli, "app", lambda **kw: None)
        cli.main(["env"])
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_without_a_process_group_main_does_not_start_one(monkeypatch):
    import torch.distributed as dist

    from cowest.cli import main as cli

    monkeypatch.setattr(cli, "_register", lambda: None)
    monkeypatch.setattr(cli, "app", lambda **kw: None)
    cli.main(["env"])
    assert not dist.is_initialized()
