"""The run directory: where each stage reads and writes, and how a finished stage is recognised.

    runs/<name>/
      config.yaml                 resolved config (no secrets)
      strong_cache.sqlite         every strong-model answer, keyed by request + sample index
      usage.journal.jsonl         every paid strong call as it happens; usage.json (per stage and system) is made from it
      sft/adapter/                PEFT adapter + tokenizer; sft/metrics.json (loss curve)
      feedback/round<r>/          drafts.jsonl (draft journal), records.jsonl (one line per question), pairs.jsonl
                                  (what align reads: load_pairs), feedback_stats.json
      align/round<r>/adapter/     the aligned adapter; adapter_info.json (its chain of weights); metrics.json
      gate/                       calibration.jsonl (scores of the gate model's drafts on held-out training
                                  questions, and whether each was right), gate.json (AUROCs, score, threshold)
      validation/round<r>/        drafts.jsonl, records.jsonl (one line per held-out training question), validation.json:
                                  the alignment gain (feedback.validate)
      eval/                       predictions/<system>.jsonl (+ .fingerprint), metrics.json, report.md, systems.png,
                                  routing.png
      probe/                      `cowest probe`: drafts.jsonl (held-out training questions, drafted once), <endpoint>/
                                  strong.jsonl + collab.jsonl (rows per question), probe.json, probe.md, probe.png

One resume mechanism for every stage: a *fingerprint* (a hash of the config a result depends on) written in
a marker file next to the result. A stage writes ``.done.json`` when it finishes; a later run skips a stage
whose fingerprint matches, and refuses one whose config changed unless asked to overwrite (so results never
silently mix two configs). Work that resumes part-way (feedback's records, eval's prediction files) is
*claimed* first with a start marker (:func:`claim`): rows made under another fingerprint are refused or, with
overwrite, cleared.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cowest.config import RunConfig, dump_config
from cowest.errors import ConfigError
from cowest.io import write_json, write_text


class RunDir:
    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.root = cfg.run_dir

    # paths ---------------------------------------------------------------------------------------
    @property
    def sft(self) -> Path:
        return self.root / "sft"

    @property
    def sft_adapter(self) -> Path:
        return self.sft / "adapter"

    def feedback(self, round_: int) -> Path:
        return self.root / "feedback" / f"round{round_}"

    def pairs(self, round_: int) -> Path:
        """Feedback round ``round_``'s preference pairs, one JSON object a line (what align trains on)."""
        return self.feedback(round_) / "pairs.jsonl"

    def align(self, round_: int) -> Path:
        return self.root / "align" / f"round{round_}"

    def align_adapter(self, round_: int) -> Path:
        return self.align(round_) / "adapter"

    def validation(self, round_: int) -> Path:
        """Round ``round_``'s alignment gain on held-out training questions (``cowest validate``)."""
        return self.root / "validation" / f"round{round_}"

    @property
    def gate(self) -> Path:
        return self.root / "gate"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def probe(self) -> Path:
        return self.root / "probe"

    @property
    def cache_path(self) -> Path:
        return Path(self.cfg.strong.cache_path) if self.cfg.strong.cache_path else self.root / "strong_cache.sqlite"

    @property
    def usage_path(self) -> Path:
        return self.root / "usage.json"

    def collab_adapter(self) -> str | None:
        """The weak model used for `collab` (and as DPO reference): the SFT adapter, if trained."""
        if self.cfg.weak.adapter:
            return self.cfg.weak.adapter
        sft = self.sft_adapter
        # A LoRA adapter, or a fully fine-tuned model saved in the same place (sft.lora=false).
        if (sft / "adapter_config.json").exists() or (sft / "config.json").exists():
            return str(sft)
        return None

    def cowest_adapter(self) -> str | None:
        """The aligned weak model of the last finished round, if any."""
        for r in range(self.cfg.rounds, 0, -1):
            if (self.align_adapter(r) / "adapter_config.json").exists():
                return str(self.align_adapter(r))
        return None

    # lifecycle -----------------------------------------------------------------------------------
    def create(self) -> "RunDir":
        self.root.mkdir(parents=True, exist_ok=True)
        write_text(self.root / "config.yaml", dump_config(self.cfg))
        return self


