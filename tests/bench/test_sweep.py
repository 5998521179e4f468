"""bench/sweep.py on the demo task with a tiny real weak model and the package's OpenAI test server as the
strong model: every variant runs, shares what it can, pays no strong answer twice, and resumes for free."""

import json

import pytest

from cowest.config import dump_config, load_config
from cowest.testing.openai_server import OpenAITestServer
from support.scripted import hash_responder as responder
from support.bench import load_bench


def _sweep():
    return load_bench("sweep")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from support.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("sweep_tiny"), tokenizer="builtin")


def _tiny_overrides(model, base_url):
    return [f"weak.model={model}", "weak.max_new_tokens=8", "weak.batch_size=4", "strong.local.gguf=null",
            f"strong.base_url={base_url}", "strong.api_key_env=null", "strong.max_concurrency=1", "strong.max_retries=0",
            "task.n_train=8", "feedback.max_questions=6", "align.validation_questions=6", "sft.max_steps=1",
            "sft.batch_size=2", "sft.max_length=512", "sft.lora_r=4", "align.max_steps=2", "align.batch_size=2",
            "align.gradient_accumulation_steps=1", "align.max_length=768", "align.lora_r=4"]


@pytest.mark.slow
def test_smoke_sweep_shares_stages_and_pays_nothing_twice(tmp_path, tiny):
    sw = _sweep()
    variants = {n: sw.VARIANTS[n] for n in ("base", "best_worst", "beta0.3", "rounds2", "sft2x")}
    with OpenAITestServer(responder) as srv:
        res = sw.run_sweep("demo", "smoke", variants, tmp_path, _tiny_overrides(tiny, srv.base_url))
        keys = [json.dumps([b["messages"], b.get("temperature")], sort_keys=True) for b in srv.bodies]
    assert len(keys) == len(set(keys)), "a strong request was sent twice in one sweep"
    rows = {r["variant"]: r for r in res["rows"]}
    assert all(r["status"] == "done" for r in rows.values()), [r["status"] for r in rows.values()]
    # SFT trained once; pairing variants re-derive pairs from base's records, β ones take its pairs; rounds2 reuses round 1
    assert "sft" not in rows["base"]["shared"]
    assert all(rows[v]["shared"]["sft"] == "base" for v in ("best_worst", "beta0.3", "rounds2"))
    assert rows["best_worst"]["shared"]["feedback1 records"] == "base" and "align1" not in rows["best_worst"]["shared"]
    assert rows["beta0.3"]["shared"]["feedback1"] == "base" and "align1" not in rows["beta0.3"]["shared"]
    assert {"align1", "validate1"} <= set(rows["rounds2"]["shared"]) and rows["rounds2"]["round"] == 2
    for r in rows.values():
        v = r["validation"][str(r["round"])]
        assert r["gain"] == v["gain"] and len(r["gain"]) == 3 and r["n"] == 6
        assert r["repeating"]["n"] == 6 and 0 <= r["repeating"]["aligned"] <= 6
    assert rows["beta0.3"]["vs_base"] is not None and "vs_base" not in rows["base"]
    # sft2x trains its own SFT on twice the questions; every variant is validated on the same questions
    assert "sft" not in rows["sft2x"]["shared"] and rows["sft2x"]["overrides"] == ["task.n_train=16"]
    assert rows["sft2x"]["sft_vs_base"] is not None and "sft_vs_base" not in rows["beta0.3"]
    assert "task.heldout_from=16" in res["base_overrides"]
    val_ids = {v: {x["id"] for x in _records(tmp_path, v)} for v in ("base", "sft2x")}
    assert val_ids["base"] == val_ids["sft2x"] and len(val_ids["base"]) == 6
    md = (tmp_path / "sweep.md").read_text()
    assert "validation gain, E pts [95% CI]" in md and all(f"| {v} |" in md for v in variants)
    assert f"| {rows['base']['repeating']['sft']} → {rows['base']['repeating']['aligned']} of 6 |" in md
    assert (tmp_path / "sweep.png").stat().st_size > 0
    assert json.loads((tmp_path / "sweep.json").read_text())["rows"] == json.loads(json.dumps(res["rows"]))
    # a rerun resumes everything: not one strong call, the same table
    with OpenAITestServer(responder) as srv:
        again = sw.run_sweep("demo", "smoke", variants, tmp_path, _tiny_overrides(tiny, srv.base_url))
        assert srv.requests_total == 0
    assert [r["gain"] for r in again["rows"]] == [r["gain"] for r in res["rows"]]


def _records(out, variant):
    path = out / "runs" / variant / "validation" / "round1" / "records.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_variant_lists_parse_and_refuse_clearly():
    sw = _sweep()
    assert sw.parse_variants("base,k8", []) == {"base": [], "k8": ["feedback.k=8"]}
    assert sw.parse_variants(None, ["mine align.beta=0.2 feedback.k=2"]) == {"mine": ["align.beta=0.2", "feedback.k=2"]}
    assert list(sw.parse_variants(None, [])) == list(sw.VARIANTS)
    with pytest.raises(SystemExit, match="unknown variant 'nope'; valid: base"):
        sw.parse_variants("base,nope", [])
    with pytest.raises(SystemExit, match="not key=value"):
        sw.parse_variants(None, ["mine beta"])


