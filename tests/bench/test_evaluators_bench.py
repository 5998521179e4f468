"""bench/evaluators.py on a finished IfQA feedback round (records written as the stage writes them): the run's
own evaluator is reproduced from the recorded answers, exact match leaves more drafts without a signal than
token F1, which grades a partly right answer, and the pair signal compares the drafts' own answers."""

import json

from support.bench import load_bench

from cowest.config import load_config
from cowest.rundir import RunDir
from cowest.tasks import get_task

IFQA = "tests/fixtures/tasks/ifqa"


def test_metric_evaluators_compared_without_calls(tmp_path):
    cfg = load_config(None, [f"output_dir={tmp_path}", "name=ev", "task.name=ifqa", f"task.data={IFQA}",
                             "feedback.k=2"])
    rd = RunDir(cfg).create()
    task = get_task(cfg.task)
    ex = task.load("train")[0]
    gold = ex.gold[0]
    half = gold.split()[0] + " extra words"  # shares one token with the gold: F1 > 0, EM 0
    stage = rd.feedback(1)
    stage.mkdir(parents=True)
    z, outs = "Answer: nothing", [f"Answer: {half}", "Answer: nothing at all"]
    ev = load_bench("evaluators")
    rec = {"id": ex.id, "question": ex.question, "gold": ex.gold, "prompt": [{"role": "user", "content": "x"}],
           "drafts": ["d1", "d2"], "draft_answers": [gold, "nothing"], "z_outputs": [z], "collab_outputs": outs}
    rec = ev.rescored([rec], task, {ex.id: ex}, "auto")[0]  # written as the stage writes its F1-scored records
    assert rec.pop("draft_scores") == [1.0, 0.0]  # as records made before feedback scored the drafts' answers
    (stage / "records.jsonl").write_text(json.dumps(rec) + "\n")
    (stage / "feedback_stats.json").write_text(json.dumps({"per_pair": {"strong_calls_paid": 3.0}}))
    (stage / ".done.json").write_text("{}")
    res = ev.compare(rd.root, 1)
    rows = {r["evaluator"]: r for r in res["rows"]}
    as_run = rows["metric (auto), as run"]
    assert {k: v for k, v in as_run.items() if k not in ("evaluator", "strong_calls_paid_per_pair")} == \
        {k: v for k, v in rows["metric (auto)"].items() if k != "evaluator"}
    assert rows["metric (em)"]["delta_zero_share"] == 1.0 and rows["metric (em)"]["pairs"] == 0
    assert rows["metric (f1)"]["delta_zero_share"] == 0.5 and rows["metric (f1)"]["pairs"] == 1
    # the one pair's chosen draft (d1) already answers right, the rejected one (d2) wrong
    assert as_run["pair_signal"] == {"chosen_answers_better": 1, "as_well": 0, "chosen_answers_worse": 0, "pairs": 1,
                                     "share_as_well": 0.0}
    assert (stage / "evaluators.md").read_text().startswith("| evaluator |")
