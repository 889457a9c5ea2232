"""The training loop shared by every task: `train_and_evaluate(config, workdir)`.

Sections: set-up (task, mesh, optimizer) -> state (restore from the workdir or initialise)
-> compile -> loop (step, NaN guard, logs, evals, checkpoints, SIGTERM) -> clean-up.

Guarantees:
* Resuming: the newest checkpoint in `<workdir>/checkpoints` is restored automatically and the
  data stream restarts at its step, so an interrupted and resumed run computes exactly the
  same updates as an uninterrupted one (bitwise on CPU).
* SIGTERM: the current step finishes, a checkpoint of that step is saved, and
  `RunResult.status == "preempted"` is returned.
* A non-finite training metric (loss, grad norm, ...) raises `NonFiniteLossError` naming the
  first bad step. The host checks the metrics of every step before each log line, evaluation
  and checkpoint, so no state computed at or after that step is ever saved and the last good
  checkpoint stays (the "LatestN" policy never deletes the newest checkpoint).
"""
import dataclasses
import json
import math
import os
import time
from typing import Any, Mapping, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

import tasks
from trainer import checkpoint as ckpt_lib
from trainer import cost
from trainer import durations
from trainer import mesh as mesh_lib
from trainer import metrics as metrics_lib
from trainer import optim
from trainer import preemption
from trainer import progress as progress_lib
from trainer import step as step_lib

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


def workdir_paths(workdir: str) -> dict[str, str]:
  """Where a run keeps its files."""
  return {"config": os.path.join(workdir, CONFIG_FILE),
          "checkpoints": os.path.join(workdir, CHECKPOINT_DIR),
          "metrics": os.path.join(workdir, metrics_lib.METRICS_FILE)}


def _absolute(path: str) -> str:
  return path if "://" in path else os.path.abspath(path)


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


def evaluate(task: tasks.Task, params: Any, eval_step: Any,
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


def make_eval_step(task: tasks.Task, mesh: jax.sharding.Mesh) -> Any:
  """The task's eval step, jit-ted with replicated params and a batch-sharded input."""
  return jax.jit(task.eval_step,
                 in_shardings=(mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)),
                 out_shardings=mesh_lib.replicated(mesh))


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _write_config(config: ml_collections.ConfigDict, path: str) -> None:
  """Writes config.json; warns (naming the keys) if a resumed run's config changed."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  text = config.to_json_best_effort(indent=2, sort_keys=True)
  if os.path.exists(path):
    with open(path) as f:
      old, new = _flatten(json.load(f)), _flatten(json.loads(text))
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed:
      logging.warning("The config differs from the one this workdir was started with, in: %s. "
                      "config.json now holds the new one.", ", ".join(changed))
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in `workdir` was started with (written by `train_and_evaluate`)."""
  path = workdir_paths(workdir)["config"]
  if not os.path.exists(path):
    raise ValueError(f"No {CONFIG_FILE} in workdir {workdir!r}: not a training workdir.")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


@dataclasses.dataclass
class Setup:
  """Everything derived from a config before any compilation (see `build`)."""
  task: tasks.Task
  mesh: jax.sharding.Mesh
  lengths: dict[str, int | None]  # total / warmup / eval / checkpoint / log, in steps.
  tx: Any  # optax.GradientTransformation
  schedule: Any  # optax.Schedule


def build(config: ml_collections.ConfigDict,
          devices: Sequence[jax.Device] | None = None) -> Setup:
  """Validates `config` and builds task, mesh and optimizer (ValueError naming the option)."""
  task = tasks.get_task(config)
  mesh = mesh_lib.make_mesh(devices)
  process_count = jax.process_count()
  mesh_lib.check_batch_size(config.training.batch_size, mesh, process_count,
                            "training.batch_size")
  mesh_lib.check_batch_size(config.eval.batch_size, mesh, process_count, "eval.batch_size")
  lengths = _run_lengths(config, task.num_train_examples)
  tx, schedule = optim.make_optimizer(config.optim, total_steps=lengths["total"],
                                      warmup_steps=lengths["warmup"])
  return Setup(task=task, mesh=mesh, lengths=lengths, tx=tx, schedule=schedule)


