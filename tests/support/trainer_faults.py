"""Kill a TRL/transformers training run at a chosen step, and count the steps a rerun trains.

A real SIGKILL of a test's own process is not possible, so the fault is an exception raised from
``Trainer.training_step`` before the step runs: the checkpoints written so far are what a kill leaves."""

from __future__ import annotations

from typing import Any


def _real_step() -> Any:
    """Trainer.training_step as transformers defines it, under any patch of ours."""
    from transformers import Trainer

    step = Trainer.training_step
    return getattr(step, "real_step", step)


def kill_before_step(monkeypatch: Any, step: int) -> None:
    """The next training run dies as it starts step ``step`` (1-based), with RuntimeError("killed")."""
    from transformers import Trainer

    real = _real_step()

    def killed(self: Any, *a: Any, **kw: Any) -> Any:
        if self.state.global_step == step - 1:
            raise RuntimeError("killed")
        return real(self, *a, **kw)

    killed.real_step = real  # type: ignore[attr-defined]
    monkeypatch.setattr(Trainer, "training_step", killed)


def count_steps(monkeypatch: Any) -> list[int]:
    """The steps (1-based) every later training run trains, appended as they start."""
    from transformers import Trainer

    real, steps = _real_step(), []

    def counted(self: Any, *a: Any, **kw: Any) -> Any:
        steps.append(self.state.global_step + 1)
        return real(self, *a, **kw)

    counted.real_step = real  # type: ignore[attr-defined]
    monkeypatch.setattr(Trainer, "training_step", counted)
    return steps
