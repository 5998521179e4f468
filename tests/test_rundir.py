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


def test_settings_added_later_keep_old_fingerprints_at_their_default():
    """A run made before align.eval_share / feedback.metric existed resumes under the new code."""
    from dataclasses import asdict

    from cowest.rundir import ADDED_LATER, section_view

    cfg = load_config(None, [])
    old_align = {k: v for k, v in asdict(cfg.align).items()
                 if k not in ("eval_share", "sft_weight", "report_to", "validation_questions")}
    assert section_view(cfg.align) == old_align
    assert "metric" not in section_view(cfg.feedback) and ADDED_LATER["metric"] == cfg.feedback.metric
    moved = load_config(None, ["align.eval_share=0.1", "feedback.metric=em", "align.sft_weight=0.2"])
    assert section_view(moved.align)["eval_share"] == 0.1 and section_view(moved.feedback)["metric"] == "em"
    assert section_view(moved.align)["sft_weight"] == 0.2
    assert fingerprint(moved.align) != fingerprint(cfg.align)
    # what is measured after a stage changes none of its fingerprints, at any value (validation fingerprints it)
    assert fingerprint(load_config(None, ["align.validation_questions=64"]).align) == fingerprint(cfg.align)


def test_heldout_from_changes_only_the_stages_that_measure_on_held_out_questions():
    from cowest.feedback.collect import collection_fingerprint
    from cowest.feedback.validate import records_fingerprint
    from cowest.inference.gate import calibration_fingerprint
    from cowest.sft.train import sft_fingerprint

    base = load_config(None, ["task.n_train=10"])
    pinned = load_config(None, ["task.n_train=10", "task.heldout_from=10"])
    assert sft_fingerprint(pinned) == sft_fingerprint(base)
    assert collection_fingerprint(pinned, 1) == collection_fingerprint(base, 1)
    assert records_fingerprint(pinned, 1) != records_fingerprint(base, 1)
    assert calibration_fingerprint(pinned, "sft") != calibration_fingerprint(base, "sft")