def test_overrides_may_follow_the_options():
    a = _sweep().parser().parse_intermixed_args(["demo", "--scale", "smoke", "--variants", "base", "a.b=1", "c.d=2"])
    assert (a.task, a.scale, a.variants, a.overrides) == ("demo", "smoke", "base", ["a.b=1", "c.d=2"])


def test_questions_variant_adds_as_many_unseen_questions(tmp_path):
    sweep = _sweep()
    cfg = sweep.variant_config("demo", ["task.n_train=32", "feedback.max_questions=8", *sweep.VARIANTS["questions"]],
                               "q", tmp_path)
    assert cfg.feedback.extra_questions == 8 and cfg.feedback.max_questions == 8 and cfg.task.n_train == 32
    assert cfg.strong.cache_path == str(tmp_path / "strong_cache.sqlite")
    capped = sweep.variant_config("demo", ["task.n_train=6", "feedback.max_questions=8", *sweep.VARIANTS["questions"]],
                                  "q", tmp_path)
    assert capped.feedback.extra_questions == 6
    assert sweep.resolve("demo", ["task.n_train=6", *sweep.VARIANTS["questions"]])[-1] == "feedback.extra_questions=6"


def test_sft2x_doubles_the_training_questions_and_pins_validation_for_every_variant(tmp_path):
    sweep = _sweep()
    scale = ["task.n_train=32", "feedback.max_questions=8"]
    cfg = sweep.variant_config("demo", scale + sweep.VARIANTS["sft2x"], "s", tmp_path)
    assert cfg.task.n_train == 64 and cfg.feedback.max_questions == 8
    variants = {"base": [], "sft2x": sweep.VARIANTS["sft2x"]}
    assert sweep.pin_heldout("demo", scale, variants) == ["task.heldout_from=64"]
    assert sweep.pin_heldout("demo", scale, {"base": [], "k8": ["feedback.k=8"]}) == []  # one size: as before
    assert sweep.pin_heldout("demo", scale + ["task.heldout_from=100"], variants) == []  # the user's own wins
    with pytest.raises(SystemExit, match="feedback.max_questions=twice needs feedback.max_questions set"):
        sweep.resolve("demo", ["feedback.max_questions=null", "feedback.max_questions=twice"])


def _as_made_by_older_code(config_yaml):
    """Give a finished run the fingerprints code before 2026-12 recorded: feedback's legacy one, and the align
    and validation fingerprints that follow from it."""
    from cowest.align.dpo import align_fingerprint
    from cowest.feedback.collect import stage_fingerprint as feedback_fp
    from cowest.feedback.validate import stage_fingerprint as validation_fp
    from cowest.rundir import RunDir

    cfg = load_config(config_yaml)
    rd = RunDir(cfg)
    for stage, fp in ((rd.feedback(1), lambda: feedback_fp(cfg, 1, legacy=True)),  # in this order: each builds
                      (rd.align(1), lambda: align_fingerprint(cfg, 1)),  # on the one recorded before it
                      (rd.validation(1), lambda: validation_fp(cfg, 1))):
        done = json.loads((stage / ".done.json").read_text())
        (stage / ".done.json").write_text(json.dumps({**done, "fingerprint": fp()}))


@pytest.mark.slow
def test_a_donor_run_s_stages_and_strong_cache_are_reused(tmp_path, tiny):
    """--donor: a finished run (here another sweep's base, with the fingerprints older code recorded) gives the
    base variant all its stages and seeds the strong cache, so nothing the donor paid for is asked again."""
    sw = _sweep()
    key = lambda b: json.dumps([b["messages"], b.get("temperature")], sort_keys=True)  # noqa: E731
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    with OpenAITestServer(responder) as srv:
        sw.run_sweep("demo", "smoke", {"base": []}, a, _tiny_overrides(tiny, srv.base_url))
        paid_by_donor = {key(x) for x in srv.bodies}
    # a later `cowest eval <donor> task.n_eval=...` rewrites the donor's config.yaml; its stages still count
    donor_yaml = a / "runs" / "base" / "config.yaml"
    _as_made_by_older_code(donor_yaml)
    donor_yaml.write_text(dump_config(load_config(donor_yaml, ["task.n_eval=5"])))
    with OpenAITestServer(responder) as srv:
        res = sw.run_sweep("demo", "smoke", {"base": [], "beta0.3": sw.VARIANTS["beta0.3"]}, b,
                           _tiny_overrides(tiny, srv.base_url), donors_from=[a / "runs" / "base" / "config.yaml"])
        asked = {key(x) for x in srv.bodies}
    rows = {r["variant"]: r for r in res["rows"]}
    assert rows["base"]["shared"] == {"sft": "base", "feedback1": "base", "align1": "base", "validate1": "base"}
    assert rows["beta0.3"]["status"] == "done" and not asked & paid_by_donor
    assert (b / "strong_cache.sqlite").exists()
    with pytest.raises(SystemExit, match="no such file"):
        sw.donor_configs([tmp_path / "missing.yaml"], b)
