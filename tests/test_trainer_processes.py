"""train.py as real processes: SIGKILL / SIGTERM and resume, and a 2-process jax.distributed run.

Runs are subprocesses on fake CPU devices sharing a persistent compilation cache (a cached
executable is the same program, so results are unchanged; only start-up gets faster). The
tests freeze a run with SIGSTOP the moment it reaches the state they want, so the timing of
the kill does not depend on how fast the machine is.
"""
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import portpicker
import pytest

import trainer
from configs import vit_common
import tasks
from trainer import loop
from trainer import metrics as metrics_lib


def _build(config, devices=None):
  """loop.build with the config's task (the caller picks it; the trainer imports no task)."""
  return loop.build(config, devices, task=tasks.get_task(config))


def _train(config, workdir, **kwargs):
  return trainer.train_and_evaluate(config, workdir, task=tasks.get_task(config), **kwargs)

REPO = pathlib.Path(__file__).resolve().parents[1]
# A one-layer Spherical-RoPE smoke run: checkpoints every 10 steps (keeps them all), logs
# every step (so each metrics record is one step's values, comparable between runs).
RUN = ["--config=configs/vit_spherical.py:smoke", "--config.model.depth=1",
       "--config.training.total_steps=60", "--config.training.log_every_steps=1",
       "--config.optim.warmup_steps=5", "--config.eval.every_steps=1000",
       "--config.eval.image_sizes=()", "--config.data.max_eval_examples=64",
       "--config.checkpoint.every_steps=10", "--config.checkpoint.keep=100"]
TOTAL = 60  # 2.7 epochs of digits (22.5 steps each): the kill and the stop fall mid-epoch.


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("jax_cache"))


def env_for(cache_dir, devices):
  e = dict(os.environ)
  e.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
           JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  return e


def start(args, cache_dir, devices=4):
  """Starts train.py; its output goes to files (a full pipe would block the run)."""
  logs = pathlib.Path(cache_dir).parent / f"log_{time.time_ns()}"
  proc = subprocess.Popen([sys.executable, "train.py"] + args, cwd=REPO,
                          env=env_for(cache_dir, devices), stdout=open(f"{logs}.out", "w"),
                          stderr=open(f"{logs}.err", "w"))
  proc.logs = logs
  return proc


def output(proc):
  return (pathlib.Path(f"{proc.logs}.out").read_text(),
          pathlib.Path(f"{proc.logs}.err").read_text())


def finish(proc, expected_code=0, timeout=600):
  proc.wait(timeout=timeout)
  out, err = output(proc)
  assert proc.returncode == expected_code, f"exit {proc.returncode}:\n{err[-4000:]}"
  return out, err


def wait_for(proc, condition, what, timeout=600):
  """Polls `condition()` until true, then freezes `proc` (SIGSTOP) and returns."""
  deadline = time.time() + timeout
  while not condition():
    if proc.poll() is not None:
      raise AssertionError(f"the run ended before {what}:\n{output(proc)[1][-4000:]}")
    if time.time() > deadline:
      proc.kill()
      raise AssertionError(f"timed out waiting for {what}")
    time.sleep(0.02)
  proc.send_signal(signal.SIGSTOP)


def checkpoint_steps(workdir):
  d = workdir / "checkpoints"
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def logged_train_steps(workdir):
  return [r["step"] for r in metrics_lib.read_jsonl(str(workdir / "metrics.jsonl"))
          if "train/loss" in r] if (workdir / "metrics.jsonl").exists() else []


def resumed_train_steps(workdir, restored):
  """Train steps logged after the resumed run's start-up record at step `restored`."""
  records = metrics_lib.read_jsonl(str(workdir / "metrics.jsonl"))
  starts = [i for i, r in enumerate(records)
            if r["step"] == restored and "perf/compile_sec" in r]
  return [r["step"] for r in records[starts[-1]:] if "train/loss" in r] if starts else []


def restore(workdir, step=None):
  config = loop.read_config(str(workdir))
  ckpts = loop.open_checkpoints(config, str(workdir), read_only=True)
  step = ckpts.latest_step() if step is None else step
  state = ckpts.restore(step, loop.abstract_state(_build(config), config.seed))
  ckpts.close()
  return jax.device_get(state)


