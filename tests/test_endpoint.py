"""The strong client a stage opens: the run's cache, and usage saved under the stage's name."""

import json

from cowest.config import load_config
from cowest.endpoint import open_strong, strong_client
from cowest.models.strong import ChatRequest
from cowest.rundir import RunDir
from cowest.testing.openai_server import OpenAITestServer


def _cfg(tmp_path, url, *extra):
    return load_config(None, [f"output_dir={tmp_path}", "name=ep", f"strong.base_url={url}",
                              "strong.api_key_env=null", *extra])


def test_a_stage_client_caches_in_the_run_and_saves_its_usage(tmp_path):
    with OpenAITestServer(lambda m, b: "Answer: A") as srv:
        cfg = _cfg(tmp_path, srv.base_url)
        for _ in range(2):
            with open_strong(cfg, stage="eval") as client:
                assert client.chat_batch([ChatRequest(messages=[{"role": "user", "content": "q"}])],
                                         tag="strong", desc="t")[0].text == "Answer: A"
        assert srv.outcomes["ok"] == 1  # the second stage run answered from the run's cache
    rd = RunDir(cfg)
    assert rd.cache_path.exists() and (rd.root / "usage.journal.jsonl").exists()
    total = json.loads(rd.usage_path.read_text())["stages"]["eval"]["total"]
    assert total["calls"] == 2 and total["cached"] == 1


def test_serving_opens_without_the_cache_and_caps_concurrency(tmp_path):
    with OpenAITestServer() as srv:
        cfg = _cfg(tmp_path, srv.base_url, "strong.max_concurrency=8")
        with open_strong(cfg, cache=False, progress=False, max_concurrency=2) as client:
            assert client.cache is None and client.cfg.max_concurrency == 2
        assert not RunDir(cfg).usage_path.exists()  # no stage: nothing recorded
        other = strong_client(load_config(None, [f"output_dir={tmp_path}", "strong.cache=false"]), cfg.strong)
        assert other.cache is None
        other.close()
