"""The training loop shared by every task: `train_and_evaluate(config, workdir, task=task)`.

The trainer imports no task: the caller (train.py, eval.py, tasks/vlm_eval.py, tests) builds
the task, normally with `tasks.get_task(config)`, and passes it in.

Sections: set-up (mesh, optimizer, config validation) -> workdir (lock, config check) -> state
(restore the newest intact checkpoint or initialise) -> compile -> loop (step, NaN guard,
logs, evals, checkpoints, SIGTERM / SIGINT) -> clean-up.

Guarantees:
* One live run per workdir (trainer/workdir.py `Lock`): a second one raises
  `WorkdirInUseError` naming the first; a lock left by a killed run is taken over.
* The workdir's config does not silently change: a config differing from config.json in
  anything but `trainer.workdir.RUN_KEYS` raises `ConfigChangedError` (listing the keys) before
  anything in the workdir is written, unless `allow_config_change` (then the old file is kept
  as config.<step>.json). Extending a run logs how the learning-rate schedule changes.
* Resuming: the newest intact checkpoint in `<workdir>/checkpoints` is restored automatically
  (damaged newer ones are logged and moved to `<workdir>/damaged_checkpoints/`) and the
  data stream restarts at its step, so an interrupted and resumed run computes exactly the
  same updates as an uninterrupted one (bitwise on CPU).
* SIGTERM / SIGINT: the current step finishes, a checkpoint of that step is saved, and
  `RunResult.status == "preempted"` is returned (`RunResult.signal` names the signal).
* A non-finite training metric (loss, grad norm, ...) raises `NonFiniteLossError` naming the
  first bad step. The host checks the metrics of every step before each log line, evaluation
  and checkpoint, so no state computed at or after that step is ever saved and the last good
  checkpoint stays (the "LatestN" policy never deletes the newest checkpoint).
"""
import dataclasses
import functools
import json
import math
import os
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from trainer import checkpoint as ckpt_lib
from trainer import cost
from trainer import durations
from trainer import files
from trainer import mesh as mesh_lib
from trainer import metrics as metrics_lib
from trainer import optim
from trainer import preemption
from trainer import progress as progress_lib
from trainer import sharding as sharding_lib
from trainer import step as step_lib
from trainer import workdir as workdir_lib

ConfigChangedError = workdir_lib.ConfigChangedError
WorkdirInUseError = workdir_lib.WorkdirInUseError
StructureMismatchError = ckpt_lib.StructureMismatchError

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


class NonFiniteLossError(FloatingPointError):
  """A training metric became NaN/inf; `step` is the first step where it happened."""

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


@dataclasses.dataclass
class RunResult:
  """What `train_and_evaluate` returns."""
  status: str  # "finished" or "preempted".
  step: int  # The step of the final state (== its checkpoint's step).
  eval_metrics: dict[str, float]  # The last evaluation's metrics ({} if none ran).
  signal: str = ""  # "SIGTERM" / "SIGINT" when preempted.


def workdir_paths(workdir: str) -> dict[str, str]:
  """Where a run keeps its files (local paths or gs:// URLs, as `workdir`)."""
  root = files.path(workdir)
  return {"config": os.fspath(root / CONFIG_FILE),
          "checkpoints": os.fspath(root / CHECKPOINT_DIR),
          "metrics": os.fspath(root / metrics_lib.METRICS_FILE)}


_absolute = files.absolute


def _run_lengths(config: ml_collections.ConfigDict,
                 num_train_examples: int | None) -> dict[str, int | None]:
  """Total, warm-up, eval, checkpoint and log periods in steps; ValueError on bad values."""
  spe = durations.steps_per_epoch(num_train_examples, config.training.batch_size)
  total = durations.to_steps(config.training, "training", "total", steps_per_epoch=spe)
  if total < 1:
    raise ValueError(f"The run must have at least one step; training.total_* gives {total}.")
  lengths = {
      "total": total,
      "warmup": durations.to_steps(config.optim, "optim", "warmup", steps_per_epoch=spe),
      "eval": durations.to_steps(config.eval, "eval", "every", steps_per_epoch=spe,
                                 allow_none=True),
      "checkpoint": durations.to_steps(config.checkpoint, "checkpoint", "every",
                                       steps_per_epoch=spe, allow_none=True),
      "log": int(config.training.log_every_steps),
  }
  if lengths["log"] < 1:
    raise ValueError(f"training.log_every_steps={lengths['log']} must be >= 1.")
  return lengths


