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

Damaged checkpoints (an emptied data file, a deleted _METADATA, ...): `restore_checked` tells
them apart from a state of another structure (a different model: `StructureMismatchError`, a
config error) by comparing the saved tree's metadata with the expected one first; what then
fails to read is `DamagedCheckpointError`. `restore_newest_intact` walks back from the newest
checkpoint to the newest intact one, moving damaged ones aside (training) or skipping them
(evaluation, which never writes).
"""
import datetime
import math
import os
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from orbax.checkpoint import checkpoint_managers as ocp_managers

BEST_MODES = ("max", "min")


def _best_fn(metric: str, mode: str):
  missing = -math.inf if mode == "max" else math.inf

  def best_fn(metrics: dict[str, float]) -> float:
    return float(metrics.get(metric, missing))

  return best_fn


DAMAGED_DIR = "damaged_checkpoints"  # Next to checkpoints/: where damaged steps are moved.


class DamagedCheckpointError(RuntimeError):
  """The checkpoint of `step` cannot be read (missing or corrupt files)."""

  def __init__(self, step: int, reason: str):
    super().__init__(f"checkpoint of step {step} is damaged ({reason})")
    self.step = step
    self.reason = reason


class StructureMismatchError(ValueError):
  """The checkpoint holds a state of another structure than the config's model/optimizer."""


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:200] if text else ''}"


