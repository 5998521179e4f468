"""The CLI's recipe slot and overrides."""

from cowest.cli.common import load_cli_config


def test_a_lone_override_in_the_recipe_slot_keeps_its_double_slash(tmp_path):
    cfg = load_cli_config("strong.base_url=http://127.0.0.1:9/v1", ["task.n_eval=3"])
    assert cfg.strong.base_url == "http://127.0.0.1:9/v1" and cfg.task.n_eval == 3


def test_recipe_then_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\ntask: {name: demo, n_eval: 5}\n")
    cfg = load_cli_config(str(recipe), ["task.n_eval=2"])
    assert cfg.name == "r" and cfg.task.n_eval == 2
