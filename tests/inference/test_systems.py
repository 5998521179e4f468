"""The systems runner: sampling settings reach the weak model, and formats without an answer are refused."""

from types import SimpleNamespace

import pytest

from cowest.config import load_config
from cowest.errors import ConfigError
from cowest.inference.systems import SystemRunner, unsupported
from cowest.tasks import get_task


class RecordingWeak:
    """Stands in for WeakModel.generate: records its keyword arguments, drafts 'Answer: A'."""

    def __init__(self):
        self.calls = []

    def generate(self, msgs, **kw):
        self.calls.append(kw)
        return [["Because.\nAnswer: A"] * kw["n"] for _ in msgs]

    def choice_probs(self, msgs, cands):
        return [[1.0 / len(c)] * len(c) for c in cands]


class EchoStrong:
    def __init__(self):
        self.requests = []

    def chat_batch(self, reqs, *, tag, desc, on_result):
        self.requests += reqs
        for i, _ in enumerate(reqs):
            on_result(i, SimpleNamespace(text="Answer: B"))


def _runner(tmp_path, *extra):
    cfg = load_config(None, [f"output_dir={tmp_path}", "task.n_eval=3", *extra])
    task = get_task(cfg.task)
    examples = task.load("dev")[:3]
    weak, strong = RecordingWeak(), EchoStrong()
    runner = SystemRunner(cfg, task, examples, strong, tmp_path / "eval", load_weak=lambda kind: weak)
    return runner, weak, strong


def test_weak_temperature_and_top_p_reach_the_drafts(tmp_path):
    runner, weak, _ = _runner(tmp_path, "weak.temperature=0.7", "weak.top_p=0.9", "seed=5")
    rows = runner.run("collab")
    assert len(rows) == 3
    assert weak.calls and all(c["temperature"] == 0.7 and c["top_p"] == 0.9 and c["seed"] == 5 for c in weak.calls)


def test_drafts_are_greedy_by_default(tmp_path):
    runner, weak, _ = _runner(tmp_path)
    runner.run("weak")
    assert all(c["temperature"] == 0.0 for c in weak.calls)


@pytest.mark.parametrize("system", ["weak", "superICL"])
def test_knowledge_format_does_not_score_answerless_systems(tmp_path, system):
    runner, weak, strong = _runner(tmp_path, "task.format=knowledge")
    assert runner.run(system) == []
    assert "task.format=knowledge" in runner.notes[system]
    assert not weak.calls and not strong.requests
    assert not (tmp_path / "eval" / "predictions" / f"{system}.jsonl").exists()
    assert unsupported("collab", "knowledge") is None and unsupported(system, "cot") is None


def test_knowledge_format_collab_still_runs(tmp_path):
    runner, _, strong = _runner(tmp_path, "task.format=knowledge")
    assert len(runner.run("collab")) == 3 and len(strong.requests) == 3


def test_eval_refuses_only_answerless_systems_in_knowledge_format(tmp_path):
    from cowest.eval.evaluate import run_eval

    cfg = load_config(None, [f"output_dir={tmp_path}", "task.format=knowledge", "eval.systems=[weak,superICL]"])
    with pytest.raises(ConfigError, match="task.format=knowledge"):
        run_eval(cfg, show=False)


class DyingStrong(EchoStrong):
    """The run is killed while the strong model answers."""

    def chat_batch(self, reqs, **kw):
        raise KeyboardInterrupt


class NamedDrafts(RecordingWeak):
    def __init__(self, name):
        super().__init__()
        self.name = name

    def generate(self, msgs, **kw):
        self.calls.append(kw)
        return [[f"{self.name}.\nAnswer: C"] * kw["n"] for _ in msgs]


def test_a_resumed_eval_sends_the_drafts_it_drew_before_the_kill(tmp_path):
    cfg = load_config(None, [f"output_dir={tmp_path}", "task.n_eval=3", "weak.temperature=0.7"])
    task = get_task(cfg.task)
    examples = task.load("dev")[:3]
    first = RecordingWeak()
    runner = SystemRunner(cfg, task, examples, DyingStrong(), tmp_path / "eval", load_weak=lambda kind: first,
                          drafts_dir=tmp_path / "eval" / "drafts")
    with pytest.raises(KeyboardInterrupt):
        runner.run("collab")
    assert len(first.calls) == 1  # drafted once, then killed

    again, strong = NamedDrafts("Resumed"), EchoStrong()
    resumed = SystemRunner(cfg, task, examples, strong, tmp_path / "eval", load_weak=lambda kind: again,
                           drafts_dir=tmp_path / "eval" / "drafts")
    rows = resumed.run("collab")
    assert again.calls == []  # nothing drawn again: a sampled redraft would have been a new, paid request
    assert [r["weak_draft"] for r in rows] == ["Because.\nAnswer: A"] * 3
    assert all("Because." in str(req.messages) for req in strong.requests)
    # the aligned model's journal is its own: drawn for the questions it lacks, and only those
    assert resumed.aligned_drafts([0, 1]) == {0: "Resumed.\nAnswer: C", 1: "Resumed.\nAnswer: C"}
    later = SystemRunner(cfg, task, examples, strong, tmp_path / "eval", load_weak=lambda kind: NamedDrafts("Later"),
                         drafts_dir=tmp_path / "eval" / "drafts")
    assert later.aligned_drafts([0, 1, 2]) == {0: "Resumed.\nAnswer: C", 1: "Resumed.\nAnswer: C", 2: "Later.\nAnswer: C"}
    assert len((tmp_path / "eval" / "drafts" / "aligned.jsonl").read_text().splitlines()) == 3
