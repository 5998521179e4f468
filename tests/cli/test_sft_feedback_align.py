"""The `cowest sft | feedback | align | validate` commands: help text, one-line errors, and a full CLI run."""

import json
import re
import subprocess
import sys

import pytest

from support.scripted import hash_responder as _responder


def _cowest(*args):
    return subprocess.run([sys.executable, "-m", "cowest", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("cmd,example", [
    ("sft", "cowest sft recipes/demo.yaml"),
    ("feedback", "cowest feedback recipes/medmcqa_cpu.yaml --round 2"),
    ("align", "cowest align recipes/ifqa_cpu.yaml align.beta=0.2"),
    ("validate", "cowest validate recipes/medmcqa_cpu.yaml"),
])
def test_help_has_runnable_examples(cmd, example):
    r = _cowest(cmd, "--help")
    assert r.returncode == 0, r.stderr
    assert example in " ".join(r.stdout.split())
    assert "--overwrite" in r.stdout
    assert ("--round" in r.stdout) == (cmd != "sft")


def test_align_before_feedback_is_one_line_exit_2(tmp_path):
    r = _cowest("align", f"output_dir={tmp_path}", "name=x")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: feedback round 1 has not finished")
    assert len(r.stderr.strip().splitlines()) == 1


def test_validation_off_is_one_line_exit_2(tmp_path):
    r = _cowest("validate", f"output_dir={tmp_path}", "name=x")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: align.validation_questions is 0")
    assert len(r.stderr.strip().splitlines()) == 1


def test_validate_before_align_is_one_line_exit_2(tmp_path):
    r = _cowest("validate", f"output_dir={tmp_path}", "name=x", "align.validation_questions=8", "--round", "1")
    assert r.returncode == 2
    assert r.stderr.strip() == "error: align round 1 has not finished: run `cowest align --round 1` first"


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from support.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny_small_vocab"), tokenizer="builtin")


@pytest.mark.slow
def test_sft_feedback_align_from_the_command_line(tmp_path, tiny_model_dir, capsys):
    from cowest.cli.main import main
    from cowest.testing.openai_server import OpenAITestServer

    with OpenAITestServer(_responder) as srv:
        common = [
            "task.name=demo", "task.n_train=6", f"weak.model={tiny_model_dir}", f"output_dir={tmp_path}", "name=cli",
            f"strong.base_url={srv.base_url}", "strong.api_key_env=null", "weak.max_new_tokens=8", "feedback.k=3",
            "sft.max_steps=1", "sft.batch_size=2", "sft.max_length=512", "sft.lora_r=4",
            "align.max_steps=1", "align.batch_size=2", "align.max_length=512", "align.lora_r=2",
            "align.validation_questions=4",
        ]
        main(["sft", *common])
        assert re.search(r"sft: 1 steps, loss .* adapter: .*sft/adapter", capsys.readouterr().out)
        main(["feedback", *common])
        out = capsys.readouterr().out
        assert re.search(r"feedback round 1: 6 questions, \d+ chosen / \d+ rejected drafts, \d+ pairs", out)
        stats = json.loads((tmp_path / "cli" / "feedback" / "round1" / "feedback_stats.json").read_text())
        assert stats["pairs"] > 0
        main(["align", *common])
        out = capsys.readouterr().out
        main(["validate", *common])
        val_out = capsys.readouterr().out
    assert re.search(rf"align round 1: {stats['pairs']} pairs, 1 steps, last reward margin", out)
    assert (tmp_path / "cli" / "align" / "round1" / "adapter" / "adapter_config.json").exists()
    usage = json.loads((tmp_path / "cli" / "usage.json").read_text())
    assert "feedback_round1" in usage["stages"]
    val = json.loads((tmp_path / "cli" / "validation" / "round1" / "validation.json").read_text())
    assert val["n"] == 4 and len(val["gain"]) == 3
    assert "alignment gain on validation, round 1" in val_out and "validation.json" in val_out
    assert "validation_round1" in usage["stages"]
