import json
import os
import random
from pathlib import Path

import pytest

from cowest.cli.score import format_result, main_score, run_score, score
from cowest.config import TaskConfig
from cowest.errors import DataError
from cowest.tasks import get_task

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "tasks"


def _shared_data() -> Path:
    env = os.environ.get("COWEST_SHARED_DATA")
    path = Path(env) if env else REPO / ".." / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared task data not found at {path} (set COWEST_SHARED_DATA)")
    return path


def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_medmcqa_fixture_free_text(tmp_path):
    preds = _write(
        tmp_path / "p.jsonl",
        [
            {"id": "m1", "prediction": "Both directions occur.\nAnswer: C"},  # right
            {"id": "m2", "prediction": "Answer: Vitamin C"},  # right, given as option text (B)
            {"id": "m3", "prediction": "no idea"},  # unparsed
        ],
    )
    got = run_score("medmcqa", "dev", str(FIXTURES / "medmcqa"), preds)
    assert got["task"] == "medmcqa" and got["split"] == "dev"
    assert got["n"] == 3 and got["missing"] == ["m4"] and got["unparsed"] == 1
    # golds C, B, A ; preds C, B, None -> accuracy 2/3 ;
    # F1: A 0 (fn1), B 1, C 1, D 0 (absent) -> macro 2/4
    assert got["metrics"]["accuracy"] == pytest.approx(200 / 3)
    assert got["metrics"]["macro_f1"] == pytest.approx(50.0)


def test_int_ids_and_null_prediction(tmp_path):
    preds = _write(
        tmp_path / "p.jsonl",
        [{"id": 7, "prediction": "Answer: Bonn"}, {"id": "8", "prediction": None}, {"id": 9, "prediction": "the Thames."}],
    )
    got = score(TaskConfig(name="ifqa", data=str(FIXTURES / "ifqa")), "dev", preds)
    assert got["n"] == 3 and got["missing"] == [] and got["unparsed"] == 1
    assert got["metrics"] == {"em": pytest.approx(200 / 3), "f1": pytest.approx(200 / 3)}


@pytest.mark.parametrize(
    "lines, msg",
    [
        ([{"id": "0", "prediction": "casual"}, {"id": "99", "prediction": "casual"}], r"p.jsonl:2: id '99' is not in the split"),
        ([{"id": 0, "prediction": "casual"}, {"id": "0", "prediction": "casual"}], r"p.jsonl:2: duplicate id '0'"),
        ([{"prediction": "casual"}], r"p.jsonl:1: each line needs an 'id'"),
        ([{"id": 1}], r"p.jsonl:1: missing field 'prediction'"),
        ([{"id": 1, "prediction": 3}], r"p.jsonl:1: 'prediction' must be a string or null"),
        ([], r"p.jsonl: no predictions"),
    ],
)
def test_bad_prediction_files(tmp_path, lines, msg):
    preds = _write(tmp_path / "p.jsonl", lines)
    with pytest.raises(DataError, match=msg):
        run_score("prosocial_dialog", "dev", str(FIXTURES / "prosocial_dialog"), preds)


def test_demo_and_main_score(tmp_path, capsys):
    dev = get_task(TaskConfig(name="demo")).load("dev")
    preds = _write(tmp_path / "p.jsonl", [{"id": e.id, "prediction": f"Answer: {e.gold[0]}"} for e in dev[:10]])
    out = tmp_path / "score.json"
    got = main_score("demo", "dev", None, preds, output=out)
    # all 10 right; labels absent from these 10 golds have F1 0 and still count in the macro mean
    present = {e.gold[0] for e in dev[:10]}
    assert got["metrics"] == {"accuracy": 100.0, "macro_f1": pytest.approx(100 * len(present) / 4)}
    assert len(got["missing"]) == 110
    assert json.loads(out.read_text()) == got
    line = capsys.readouterr().out.strip()
    assert line.startswith("demo/dev n=10: accuracy 100.00, macro_f1 ") and line.endswith("(110 missing)")


def test_format_result():
    r = {"task": "t", "split": "s", "n": 2, "metrics": {"em": 50.0}, "missing": [], "unparsed": 1}
    assert format_result(r) == "t/s n=2: em 50.00 (1 unparsed)"


def _gold_text(task, ex):
    return f"Reasoning first.\nAnswer: {task.gold_answer(ex)}"


@pytest.mark.parametrize("name", ["ifqa", "medmcqa", "prosocial_dialog"])
def test_real_dev_splits(tmp_path, name):
    data = str(_shared_data() / name)
    task = get_task(TaskConfig(name=name, data=data))
    dev = task.load("dev")
    good = _write(tmp_path / "good.jsonl", [{"id": e.id, "prediction": _gold_text(task, e)} for e in dev])
    got = run_score(name, "dev", data, good)
    assert got["n"] == len(dev) and got["missing"] == [] and got["unparsed"] == 0
    assert all(v == pytest.approx(100.0) for v in got["metrics"].values())

    # corrupt 10% of predictions: a wrong label / letter, or a wrong free-form answer
    rng = random.Random(0)
    bad_rows = []
    for e in dev:
        text = _gold_text(task, e)
        if rng.random() < 0.1:
            wrong = [lab for lab in (task.labels or ()) if lab not in e.gold]
            text = f"Answer: {rng.choice(wrong)}" if wrong else "Answer: zzz qqq"
        bad_rows.append({"id": e.id, "prediction": text})
    bad = _write(tmp_path / "bad.jsonl", bad_rows)
    got = run_score(name, "dev", data, bad)
    primary = got["metrics"][task.primary_metric]
    assert 80.0 < primary < 100.0
