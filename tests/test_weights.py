"""One answer to "which weak model, with which adapters, for this stage and round"."""

import json

import pytest

from cowest.config import load_config
from cowest.errors import NotReadyError
from cowest.rundir import RunDir
from cowest.training import FULL_MODEL_MARKER
from cowest.weights import (aligned_chain, drafting_chain, last_aligned_round, serving_choice, sft_chain,
                            weak_for)


def _cfg(tmp_path, *extra):
    return load_config(None, [f"output_dir={tmp_path}", "name=w", "rounds=2", *extra])


def _adapter(path):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text("{}")


def _aligned(cfg, r, info):
    rd = RunDir(cfg)
    _adapter(rd.align_adapter(r))
    (rd.align(r) / "adapter_info.json").write_text(json.dumps(info))


def test_nothing_trained_yet(tmp_path):
    cfg = _cfg(tmp_path)
    assert sft_chain(cfg) is None and last_aligned_round(cfg) is None
    assert serving_choice(cfg) == ("base", None)
    assert weak_for(cfg, "aligned") is None
    with pytest.raises(NotReadyError, match="run `cowest sft` first"):
        weak_for(cfg, "feedback", 1)  # one error class, whichever stage asks
    with pytest.raises(NotReadyError, match="run `cowest align --round 1` first"):
        drafting_chain(cfg, 2)


def test_sft_adapter_then_aligned_rounds(tmp_path):
    cfg = _cfg(tmp_path)
    rd = RunDir(cfg)
    _adapter(rd.sft_adapter)
    assert sft_chain(cfg) == {"base": "weak", "merge": ["sft/adapter"]}
    assert drafting_chain(cfg, 1) == sft_chain(cfg)
    assert serving_choice(cfg) == ("sft", str(rd.sft_adapter))
    info = {"base": "weak", "merge": ["align/round1/adapter"], "self_contained": True}
    _aligned(cfg, 1, info)
    assert last_aligned_round(cfg) == 1 and aligned_chain(cfg, 1) == info
    assert drafting_chain(cfg, 2) == {"base": "weak", "merge": ["align/round1/adapter"]}
    assert serving_choice(cfg) == ("aligned", str(rd.align_adapter(1)))


def test_full_fine_tuned_sft_model_is_a_base_not_an_adapter(tmp_path):
    cfg = _cfg(tmp_path)
    sft = RunDir(cfg).sft_adapter
    sft.mkdir(parents=True)
    (sft / "config.json").write_text("{}")
    (sft / FULL_MODEL_MARKER).write_text("{}")
    assert sft_chain(cfg) == {"base": "sft/adapter", "merge": []}


def test_configured_adapter_wins(tmp_path):
    ext = tmp_path / "mine"
    _adapter(ext)
    cfg = _cfg(tmp_path, f"weak.adapter={ext}")
    _adapter(RunDir(cfg).sft_adapter)
    assert sft_chain(cfg)["merge"] == [str(ext.resolve())]
    assert serving_choice(cfg) == ("configured", str(ext))