def _every(step: int, period: int | None) -> bool:
  return bool(period) and step % period == 0


def _fetch_and_check(pending: Sequence[tuple[int, Mapping[str, jax.Array]]]
                     ) -> list[dict[str, np.ndarray]]:
  """Fetches per-step metrics to the host; raises on the first non-finite one."""
  values = jax.device_get([m for _, m in pending])  # The host<->device sync point.
  for (step, _), m in zip(pending, values):
    bad = [k for k, v in m.items() if not np.all(np.isfinite(v))]
    if bad:
      first = "loss" if "loss" in bad else bad[0]  # Name the loss first when it is bad.
      others = [k for k in bad if k != first]
      raise NonFiniteLossError(
          f"Training diverged: {first}={float(m[first])} at step {step}"
          + (f" (also non-finite: {', '.join(sorted(others))})" if others else "")
          + ". Stopped; nothing from this step on was saved.", step)
  return values


def _mean_metrics(values: Sequence[Mapping[str, np.ndarray]]) -> dict[str, float]:
  return {f"train/{k}": float(np.mean([m[k] for m in values])) for k in values[-1]}


def evaluate(task: Any, params: Any, eval_step: Any,
             mesh: jax.sharding.Mesh) -> dict[str, float]:
  """Runs every eval set of `task`; returns {"<set>/<metric>": mean over valid examples}."""
  results = {}
  for name, batches in task.eval_sets().items():
    sums = None
    for local in batches:
      out = eval_step(params, mesh_lib.global_batch(local, mesh))
      sums = out if sums is None else jax.tree.map(lambda a, b: a + b, sums, out)
    if sums is None:
      continue
    sums = jax.device_get(sums)
    count = float(sums.pop("count"))
    for k, v in sums.items():
      results[f"{name}/{k}"] = float(v) / count if count else math.nan
    results[f"{name}/count"] = count
  return results


def make_eval_step(task: Any, mesh: jax.sharding.Mesh) -> Any:
  """The task's (a tasks/base.py Task) eval step, jit-ted, with replicated outputs.

  The inputs keep the shardings they come with: parameters as the train state (or a
  restore) placed them (`Setup.state_sharding`), the batch split as `mesh_lib.global_batch`
  splits it.
  """
  return jax.jit(task.eval_step, out_shardings=mesh_lib.replicated(mesh))


def _config_json(config: ml_collections.ConfigDict) -> str:
  return config.to_json_best_effort(indent=2, sort_keys=True)


_write_atomic = files.write_atomic


@dataclasses.dataclass
class ConfigCheck:
  """What `check_config` found: the workdir's previous config, if any, and what changed."""
  old: dict | None  # The previous config.json (None: a new workdir).
  old_text: str | None
  changes: dict  # {key: (old, new)} outside trainer.workdir.RUN_KEYS (allowed if non-empty).


def check_config(config: ml_collections.ConfigDict, workdir: str, *,
                 allow_change: bool = False,
                 upgrade: Callable[[dict], dict] = lambda d: d) -> ConfigCheck:
  """Compares `config` with the workdir's config.json; writes nothing.

  Raises ConfigChangedError (listing the keys) if they differ outside
  `trainer.workdir.RUN_KEYS` and not `allow_change`. `upgrade` (the task's `upgrade_config`)
  brings the stored config to today's form first.
  """
  old_text = files.read_text(workdir_paths(workdir)["config"])
  if old_text is None:
    return ConfigCheck(old=None, old_text=None, changes={})
  old = json.loads(old_text)
  # An older version's config.json lacks the keys added since with backward-compatible
  # defaults: the task's `upgrade` fills them in, so they are not a change.
  changes = workdir_lib.config_changes(upgrade(old), json.loads(_config_json(config)))
  if changes and not allow_change:
    raise ConfigChangedError(
        f"the config differs from the one workdir {workdir} was started with, in "
        f"{len(changes)} key(s): {_listed(changes)}. Use another --workdir, or pass "
        "--allow_config_change to continue this run with the new config.", list(changes))
  return ConfigCheck(old=old, old_text=old_text, changes=changes)


def _listed(changes: dict) -> str:
  return "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())


