"""bench/pooled_gain.py: one aligned model's validation gain pooled over disjoint held-out questions."""

import json

import pytest

from support.bench import load_bench


def _validation(run, ids, aligned, sft, *, adapters=("sft-fp", "align-fp")):
    for stage, fp in (("sft", adapters[0]), ("align/round1", adapters[1])):
        (run / stage).mkdir(parents=True, exist_ok=True)
        (run / stage / ".done.json").write_text(json.dumps({"fingerprint": fp}))
    v = run / "validation" / "round1"
    v.mkdir(parents=True)
    rows = [{"id": i, "aligned": {"score": a, "metric": a, "draft": "Answer: x"},
             "sft": {"score": s, "metric": s, "draft": "Answer: y"}, "identical": False}
            for i, a, s in zip(ids, aligned, sft)]
    (v / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (v / "validation.json").write_text(json.dumps({"gain": [0, 0, 0], "metric_gain": [0, 0, 0], "evaluator": "metric",
                                                   "metric": "em"}))
    return run


def test_pools_disjoint_validations_of_the_same_adapters(tmp_path):
    pg = load_bench("pooled_gain")
    a = _validation(tmp_path / "a", ["q1", "q2", "q3", "q4"], [1, 1, 0, 1], [0, 1, 0, 1])
    b = _validation(tmp_path / "b", ["q5", "q6", "q7", "q8"], [1, 0, 1, 1], [0, 0, 1, 0])
    res = pg.pooled_gain([a, b])
    assert res["n"] == 8 and res["metric_gain"][0] == pytest.approx(100 * 3 / 8)
    assert res["gain"][1] <= res["gain"][0] <= res["gain"][2] and len(res["runs"]) == 2


def test_refuses_other_adapters_and_overlapping_questions(tmp_path):
    pg = load_bench("pooled_gain")
    a = _validation(tmp_path / "a", ["q1", "q2"], [1, 0], [0, 0])
    other = _validation(tmp_path / "b", ["q3", "q4"], [1, 0], [0, 0], adapters=("sft-fp", "another"))
    with pytest.raises(SystemExit, match="did not validate the same finished SFT and round-1 adapters"):
        pg.pooled_gain([a, other])
    again = _validation(tmp_path / "c", ["q2", "q5"], [1, 0], [0, 0])
    with pytest.raises(SystemExit, match="1 of its questions are in an earlier run's validation"):
        pg.pooled_gain([a, again])