def _key_name(entry: Any) -> str:
  for attr in ("key", "name", "idx"):  # DictKey, GetAttrKey (named tuples), SequenceKey.
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def _leaves_by_path(tree: Any) -> dict[str, Any]:
  """{"opt_state/1/0/mu/head/bias": leaf}: named tuples saved as dicts compare equal."""
  return {"/".join(_key_name(e) for e in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_options(keep: int, best_mode: str) -> None:
  """ValueError naming checkpoint.keep / checkpoint.best_mode if invalid."""
  if keep < 1:
    raise ValueError(f"checkpoint.keep={keep} must be >= 1.")
  if best_mode not in BEST_MODES:
    raise ValueError(f"checkpoint.best_mode={best_mode!r}; allowed: {', '.join(BEST_MODES)}.")


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
    check_options(keep, best_mode)
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

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def check(self, step: int, abstract_state: Any) -> None:
    """Compares the saved tree of `step` (paths and shapes) with `abstract_state`.

    Raises:
      DamagedCheckpointError: the tree metadata is missing or unreadable.
      StructureMismatchError: it is readable but describes another state (naming the paths).
    """
    try:
      tree = ocp.StandardCheckpointHandler().metadata(
          epath.Path(self.step_dir(step)) / "default")
    except Exception as e:  # pylint: disable=broad-except
      raise DamagedCheckpointError(step, _first_line(e)) from None
    if tree is None:
      raise DamagedCheckpointError(step, "its tree metadata (default/_METADATA) is missing")
    saved, expected = _leaves_by_path(tree), _leaves_by_path(abstract_state)
    missing, extra = sorted(expected.keys() - saved.keys()), sorted(saved.keys() - expected.keys())
    reshaped = sorted(k for k in saved.keys() & expected.keys()
                      if getattr(saved[k], "shape", None) is not None
                      and tuple(saved[k].shape) != tuple(expected[k].shape))
    if missing or extra or reshaped:
      parts = [f"{label} {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
               for label, keys in (("not in the checkpoint:", missing),
                                   ("only in the checkpoint:", extra),
                                   ("other shape:", reshaped)) if keys]
      raise StructureMismatchError(
          f"the checkpoint of step {step} in {self.directory} holds another model or optimizer "
          f"than the config ({'; '.join(parts)}). Train this config in a new workdir.")

  def restore_checked(self, step: int, abstract_state: Any) -> Any:
    """`restore` after `check`; a failure to read becomes DamagedCheckpointError."""
    self.check(step, abstract_state)
    try:
      return self.restore(step, abstract_state)
    except Exception as e:  # pylint: disable=broad-except
      raise DamagedCheckpointError(step, _first_line(e)) from None

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


def move_aside(checkpoints_dir: str, step: int) -> str:
  """Moves `<checkpoints_dir>/<step>` to `<checkpoints_dir>/../damaged_checkpoints/`.

  Local or gs:// (epath; on an object store the move is a copy and a delete).
  """
  directory = epath.Path(checkpoints_dir)
  dest_root = directory.parent / DAMAGED_DIR
  dest_root.mkdir(parents=True, exist_ok=True)
  dest = dest_root / str(step)
  if dest.exists():
    dest = dest_root / f"{step}.{datetime.datetime.now().strftime('%Y%m%dT%H%M%S')}"
  (directory / str(step)).rename(dest)
  return os.fspath(dest)


def restore_newest_intact(open_checkpoints: Callable[[], Checkpoints], abstract_state: Any, *,
                          move_damaged: bool, steps: list[int] | None = None,
                          sync: Callable[[], None] = lambda: None,
                          is_main: bool = True) -> tuple[Checkpoints, int | None, Any]:
  """Restores the newest readable checkpoint: (manager, step, state); (manager, None, None).

  Args:
    open_checkpoints: opens the run's checkpoint manager (re-called after a move: orbax caches
      the list of steps).
    abstract_state: the expected state (see `Checkpoints.restore`).
    move_damaged: move damaged checkpoints aside (training) or only skip them (evaluation).
    steps: candidate steps, newest first tried first (default: all saved steps).
    sync: a barrier between processes (after process 0 moved a directory).
    is_main: whether this process moves directories and logs.

  Raises:
    StructureMismatchError: a readable checkpoint of another model (not damage: not moved).
  """
  checkpoints = open_checkpoints()
  candidates = sorted(checkpoints.all_steps() if steps is None else steps)
  while candidates:
    step = candidates.pop()
    try:
      return checkpoints, step, checkpoints.restore_checked(step, abstract_state)
    except DamagedCheckpointError as e:
      older = f"step {candidates[-1]}" if candidates else "none (starting from scratch)"
      if move_damaged:
        checkpoints.close()
        if is_main:
          dest = move_aside(checkpoints.directory, step)
          logging.warning("The %s: moved it to %s. Newest older checkpoint: %s.", e, dest, older)
        sync()
        checkpoints = open_checkpoints()
      elif is_main:
        logging.warning("The %s: skipped it. Newest older checkpoint: %s.", e, older)
  return checkpoints, None, None


# Parameters a fine-tune may re-initialise when the source has none or another shape: the
# classifier (another dataset's classes, or a headless backbone such as DINOv3).
REINIT_PREFIXES = ("head/",)


def load_params(source_workdir: str, params: Any, sharding: Any) -> tuple[Any, list[str]]:
  """`params` with every parameter taken from the newest checkpoint of `source_workdir`.

  For `init_from` (fine-tuning: parameters only, the optimizer starts fresh). Every parameter
  of `params` must be in the source with the same shape, except those under
  `REINIT_PREFIXES` (the head), which keep their fresh values when missing or of another shape;
  a source parameter the model lacks is refused too.

  Args:
    source_workdir: a workdir written by train.py or scripts/port_checkpoint.py.
    params: the freshly initialised parameters (their tree, shapes and values).
    sharding: the sharding of the restored arrays (replicated).

  Returns:
    (params, the paths kept fresh).

  Raises:
    ValueError naming `init_from` and the paths that do not fit.
  """
  remote = "://" in source_workdir
  directory = os.path.join(source_workdir if remote else os.path.abspath(source_workdir),
                           "checkpoints")
  if not remote and not os.path.isdir(directory):
    raise ValueError(f"init_from={source_workdir}: no checkpoints/ directory (not a workdir of "
                     "train.py or scripts/port_checkpoint.py).")
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      read_only=True))
  try:
    step = manager.latest_step()
  finally:
    manager.close()
  if step is None:
    raise ValueError(f"init_from={source_workdir}: no checkpoint in {directory}.")
  path = epath.Path(directory) / str(step) / "default"
  tree = ocp.StandardCheckpointHandler().metadata(path)
  saved = {k[len("params/"):]: v for k, v in _leaves_by_path(tree).items()
           if k.startswith("params/")}
  fresh = _leaves_by_path(params)
  fits = lambda k: k in saved and tuple(saved[k].shape) == tuple(fresh[k].shape)
  kept = sorted(k for k in fresh if not fits(k) and k.startswith(REINIT_PREFIXES))
  describe = lambda k: (f"{k} (not in the checkpoint)" if k not in saved else
                        f"{k} ({list(saved[k].shape)} in the checkpoint, "
                        f"{list(fresh[k].shape)} in the model)")
  bad = sorted(describe(k) for k in fresh if not fits(k) and k not in kept)
  extra = sorted(k for k in saved if k not in fresh)
  if bad or extra:
    listed = bad[:6] + [f"{k} (not in the model)" for k in extra[:6]]
    raise ValueError(f"init_from={source_workdir} (step {step}) holds other parameters than "
                     f"the model: {'; '.join(listed)}.")
  abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
                          tree)
  restored = _leaves_by_path(ocp.StandardCheckpointer().restore(path, abstract)["params"])
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  leaves = []
  for key_path, leaf in flat:
    name = "/".join(_key_name(e) for e in key_path)
    leaves.append(leaf if name in kept else restored[name].astype(leaf.dtype))
  return jax.tree_util.tree_unflatten(treedef, leaves), kept
