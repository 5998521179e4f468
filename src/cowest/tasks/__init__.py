"""Tasks: IfQA, MedMCQA, ProsocialDialog, a user's own JSONL task, and the embedded demo task."""

from __future__ import annotations

from cowest.config import TaskConfig
from cowest.errors import ConfigError
from cowest.tasks.base import Example, Task, subsample

TASK_NAMES = ("ifqa", "medmcqa", "prosocial_dialog", "jsonl", "demo")


def get_task(cfg: TaskConfig) -> Task:
    """The task named in ``cfg`` (raises ConfigError listing valid names)."""
    if cfg.name == "ifqa":
        from cowest.tasks.ifqa import IfQA

        return IfQA(cfg.data)
    if cfg.name == "medmcqa":
        from cowest.tasks.medmcqa import MedMCQA

        return MedMCQA(cfg.data)
    if cfg.name == "prosocial_dialog":
        from cowest.tasks.prosocial import ProsocialDialog

        return ProsocialDialog(cfg.data)
    if cfg.name == "jsonl":
        from cowest.tasks.jsonl_task import JsonlTask

        return JsonlTask(cfg)
    if cfg.name == "demo":
        from cowest.tasks.demo import DemoTask

        return DemoTask(cfg.data)
    raise ConfigError(f"task.name: unknown task {cfg.name!r}; valid tasks: {', '.join(TASK_NAMES)}")


__all__ = ["Example", "Task", "TASK_NAMES", "get_task", "subsample"]
