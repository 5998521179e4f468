"""The `cowest sft | feedback | align` commands: help text, one-line errors, and a full CLI run."""

import hashlib
import json
import re
import subprocess
import sys

import pytest


def _cowest(*args):
    return subprocess.run([sys.executable, "-m", "cowest", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("cmd,example", [
    ("sft", "cowest sft recipes/demo.yaml"),
    ("feedback", "cowest feedback recipes/medmcqa_cpu.yaml --round 2"),
    ("align", "cowest align recipes/ifqa_cpu.yaml align.beta=0.2"),
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


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from support.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny_small_vocab"), tokenizer="builtin")


def _gold():
    from cowest.config import TaskConfig
    from cowest.tasks import get_task

    return {ex.question.strip(): ex.gold[0] for ex in get_task(TaskConfig(name="demo")).load("train")}


GOLD = _gold()


def _responder(messages, body):
    # alone: wrong; with a draft: right for about half of the drafts (by a hash of the draft)
    user = messages[-1]["content"]
    gold = next(g for q, g in GOLD.items() if q in user)
    wrong = "A" if gold != "A" else "B"
    m = re.search(r"<draft>\n(.*?)\n</draft>", user, re.S)
    helps = m is not None and hashlib.sha256(m.group(1).encode()).digest()[0] % 2 == 0
    return f"Answer: {gold if helps else wrong}"


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
    assert re.search(rf"align round 1: {stats['pairs']} pairs, 1 steps, last reward margin", out)
    assert (tmp_path / "cli" / "align" / "round1" / "adapter" / "adapter_config.json").exists()
    usage = json.loads((tmp_path / "cli" / "usage.json").read_text())
    assert "feedback_round1" in usage["stages"]
