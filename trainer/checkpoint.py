"""Checkpoints of the train state with orbax: the last N, plus the best by an eval metric.

Layout: `<workdir>/checkpoints/<step>/` (orbax step directories). The saved item is the whole
train state `{"params", "opt_state", "step", "rng"}`; with the data stream a pure function of
(seed, step) nothing else is needed to resume bitwise.

"Last N and the best" is one orbax preservation policy:
`AnyPreservationPolicy([LatestN(n), BestN(n=1, ...)])`. `best_fn` / `best_mode` are set as
well so that orbax writes the metrics next to each checkpoint and `best_step()` works (orbax
ignores them for deletion once a `preservation_policy` is given). Checkpoints saved between
evaluations carry an empty metrics dict, which `best_fn` scores as the worst possible value, so
they are never "the best" and only the LatestN rule keeps them.
"""
import math
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocp_managers

BEST_MODES = ("max", "min")


def _best_fn(metric: str, mode: str):
  missing = -math.inf if mode == "max" else math.inf

  def best_fn(metrics: dict[str, float]) -> float:
    return float(metrics.get(metric, missing))

  return best_fn


class Checkpoints:
  """An orbax CheckpointManager for one run; every process must call every method."""

  def __init__(self, directory: str, *, keep: int, best_metric: str | None = None,
               best_mode: str = "max", async_save: bool = True, read_only: bool = False):
    """Opens (creating if needed) the checkpoint directory.

    Args:
      directory: absolute path (or gs:// URL) of the checkpoint directory.
      keep: how many of the most recent checkpoints to keep (>= 1).
      best_metric: name of an eval metric (e.g. "test/accuracy"); the checkpoint with its best
        value is kept too. None: keep only the last `keep`.
      best_mode: "max" or "min": which value of `best_metric` is best.
      async_save: write checkpoints in a background thread (saves return early).
      read_only: only read (for evaluation): never create, clean up, save or delete.
    """
    if keep < 1:
      raise ValueError(f"checkpoint.keep={keep} must be >= 1.")
    if best_mode not in BEST_MODES:
      raise ValueError(f"checkpoint.best_mode={best_mode!r}; allowed: {', '.join(BEST_MODES)}.")
    policies = [ocp_managers.LatestN(n=keep)]
    best_fn = None
    if best_metric:
      best_fn = _best_fn(best_metric, best_mode)
      policies.append(ocp_managers.BestN(
          get_metric_fn=best_fn, reverse=best_mode == "min", n=1,
          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp_managers.AnyPreservationPolicy(policies),
        best_fn=best_fn, best_mode=best_mode, create=not read_only, read_only=read_only,
        enable_async_checkpointing=async_save, cleanup_tmp_directories=not read_only)
    self.directory = os.fspath(directory)
    self.best_metric = best_metric
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The step whose checkpoint has the best `best_metric` (latest if no metric is set)."""
    if not self.best_metric:
      return self.latest_step()
    scored = [s for s in self.all_steps() if self.best_metric in (self.metrics(s) or {})]
    return self._manager.best_step() if scored else None

  def metrics(self, step: int) -> dict[str, float] | None:
    return self._manager.metrics(step)

  def save(self, step: int, state: Any, metrics: dict[str, float] | None = None) -> bool:
    """Saves `state` at `step` unless that step is already saved; returns whether it saved."""
    if step in self.all_steps():
      return False
    return self._manager.save(
        step, args=ocp.args.StandardSave(state),
        metrics={k: float(v) for k, v in (metrics or {}).items()}, force=True)

  def restore(self, step: int, abstract_state: Any) -> Any:
    """Restores the state saved at `step` into the shapes/dtypes/shardings of `abstract_state`.

    Args:
      step: a saved step.
      abstract_state: pytree of `jax.ShapeDtypeStruct` with `.sharding` set, structured like
        the saved state.
    """
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are written (and old steps deleted)."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def abstract_like(state: Any, sharding: Any) -> Any:
  """`jax.ShapeDtypeStruct`s of `state` (arrays or structs) with the given sharding(s)."""
  if not isinstance(sharding, jax.sharding.Sharding):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        state, sharding)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)


def select_step(checkpoints: Any, which: str, workdir: str) -> int:
  """The step to restore for `which` = "best" (falling back to the latest), "latest" or a step.

  Raises ValueError naming the workdir when it has no such checkpoint.
  """
  if which == "best":
    step = checkpoints.best_step() or checkpoints.latest_step()
  elif which == "latest":
    step = checkpoints.latest_step()
  else:
    step = int(which)
    if step not in checkpoints.all_steps():
      raise ValueError(f"--checkpoint={step}: {workdir} has checkpoints "
                       f"{checkpoints.all_steps()}.")
  if step is None:
    raise ValueError(f"{workdir} has no checkpoint.")
  return step