# Settings that say where logs go, or what is measured after a stage (align.validation_questions,
# task.heldout_from: the stages measuring on held-out questions fingerprint them themselves), never what a
# stage computes: changing them must not redo a stage.
NOT_A_RESULT = frozenset({"report_to", "validation_questions", "heldout_from"})
# Settings added after runs existed, with the default that reproduces those runs: left out at that default,
# so a run made before them keeps its fingerprints and resumes.
ADDED_LATER = {"eval_share": 0.0, "metric": "auto", "sft_weight": 0.0, "extra_questions": 0}


def section_view(section: Any) -> dict[str, Any]:
    """A config section (dataclass or its dict) as fingerprinted: without ``NOT_A_RESULT`` keys, nor
    ``ADDED_LATER`` keys at their old default."""
    d = asdict(section) if hasattr(section, "__dataclass_fields__") else dict(section)
    return {k: v for k, v in d.items()
            if k not in NOT_A_RESULT and not (k in ADDED_LATER and v == ADDED_LATER[k])}


def fingerprint(*parts: Any) -> str:
    """A short stable hash of config sections (dataclasses or plain values; sections through
    :func:`section_view`)."""
    norm = [section_view(p) if hasattr(p, "__dataclass_fields__") else p for p in parts]
    blob = json.dumps(norm, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def strong_identity(cfg: RunConfig) -> tuple[Any, ...]:
    """What a strong answer depends on. A managed local server's model file and its engine count: the batch
    engine serves the bf16 weights, llama.cpp the quantized file, under different model names."""
    s = cfg.strong
    local = (s.local.gguf, s.local.engine) if s.local.gguf else None
    return (s.model, s.temperature, s.max_tokens, local)


def heldout_identity(cfg: RunConfig) -> tuple[int, ...]:
    """What picks the held-out training questions beyond ``task.n_train`` (``task.heldout_from``, left out of
    the task section: it changes no training stage), for the stages measuring on them. Empty when unset, so
    the fingerprints of runs made before it stay the same."""
    return () if cfg.task.heldout_from is None else (cfg.task.heldout_from,)


def read_fingerprint(marker: Path) -> str | None:
    """The fingerprint a marker file holds (``{"fingerprint": ...}``, or older plain text); None if unreadable."""
    try:
        text = marker.read_text()
    except OSError:
        return None
    try:
        return str(json.loads(text)["fingerprint"])
    except (ValueError, KeyError, TypeError):
        return text.strip() or None


def done_fingerprint(stage_dir: Path) -> str | None:
    """The fingerprint of a finished stage, or None when it has not finished."""
    return read_fingerprint(stage_dir / ".done.json")


def stage_status(stage_dir: Path, fp: str, legacy: str | None = None) -> str:
    """'done' (same fingerprint, or the ``legacy`` one older code gave the same config), 'stale' (finished
    under another config), or 'todo'."""
    old = done_fingerprint(stage_dir)
    if old is None:
        return "todo"
    return "done" if old in (fp, legacy) else "stale"


def check_stage(stage_dir: Path, fp: str, *, overwrite: bool, name: str, legacy: str | None = None) -> bool:
    """True when the stage must run. A stale stage is refused unless ``overwrite``, then cleared."""
    status = stage_status(stage_dir, fp, legacy)
    if status == "done" and not overwrite:
        return False
    if status == "stale" and not overwrite:
        raise ConfigError(
            f"stage {name!r} in {stage_dir} was run with a different config; pass --overwrite to redo it "
            "or choose another run name"
        )
    if status != "todo" and stage_dir.exists():
        shutil.rmtree(stage_dir)
    return True


def mark_done(stage_dir: Path, fp: str, **info: Any) -> None:
    write_json(stage_dir / ".done.json", {"fingerprint": fp, **info})


def claim(marker: Path, fp: str, *, overwrite: bool, refusal: str, clear: Callable[[], None],
          legacy: str | None = None) -> None:
    """Before resuming partial work: a start ``marker`` under another fingerprint (neither ``fp`` nor the
    ``legacy`` one) is refused with ``refusal`` (a ConfigError), or with ``overwrite`` the work is cleared by
    ``clear()``; then ``marker`` records ``fp``."""
    old = read_fingerprint(marker) if marker.exists() else None
    if marker.exists() and old not in (fp, legacy):
        if not overwrite:
            raise ConfigError(refusal)
        clear()
    write_json(marker, {"fingerprint": fp})


def load_pairs(cfg: RunConfig, round_: int) -> list[dict[str, Any]]:
    """Feedback round ``round_``'s preference pairs (``[]`` when it made none)."""
    from cowest.io import read_jsonl

    path = RunDir(cfg).pairs(round_)
    return read_jsonl(path) if path.exists() and path.stat().st_size else []
