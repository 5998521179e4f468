"""`cowest serve`'s options: the recipe's `serve:` section, with command-line flags winning."""

import pytest

from cowest.errors import ConfigError


@pytest.fixture
def captured(monkeypatch):
    from cowest.serve import runner

    got = {}

    def run_server(cfg, opts, **kw):
        got.update(cfg=cfg, opts=opts, **kw)

    monkeypatch.setattr(runner, "run_server", run_server)
    monkeypatch.setenv("MY_SERVE_KEY", "k-123")
    return got


def _serve(recipe, overrides=(), **flags):
    from cowest.cli.serve import serve

    names = ("host", "port", "api_key_env", "max_concurrency", "max_queue", "max_body_bytes", "show_draft",
             "model_name", "prompt", "shutdown_timeout", "log_level")
    serve(recipe=recipe, overrides=list(overrides), **{n: flags.get(n) for n in names})


def test_the_recipe_section_sets_the_server(tmp_path, captured):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nstrong: {max_concurrency: 6}\n"
                      "serve: {port: 9001, max_queue: 3, api_key_env: MY_SERVE_KEY, model_name: mine, prompt: task}\n")
    _serve(str(recipe))
    opts = captured["opts"]
    assert captured["port"] == 9001 and captured["host"] == "127.0.0.1"
    assert opts.max_queue == 3 and opts.api_key == "k-123" and opts.model_name == "mine" and opts.use_task
    assert opts.max_concurrency == 6  # serve.max_concurrency unset: the strong side's


def test_flags_win_over_the_recipe(tmp_path, captured):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("serve: {port: 9001, max_concurrency: 2}\n")
    _serve(str(recipe), port=0, max_concurrency=5, prompt="generic")
    assert captured["port"] == 0 and captured["opts"].max_concurrency == 5 and captured["opts"].max_queue == 20
    assert not captured["opts"].use_task


@pytest.mark.parametrize("override, match", [
    ("serve.prompt=essay", "serve.prompt"), ("serve.max_queue=-1", "serve.max_queue"),
    ("serve.port=70000", "serve.port"),
])
def test_bad_serve_values_are_config_errors(captured, override, match):
    with pytest.raises(ConfigError, match=match):
        _serve(None, [override])
