import pytest

from cowest.config import load_config
from cowest.errors import ConfigError
from cowest.rundir import RunDir, check_stage, fingerprint, mark_done


def test_stage_lifecycle(tmp_path):
    cfg = load_config(None, [f"output_dir={tmp_path}", "name=r"])
    rd = RunDir(cfg).create()
    assert (rd.root / "config.yaml").exists()
    stage = rd.sft
    fp = fingerprint(cfg.sft, cfg.task)
    assert check_stage(stage, fp, overwrite=False, name="sft") is True
    stage.mkdir(parents=True)
    (stage / "artifact").write_text("x")
    mark_done(stage, fp)
    assert check_stage(stage, fp, overwrite=False, name="sft") is False
    other = fingerprint(load_config(None, ["sft.epochs=9"]).sft, cfg.task)
    assert other != fp
    with pytest.raises(ConfigError, match="different config; pass --overwrite"):
        check_stage(stage, other, overwrite=False, name="sft")
    assert (stage / "artifact").exists()  # refused: nothing deleted
    assert check_stage(stage, other, overwrite=True, name="sft") is True
    assert not (stage / "artifact").exists()
