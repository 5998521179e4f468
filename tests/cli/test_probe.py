"""``cowest probe`` on the command line: listed in --help, and a bad --endpoint is one line with exit code 2."""

import subprocess
import sys


def _cowest(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cowest", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_help_lists_probe_and_its_endpoint_syntax():
    assert "probe" in _cowest("--help").stdout
    r = _cowest("probe", "--help")
    assert r.returncode == 0 and "--endpoint" in r.stdout and "NAME=KEY=VALUE" in r.stdout


def _one_line_error(r, text):
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().startswith("error: ") and text in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_unknown_endpoint_key_lists_the_valid_ones(tmp_path):
    r = _cowest("probe", f"output_dir={tmp_path}", "--endpoint", "a", "--endpoint", "b=strong.max_token=3")
    _one_line_error(r, "--endpoint b: unknown config key 'strong.max_token'; valid keys under strong:")
    assert "max_tokens" in r.stderr
    assert not (tmp_path / "demo").exists()  # refused before any work


def test_duplicate_or_missing_endpoints(tmp_path):
    _one_line_error(_cowest("probe", f"output_dir={tmp_path}", "-e", "a", "-e", "a=max_tokens=3"), "given twice")
    _one_line_error(_cowest("probe", f"output_dir={tmp_path}"), "at least one --endpoint")
    _one_line_error(_cowest("probe", f"output_dir={tmp_path}", "-e", "x=weak.model=y"), "only the strong section")
