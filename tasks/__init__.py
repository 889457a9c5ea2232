"""Task registry: `get_task(config)` builds the task named by `config.task`.

A task module registers its class with `@register("name")` and is listed in `_TASK_MODULES`
(imported lazily, so a task's dependencies are only needed when it is used).

The entry points (train.py, eval.py) call `get_task` and hand the task to the trainer
(`trainer.train_and_evaluate(config, workdir, task=...)`, `trainer.loop.build(config,
task=...)`): a task may import the trainer, the trainer imports no task
(tests/test_trainer_imports.py).
"""
import importlib
from typing import Callable

import ml_collections

from tasks.base import Task

# Task name -> module defining it. Add a line here when adding a task (e.g. "vlm": "tasks.vlm").
_TASK_MODULES = {
    "classification": "tasks.classification",
    "vlm": "tasks.vlm",
}
_REGISTRY: dict[str, type[Task]] = {}


def register(name: str) -> Callable[[type[Task]], type[Task]]:
  """Class decorator adding a Task subclass to the registry under `name`."""

  def decorator(cls: type[Task]) -> type[Task]:
    if name in _REGISTRY and _REGISTRY[name] is not cls:
      raise ValueError(f"Task {name!r} is registered twice.")
    _REGISTRY[name] = cls
    return cls

  return decorator


def names() -> list[str]:
  """Every task name that `get_task` accepts."""
  return sorted(set(_TASK_MODULES) | set(_REGISTRY))


def get_task(config: ml_collections.ConfigDict) -> Task:
  """Builds `config.task`'s task from the full config (validating it)."""
  name = config.get("task")
  if name not in _REGISTRY and name in _TASK_MODULES:
    importlib.import_module(_TASK_MODULES[name])
  if name not in _REGISTRY:
    raise ValueError(f"config.task={name!r} is not a known task; allowed: {', '.join(names())}.")
  return _REGISTRY[name](config)


__all__ = ["Task", "get_task", "names", "register"]
