import pytest

from cowest.config import RunConfig, dump_config, load_config
from cowest.errors import ConfigError


def test_defaults_and_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\ntask: {name: medmcqa, n_eval: 10}\nfeedback: {k: 3}\n")
    cfg = load_config(recipe, ["task.n_eval=20", "strong.max_concurrency=2", "eval.systems=[weak,strong]", "sft.learning_rate=1e-4"])
    assert cfg.name == "x"
    assert cfg.task.name == "medmcqa" and cfg.task.n_eval == 20
    assert cfg.feedback.k == 3
    assert cfg.strong.max_concurrency == 2
    assert cfg.eval.systems == ["weak", "strong"]
    assert cfg.sft.learning_rate == pytest.approx(1e-4)
    assert isinstance(cfg, RunConfig)


def test_comma_list_override():
    cfg = load_config(None, ["eval.systems=weak,collab"])
    assert cfg.eval.systems == ["weak", "collab"]


def test_int_promoted_to_float_but_not_bool():
    assert load_config(None, ["align.beta=1"]).align.beta == 1.0
    with pytest.raises(ConfigError, match="align.beta"):
        load_config(None, ["align.beta=true"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("task.nmae=x", "unknown config key 'task.nmae'; valid keys under task: .*name"),
        ("bogus=1", "unknown config key 'bogus'"),
        ("task.format=essay", "task.format: 'essay' is not one of: direct, knowledge, cot"),
        ("task.n_eval=abc", "task.n_eval: expected int"),
        ("task.n_eval=0", "task.n_eval must be >= 1"),
        ("eval.systems=[weak,gpt]", "eval.systems: 'gpt' is not one of"),
        ("feedback.evaluator=vibes", "feedback.evaluator: 'vibes' is not one of: metric, judge, both, likelihood"),
        ("feedback.metric=bleu", "feedback.metric: 'bleu' is not one of: auto, f1, em, accuracy"),
        ("align.eval_share=-0.1", r"align.eval_share must be in \[0, 1\)"),
        ("align.sft_weight=-1", r"align.sft_weight must be >= 0 \(0 = DPO alone\)"),
        ("strong.max_concurrency=0", "strong.max_concurrency must be >= 1"),
        ("strong.local.batching=dynamic", "strong.local.batching: 'dynamic' is not one of: continuous, static"),
        ("strong.local.kv_tokens=32", r"strong.local.kv_tokens must be >= 64 \(four KV pages\), got 32"),
        ("strong.local.dtype=int4", "strong.local.dtype: 'int4' is not one of: auto, bfloat16, float32, int8"),
        ("task=3", "task must be a mapping"),
        ("noequals", "not of the form key=value"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_missing_and_malformed_recipe(tmp_path):
    with pytest.raises(ConfigError, match="recipe not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(lst)


def test_dump_holds_env_var_name_not_secret(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-planted-secret-123")
    text = dump_config(load_config(None, []))
    assert "OPENAI_API_KEY" in text
    assert "sk-planted-secret-123" not in text
    assert load_config(None, ["strong.api_key_env=null"]).strong.api_key_env is None


def test_shipped_recipes_load():
    from pathlib import Path

    recipes = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
    assert recipes, "recipes/ should hold YAML recipes"
    for r in recipes:
        load_config(r)


def test_feedback_extra_questions_cannot_be_negative():
    with pytest.raises(ConfigError, match="feedback.extra_questions must be >= 0, got -1"):
        load_config(None, ["feedback.extra_questions=-1"])


@pytest.mark.parametrize("overrides", [["task.heldout_from=5"], ["task.n_train=10", "task.heldout_from=9"]])
def test_heldout_from_must_come_after_the_training_questions(overrides):
    with pytest.raises(ConfigError, match=r"task.heldout_from=\d+ must be >= task.n_train"):
        load_config(None, overrides)
    assert load_config(None, ["task.n_train=10", "task.heldout_from=10"]).task.heldout_from == 10
