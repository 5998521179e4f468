"""`cowest validate`: help text with examples, and one-line errors before anything is loaded or paid."""

import subprocess
import sys


def _cowest(*args):
    return subprocess.run([sys.executable, "-m", "cowest", *args], capture_output=True, text=True, timeout=120)


def test_help_has_runnable_examples():
    r = _cowest("validate", "--help")
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "cowest validate recipes/medmcqa_cpu.yaml" in text and "--round" in text and "--overwrite" in text


def test_validation_off_is_one_line_exit_2(tmp_path):
    r = _cowest("validate", f"output_dir={tmp_path}", "name=x")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: align.validation_questions is 0")
    assert len(r.stderr.strip().splitlines()) == 1


def test_validate_before_align_is_one_line_exit_2(tmp_path):
    r = _cowest("validate", f"output_dir={tmp_path}", "name=x", "align.validation_questions=8", "--round", "1")
    assert r.returncode == 2
    assert r.stderr.strip() == "error: align round 1 has not finished: run `cowest align --round 1` first"