def abstract_state(setup: Setup, seed: int) -> Any:
  """Shapes, dtypes and (replicated) shardings of the train state, without computing it."""
  init_fn = step_lib.make_init_fn(setup.task, setup.tx)
  return ckpt_lib.abstract_like(jax.eval_shape(init_fn, jax.random.key(seed)),
                                mesh_lib.replicated(setup.mesh))


def open_checkpoints(config: ml_collections.ConfigDict, workdir: str, *,
                     read_only: bool = False) -> ckpt_lib.Checkpoints:
  """The checkpoint manager of the run in `workdir` as configured by `config.checkpoint`."""
  return ckpt_lib.Checkpoints(
      workdir_paths(_absolute(workdir))["checkpoints"], keep=config.checkpoint.keep,
      best_metric=config.checkpoint.best_metric or None, best_mode=config.checkpoint.best_mode,
      async_save=config.checkpoint.async_save, read_only=read_only)


def jit_train_step(setup: Setup) -> Any:
  """The jit-ted train step: replicated state (donated) and batch-sharded input."""
  replicated = mesh_lib.replicated(setup.mesh)
  return jax.jit(step_lib.make_train_step(setup.task, setup.tx, setup.schedule),
                 in_shardings=(replicated, mesh_lib.batch_sharding(setup.mesh)),
                 out_shardings=(replicated, replicated), donate_argnums=0)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       devices: Sequence[jax.Device] | None = None) -> RunResult:
  """Trains `config.task` in `workdir`, resuming from its newest checkpoint if there is one.

  Args:
    config: the full, locked experiment config (configs/common.py documents the keys).
    workdir: directory (created if needed) for config.json, metrics.jsonl, tensorboard/ and
      checkpoints/.
    devices: devices of the data-parallel mesh; default all devices of all processes.

  Returns:
    A RunResult; status "preempted" if SIGTERM arrived (a checkpoint of `step` is saved).

  Raises:
    ValueError: bad config (naming the option), before anything is compiled.
    NonFiniteLossError: the loss (or another train metric) became NaN/inf.
  """
  # SIGTERM is caught from the very start: one arriving during set-up or compilation stops
  # the run after its first step, with a checkpoint.
  with preemption.StopOnSignal() as stopper:
    return _train(config, workdir, devices, stopper)


def _train(config: ml_collections.ConfigDict, workdir: str,
           devices: Sequence[jax.Device] | None,
           stopper: preemption.StopOnSignal) -> RunResult:
  """`train_and_evaluate`'s body, with the signal handler installed."""
  # --- Set-up: everything that can reject the config runs before any compilation. ---
  workdir = _absolute(workdir)
  paths = workdir_paths(workdir)
  process_index, process_count = jax.process_index(), jax.process_count()
  is_main = process_index == 0
  setup = build(config, devices)
  task, mesh, lengths = setup.task, setup.mesh, setup.lengths
  total_steps = lengths["total"]
  checkpoints = open_checkpoints(config, workdir)
  if is_main:
    _write_config(config, paths["config"])
    logging.info("Workdir %s; %d process(es), %d device(s); %d steps (warm-up %d; every %s).",
                 workdir, process_count, mesh.size, total_steps, lengths["warmup"],
                 ", ".join(f"{k} {v}" for k, v in lengths.items()
                           if k not in ("total", "warmup")))

  # --- State: restore the newest checkpoint, or initialise on device. ---
  replicated = mesh_lib.replicated(mesh)
  abstract = abstract_state(setup, config.seed)
  start_step = checkpoints.latest_step()
  if start_step is not None:
    state = checkpoints.restore(start_step, abstract)
    logging.info("Resumed from checkpoint at step %d.", start_step)
  else:
    start_step = 0
    state = jax.jit(step_lib.make_init_fn(task, setup.tx), out_shardings=replicated)(
        jax.random.key(config.seed))
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
  writer.write(start_step, {"perf/compile_sec": time.perf_counter() - t0,
                            "perf/num_params": num_params,
                            **({"perf/gflops_per_step_per_device": flops / 1e9} if flops else {})})
  progress = progress_lib.Progress(
      total_steps=total_steps, start_step=start_step,
      examples_per_step=task.count_units(first_local) * process_count, unit=task.unit,
      flops_per_device=flops, enabled=is_main)

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
        logging.warning("%s received: saved the checkpoint of step %d in %s; stopping. "
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
    # Also on errors (NaN): let pending saves of good states finish, release the files.
    progress.close()
    checkpoints.close()
    writer.close()
  return result