def write_config(config: ml_collections.ConfigDict, workdir: str, check: ConfigCheck,
                 step: int) -> None:
  """Writes config.json; an allowed change first keeps the old one as config.<step>.json."""
  if check.changes:
    kept = os.fspath(files.path(workdir) / f"config.{step}.json")
    _write_atomic(kept, check.old_text)
    logging.warning("--allow_config_change: the config changed in %s from step %d on; the old "
                    "config is kept as %s.", _listed(check.changes), step, kept)
  _write_atomic(workdir_paths(workdir)["config"], _config_json(config))


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in `workdir` was started with (written by `train_and_evaluate`)."""
  text = files.read_text(workdir_paths(workdir)["config"])
  if text is None:
    raise ValueError(f"No {CONFIG_FILE} in workdir {workdir!r}: not a training workdir.")
  return ml_collections.ConfigDict(json.loads(text))


@dataclasses.dataclass
class Setup:
  """Everything derived from a config before any compilation (see `build`)."""
  task: Any  # A tasks/base.py Task.
  mesh: jax.sharding.Mesh
  lengths: dict[str, int | None]  # total / warmup / eval / checkpoint / log, in steps.
  tx: Any  # optax.GradientTransformation
  schedule: Any  # optax.Schedule

  @functools.cached_property
  def state_shapes(self) -> dict[str, Any]:
    """`jax.ShapeDtypeStruct`s of the train state (the same for every seed), traced once."""
    return jax.eval_shape(step_lib.make_init_fn(self.task, self.tx), jax.random.key(0))

  @functools.cached_property
  def state_sharding(self) -> dict[str, Any]:
    """Where each leaf of the train state lives on `mesh` (trainer/sharding.py): parameters
    and optimizer moments split over "fsdp" by their logical axis names, the rest replicated.
    Computed from shapes only (no compilation), once."""
    shapes = self.state_shapes
    params, unsplit = sharding_lib.param_shardings(
        self.task.param_logical_specs(), shapes["params"], self.mesh)
    if unsplit and jax.process_index() == 0:
      logging.info("mesh.fsdp=%d: %d parameter(s) stay whole (no named dimension divisible by "
                   "%d): %s", self.mesh.shape[mesh_lib.FSDP_AXIS], len(unsplit),
                   self.mesh.shape[mesh_lib.FSDP_AXIS],
                   ", ".join(unsplit[:8]) + (" ..." if len(unsplit) > 8 else ""))
    return sharding_lib.state_shardings(shapes, params, self.tx, self.mesh)


def build(config: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None, *,
          task: Any) -> Setup:
  """Validates `config` and builds mesh and optimizer (ValueError naming the option).

  Args:
    config: the full experiment config.
    devices: devices of the mesh; default all devices of all processes.
    task: the config's task (a tasks/base.py Task), e.g. `tasks.get_task(config)`.
  """
  # config.mesh: absent from configs written before it existed (eval.py reads those as they
  # are): pure data parallelism, as those runs trained.
  mesh = mesh_lib.make_mesh(devices, config.get("mesh"))
  process_count = jax.process_count()
  mesh_lib.check_batch_size(config.training.batch_size, mesh, process_count,
                            "training.batch_size")
  mesh_lib.check_batch_size(config.eval.batch_size, mesh, process_count, "eval.batch_size")
  lengths = _run_lengths(config, task.num_train_examples)
  ckpt_lib.check_options(config.checkpoint.keep, config.checkpoint.best_mode)
  cost.check_override(config.training.get("peak_tflops_per_device"))
  source = config.get("init_from")
  if source and "://" not in source and not os.path.isdir(os.path.join(source, CHECKPOINT_DIR)):
    raise ValueError(f"init_from={source}: no {CHECKPOINT_DIR}/ directory (not a workdir of "
                     "train.py or scripts/port_checkpoint.py).")
  tx, schedule = optim.make_optimizer(config.optim, total_steps=lengths["total"],
                                      warmup_steps=lengths["warmup"])
  return Setup(task=task, mesh=mesh, lengths=lengths, tx=tx, schedule=schedule)


def abstract_state(setup: Setup, seed: int) -> Any:
  """Shapes, dtypes and shardings (`Setup.state_sharding`) of the train state, without
  computing it. A checkpoint restored into it lands on this mesh whatever mesh saved it."""
  del seed  # Shapes and shardings do not depend on it (kept: callers pass the run's seed).
  return ckpt_lib.abstract_like(setup.state_shapes, setup.state_sharding)


def open_checkpoints(config: ml_collections.ConfigDict, workdir: str, *,
                     read_only: bool = False) -> ckpt_lib.Checkpoints:
  """The checkpoint manager of the run in `workdir` as configured by `config.checkpoint`."""
  return ckpt_lib.Checkpoints(
      workdir_paths(_absolute(workdir))["checkpoints"], keep=config.checkpoint.keep,
      best_metric=config.checkpoint.best_metric or None, best_mode=config.checkpoint.best_mode,
      async_save=config.checkpoint.async_save, read_only=read_only)


def jit_train_step(setup: Setup) -> Any:
  """The jit-ted train step: the state (donated) as `Setup.state_sharding` places it, the
  batch split over every device, replicated metrics."""
  state = setup.state_sharding
  return jax.jit(step_lib.make_train_step(setup.task, setup.tx, setup.schedule),
                 in_shardings=(state, mesh_lib.batch_sharding(setup.mesh)),
                 out_shardings=(state, mesh_lib.replicated(setup.mesh)), donate_argnums=0)


def init_state(setup: Setup, seed: int) -> Any:
  """A fresh train state, computed on the devices in its shardings (`Setup.state_sharding`)."""
  return jax.jit(step_lib.make_init_fn(setup.task, setup.tx),
                 out_shardings=setup.state_sharding)(jax.random.key(seed))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, task: Any,
                       devices: Sequence[jax.Device] | None = None,
                       allow_config_change: bool = False, command: str = "") -> RunResult:
  """Trains `config.task` in `workdir`, resuming from its newest checkpoint if there is one.

  Args:
    config: the full, locked experiment config (configs/common.py documents the keys).
    workdir: directory (created if needed) for config.json, metrics.jsonl, tensorboard/,
      checkpoints/ and the lock file train.lock.
    task: the config's task (a tasks/base.py Task), e.g. `tasks.get_task(config)`.
    devices: devices of the mesh (config.mesh splits them); default all devices of all processes.
    allow_config_change: continue a workdir whose config.json differs from `config`.
    command: what the lock file names as this run's command (for the error of a second run).

  Returns:
    A RunResult; status "preempted" if SIGTERM / SIGINT arrived (a checkpoint of `step` is
    saved).

  Raises:
    ValueError: bad config (naming the option) or workdir path, before anything is compiled;
      ConfigChangedError (a ValueError) for a config differing from the workdir's.
    WorkdirInUseError: another live run holds the workdir.
    StructureMismatchError: (a ValueError) the checkpoint holds another model.
    NonFiniteLossError: the loss (or another train metric) became NaN/inf.
  """
  # SIGTERM / SIGINT are caught from the very start: one arriving during set-up or
  # compilation stops the run after its first step, with a checkpoint.
  with preemption.StopOnSignal() as stopper:
    workdir = _absolute(workdir)
    workdir_lib.check_path(workdir)
    setup = build(config, devices, task=task)  # Rejects bad configs before the workdir.
    lock = None
    if jax.process_index() == 0:
      lock = workdir_lib.Lock(workdir, command=command)
    try:
      error = None
      if lock is not None:
        try:
          lock.acquire()
          for message in (lock.stale_message, lock.remote_message):
            if message:
              logging.warning("%s", message)
        except WorkdirInUseError as e:
          error = e
      if jax.process_count() > 1:  # Every process stops if process 0 could not lock.
        flags = multihost_utils.process_allgather(np.int32(error is not None))
        if np.any(flags) and error is None:
          error = WorkdirInUseError(f"workdir {workdir} is in use by another run.")
      if error is not None:
        raise error
      return _train(config, workdir, setup, stopper, allow_config_change)
    finally:
      if lock is not None:
        lock.release()


def _schedule_change(config: ml_collections.ConfigDict, old: dict, setup: Setup,
                     step: int) -> str | None:
  """What extending / shortening a resumed run does to its learning-rate schedule."""
  changed = workdir_lib.length_changes(old, json.loads(_config_json(config)))
  if not changed or step <= 0:
    return None
  try:
    old_config = ml_collections.ConfigDict(old)
    old_total = _run_lengths(old_config, setup.task.num_train_examples)["total"]
  except (ValueError, KeyError, AttributeError, TypeError):
    return None
  old_schedule = optim.make_schedule(config.optim, total_steps=old_total,
                                     warmup_steps=setup.lengths["warmup"])
  before, after = float(old_schedule(step - 1)), float(setup.schedule(step))
  total = setup.lengths["total"]
  how = ("the cosine decay is recomputed over the new length, so the learning rate jumps"
         if config.optim.schedule == "cosine" else "the constant schedule is unchanged:")
  return (f"The run length changed from {old_total} to {total} steps "
          f"({', '.join(f'{k}: {a} -> {b}' for k, (a, b) in changed.items())}), resuming at "
          f"step {step}: {how} from {before:.3g} (step {step}, old schedule) to {after:.3g} "
          f"(step {step + 1}), and reaches optim.end_lr={config.optim.end_lr:g} at step "
          f"{total}.")


def _peak_tflops(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> float | None:
  """The peak TFLOP/s of one of this process's devices, for MFU (logged with its source)."""
  local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
  peak, source = cost.peak_tflops_per_device(local, config.training.get("peak_tflops_per_device"))
  if peak is None:
    logging.info("No MFU: %s.", source)
  else:
    logging.info("MFU is relative to %.4g TFLOP/s per device (%s).", peak, source)
  return peak
