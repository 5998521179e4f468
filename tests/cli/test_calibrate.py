"""`cowest calibrate` through the command line: the gate file and its table."""

import json
import os
import subprocess
import sys


def test_calibrate_writes_the_gate_and_prints_the_aurocs(tmp_path, tiny_model_dir):
    args = [f"output_dir={tmp_path}", "name=cli", "task.name=demo", "task.n_train=30", f"weak.model={tiny_model_dir}",
            "weak.max_new_tokens=8", "weak.dtype=float32", "gate.calibration_questions=8", "gate.agreement_k=2",
            "gate.strong_share=0.25"]
    r = subprocess.run([sys.executable, "-m", "cowest", "calibrate", *args], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    info = json.loads((tmp_path / "cli" / "gate" / "gate.json").read_text())
    assert info["n"] == 8 and info["strong_share"] == 0.25 and info["model"] == "sft"
    for name in ("answer_prob", "agreement", "seq_logprob"):
        assert name in r.stdout
    assert "(chosen)" in r.stdout and "gate.json" in r.stdout
    assert "calibration checks: drafts right" in r.stdout and "ignore the question" in r.stdout
    assert "no aligned round" in r.stdout and "base model" in r.stdout


def test_calibrate_without_spare_training_questions_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cowest", "calibrate", f"output_dir={tmp_path}", "task.name=demo"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "gate calibration" in r.stderr and "task.n_train" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