def test_sigkill_and_sigterm_then_resume_equal_an_uninterrupted_run(tmp_path, cache_dir):
  reference = tmp_path / "reference"
  finish(start(RUN + [f"--workdir={reference}"], cache_dir))

  run = tmp_path / "run"
  args = RUN + [f"--workdir={run}"]
  # 1. SIGKILL mid-epoch, right after the first checkpoint (digits: 22.5 steps per epoch).
  proc = start(args, cache_dir)
  wait_for(proc, lambda: checkpoint_steps(run), "the first checkpoint")
  killed_at = max(logged_train_steps(run), default=0)
  assert killed_at < TOTAL
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL

  # 2. Resume, then SIGTERM once it has trained past the restored checkpoint. (Records of the
  # killed run past the checkpoint are dropped at start-up, before the resumed run writes its
  # compile record, so only records after that one are the resumed run's.)
  restored = max(checkpoint_steps(run))
  proc = start(args, cache_dir)
  wait_for(proc, lambda: resumed_train_steps(run, restored), "training past the checkpoint")
  proc.send_signal(signal.SIGTERM)
  proc.send_signal(signal.SIGCONT)
  _, err = finish(proc, expected_code=143)
  stopped = int(re.search(r"stopped by SIGTERM after step (\d+)", err).group(1))
  assert restored < stopped < TOTAL
  assert max(checkpoint_steps(run)) == stopped  # Saved at the step it stopped.
  assert int(restore(run)["step"]) == stopped

  # 3. Resume to the end: exactly the parameters (and optimizer state) of the reference.
  finish(start(args, cache_dir))
  a, b = restore(run, TOTAL), restore(reference, TOTAL)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  # The metrics file reads like one run: each step logged once, identical train losses.
  losses = lambda w: [(r["step"], r["train/loss"]) for r in
                      metrics_lib.read_jsonl(str(w / "metrics.jsonl")) if "train/loss" in r]
  assert losses(run) == losses(reference) and len(losses(run)) == TOTAL


def test_two_processes_train_and_checkpoint_like_one(tmp_path, cache_dir):
  # 2 processes x 2 CPU devices through jax.distributed (gloo) vs 1 process x 4 devices: the
  # same global batches on the same 4-device mesh, so the same training up to reduction order.
  args = ["--config=configs/vit_spherical.py:smoke", "--config.model.depth=1",
          "--config.training.total_steps=6", "--config.optim.warmup_steps=2",
          "--config.training.log_every_steps=2", "--config.checkpoint.every_steps=3",
          "--config.eval.image_sizes=(12,)", "--config.data.max_eval_examples=100"]
  port = portpicker.pick_unused_port()
  workdir = tmp_path / "two"
  procs = [start(args + [f"--workdir={workdir}", f"--coordinator_address=127.0.0.1:{port}",
                         "--num_processes=2", f"--process_id={i}"], cache_dir, devices=2)
           for i in range(2)]
  outs = [finish(p) for p in procs]
  # Only process 0 reports (gloo itself prints connection lines on both).
  assert "train.py: finished at step 6" in outs[0][0] and "train.py:" not in outs[1][0]
  assert checkpoint_steps(workdir) == [3, 6]
  records = metrics_lib.read_jsonl(str(workdir / "metrics.jsonl"))
  assert [r["step"] for r in records if "train/loss" in r] == [2, 4, 6]  # Written once.
  final_eval = next(r for r in records if "eval/accuracy" in r)
  assert final_eval["eval/count"] == 100 and final_eval["eval_12px/count"] == 100

  config = vit_common.get_config("spherical", "smoke")
  with config.unlocked():
    config.model.depth = 1
    config.training.total_steps = 6
    config.optim.warmup_steps = 2
    config.training.log_every_steps = 2
    config.checkpoint.every_steps = 3
    config.eval.image_sizes = (12,)
    config.data.max_eval_examples = 100
  single = _train(config, str(tmp_path / "one"))
  for x, y in zip(jax.tree.leaves(restore(workdir)), jax.tree.leaves(restore(tmp_path / "one"))):
    np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-6)
  assert final_eval["eval/accuracy"] == pytest.approx(single.eval_metrics["eval/accuracy"],
                                                      abs=1 / 100 + 1e-9)
