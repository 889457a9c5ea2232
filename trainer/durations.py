"""Durations given in steps or in epochs (big_vision's `{name}_steps` / `{name}_epochs`).

A config section says e.g. `total_epochs=400` or `total_steps=20000`. When both are set the
step count wins, so `--config.training.total_steps=100` shortens an epoch-based recipe without
also having to clear `total_epochs`. Epochs are converted with the task's number of training
examples, so a changed batch size keeps the recipe's length in epochs.
"""
import math

import ml_collections


def steps_per_epoch(num_train_examples: int | None, global_batch_size: int) -> float | None:
  """Updates per pass over the training set (None if the task has no finite training set)."""
  if not num_train_examples:
    return None
  return num_train_examples / global_batch_size


def to_steps(section: ml_collections.ConfigDict, section_name: str, name: str, *,
             steps_per_epoch: float | None, allow_none: bool = False) -> int | None:
  """Reads `section.{name}_steps` (if set) or else `section.{name}_epochs` as a step count.

  Args:
    section: the config section holding the two keys.
    section_name: its name in the config, for error messages (e.g. "training").
    name: the duration's name (e.g. "total", "warmup", "every").
    steps_per_epoch: from `steps_per_epoch`; needed only when epochs are given.
    allow_none: whether both keys may be None (returns None then).

  Returns:
    A non-negative int (epochs are rounded up to whole steps), or None.

  Raises:
    ValueError naming the keys if (unless allowed) neither is set, if a value is negative, or
    if epochs are given for a task without an epoch length.
  """
  steps = section.get(f"{name}_steps")
  epochs = section.get(f"{name}_epochs")
  key_s, key_e = f"{section_name}.{name}_steps", f"{section_name}.{name}_epochs"
  if steps is None and epochs is None:
    if allow_none:
      return None
    raise ValueError(f"Set one of {key_s} and {key_e}.")
  if steps is not None:
    if steps < 0:
      raise ValueError(f"{key_s}={steps} must be >= 0.")
    return int(steps)
  if epochs < 0:
    raise ValueError(f"{key_e}={epochs} must be >= 0.")
  if steps_per_epoch is None:
    raise ValueError(f"{key_e} needs a training set of known size; use {key_s} instead.")
  return int(math.ceil(epochs * steps_per_epoch - 1e-9))