def _init_from(source: str, state: Any, setup: Setup) -> Any:
  """`config.init_from`: a new run starts from the parameters of another workdir (a trained
  run, or scripts/port_checkpoint.py's), with a fresh optimizer state; the head is kept fresh
  when the source has none or another number of classes (trainer.checkpoint.load_params).
  The source is read replicated, then placed as `Setup.state_sharding` says."""
  shardings = setup.state_sharding
  params, kept = ckpt_lib.load_params(source, state["params"], mesh_lib.replicated(setup.mesh))
  params = jax.device_put(params, shardings["params"])
  logging.info("Initialised the parameters from %s%s.", source,
               f" (kept fresh: {', '.join(kept)})" if kept else "")
  opt_state = jax.jit(setup.tx.init, out_shardings=shardings["opt_state"])(params)
  return dict(state, params=params, opt_state=opt_state)


def _train(config: ml_collections.ConfigDict, workdir: str, setup: Setup,
           stopper: preemption.StopOnSignal, allow_config_change: bool) -> RunResult:
  """`train_and_evaluate`'s body, with the signal handler installed and the workdir locked."""
  paths = workdir_paths(workdir)
  process_index, process_count = jax.process_index(), jax.process_count()
  is_main = process_index == 0
  task, mesh, lengths = setup.task, setup.mesh, setup.lengths
  total_steps = lengths["total"]
  # Refuses a changed config before anything in the workdir is written.
  config_check = check_config(config, workdir, allow_change=allow_config_change,
                              upgrade=task.upgrade_config)
  old_config = config_check.old
  if is_main:
    logging.info("Workdir %s; %d process(es), %d device(s) (mesh data %d x fsdp %d); %d steps "
                 "(warm-up %d; every %s).", workdir, process_count, mesh.size,
                 mesh.shape[mesh_lib.DATA_AXIS], mesh.shape[mesh_lib.FSDP_AXIS], total_steps,
                 lengths["warmup"],
                 ", ".join(f"{k} {v}" for k, v in lengths.items()
                           if k not in ("total", "warmup")))

  # --- State: restore the newest intact checkpoint, or initialise on device. ---
  abstract = abstract_state(setup, config.seed)
  sync = ((lambda: multihost_utils.sync_global_devices("damaged checkpoint moved"))
          if process_count > 1 else (lambda: None))
  checkpoints, start_step, state = ckpt_lib.restore_newest_intact(
      lambda: open_checkpoints(config, workdir), abstract, move_damaged=True, sync=sync,
      is_main=is_main)
  if is_main:  # After the restore: a checkpoint of another model leaves config.json as it was.
    write_config(config, workdir, config_check, start_step or 0)
  if start_step is not None:
    logging.info("Resumed from checkpoint at step %d.", start_step)
    if old_config is not None and is_main:
      message = _schedule_change(config, old_config, setup, start_step)
      if message:
        logging.warning("%s", message)
  else:
    start_step = 0
    state = init_state(setup, config.seed)
    if config.get("init_from"):
      state = _init_from(config.init_from, state, setup)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract["params"]))
  writer = metrics_lib.MetricWriter(workdir, enabled=is_main,
                                    tensorboard=config.training.tensorboard)
  writer.drop_after(start_step)

  result = RunResult(status="finished", step=start_step, eval_metrics={})
  if start_step >= total_steps:
    logging.info("Nothing to do: the checkpoint is at step %d of %d.", start_step, total_steps)
    checkpoints.close()
    writer.close()
    return result

  # --- Compile the train step once, ahead of time, to know its cost. ---
  train_iter = task.train_iterator(start_step, process_index, process_count)
  eval_step = make_eval_step(task, mesh)
  first_local = next(train_iter)
  t0 = time.perf_counter()
  train_step = jit_train_step(setup).lower(
      state, mesh_lib.global_batch(first_local, mesh)).compile()
  flops = cost.flops_per_device(train_step)
  peak = _peak_tflops(config, mesh) if flops and is_main else None
  writer.write(start_step, {"perf/compile_sec": time.perf_counter() - t0,
                            "perf/num_params": num_params,
                            **({"perf/gflops_per_step_per_device": flops / 1e9} if flops else {}),
                            **({"perf/peak_tflops_per_device": peak} if peak else {})})
  progress = progress_lib.Progress(
      total_steps=total_steps, start_step=start_step,
      examples_per_step=task.count_units(first_local) * process_count, unit=task.unit,
      flops_per_device=flops, enabled=is_main, peak_tflops_per_device=peak)

  # --- The loop. ---
  pending = []  # (step, on-device metrics) not yet checked on the host.
  checked = []  # Host metrics of checked steps not yet logged.
  local = first_local
  # Several processes agree on stopping (a collective) at every log step.
  stopper.sync_every = lengths["log"]
  try:
    for step in range(start_step + 1, total_steps + 1):
      state, step_metrics = train_step(state, mesh_lib.global_batch(local, mesh))
      pending.append((step, step_metrics))
      progress.update(step)
      stop = stopper.should_stop(step)
      is_last = step == total_steps
      do_eval = is_last or _every(step, lengths["eval"])
      do_save = is_last or stop or do_eval or _every(step, lengths["checkpoint"])
      do_log = is_last or stop or _every(step, lengths["log"])
      if do_save or do_log:
        # Every step's metrics are checked before anything is logged or saved.
        checked += _fetch_and_check(pending)  # Raises on NaN: nothing below runs.
        pending = []
      if do_log:
        scalars = _mean_metrics(checked)
        checked = []
        scalars.update(progress.measure(step))
        writer.write(step, scalars)
        if is_main:
          progress.set_postfix(loss=f"{scalars['train/loss']:.4g}")
          logging.info("%s", progress.line(step, scalars))
      eval_metrics = None
      if do_eval:
        eval_metrics = evaluate(task, state["params"], eval_step, mesh)
        result.eval_metrics = eval_metrics
        writer.write(step, eval_metrics)
        if is_main:
          logging.info("step %d eval: %s", step,
                       ", ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()))
      if do_save:
        checkpoints.save(step, state, eval_metrics)
      if do_eval or do_save:
        writer.flush()
        progress.restart_clock(step)
      result.step = step
      if stop and not is_last:
        result.status = "preempted"
        result.signal = stopper.signal_name
        logging.info("%s received: saved the checkpoint of step %d in %s; stopping. "
                        "Run the same command again to resume.", stopper.signal_name, step,
                        paths["checkpoints"])
        break
      if not is_last:
        local = next(train_iter)
  except NonFiniteLossError as e:
    last_good = checkpoints.latest_step()
    where = (f"The last good checkpoint is step {last_good} in {paths['checkpoints']}; "
             "re-running resumes from it (change e.g. optim.lr first)."
             if last_good is not None else "No checkpoint had been saved yet.")
    raise NonFiniteLossError(f"{e} {where}", e.step) from None
  finally:
    # Also on errors (NaN): let pending saves of good states finish, release the files, stop
    # the input pipeline's worker processes (grain iterators have `close`).
    if hasattr(train_iter, "close"):
      train_iter.close()
    progress.close()
    checkpoints.close()
    writer.close()
  return result
