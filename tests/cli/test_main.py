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
