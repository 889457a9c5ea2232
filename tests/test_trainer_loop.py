"""The training loop on a tiny toy task (in-process, 4 fake CPU devices from conftest.py).

The toy task: points x ~ N(0, I_8) labelled by argmax(x W*) for a fixed W*, a 2-layer MLP
with dropout (so the per-step PRNG matters), a "norm" layer and a "posenc" parameter (so the
no-weight-decay rule applies). Its data stream is a pure function of (seed, step), and it can
inject a NaN batch or a SIGTERM at a chosen step.
"""
import itertools
import json
import os
import signal

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import tasks
import trainer
from configs import common
from configs import vit_common
from tasks import base
from trainer import loop
from trainer import metrics as metrics_lib


def _build(config, devices=None):
  """loop.build with the config's task (the caller picks it; the trainer imports no task)."""
  return loop.build(config, devices, task=tasks.get_task(config))


def _train(config, workdir, **kwargs):
  return trainer.train_and_evaluate(config, workdir, task=tasks.get_task(config), **kwargs)


class ToyModel(nn.Module):
  num_classes: int

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = nn.Dense(16, name="hidden")(x)
    x = nn.LayerNorm(name="norm")(x)
    x = nn.gelu(x) + self.param("posenc", nn.initializers.normal(0.1), (16,))
    x = nn.Dropout(0.2)(x, deterministic=not train)
    return nn.Dense(self.num_classes, name="head")(x)


@tasks.register("toy")
class ToyTask(base.Task):
  unit = "points"

  def __init__(self, config):
    super().__init__(config)
    t = config.toy
    self.model = ToyModel(t.num_classes)
    self.w_true = np.random.default_rng(1234).normal(size=(t.dim, t.num_classes))

  @property
  def num_train_examples(self):
    return self.config.toy.num_train

  def _points(self, rng, n):
    x = rng.normal(size=(n, self.config.toy.dim)).astype(np.float32)
    return x, np.argmax(x @ self.w_true, axis=-1)

  def init_inputs(self):
    return {"x": np.zeros((1, self.config.toy.dim), np.float32)}

  def init_params(self, rng):
    return self.model.init({"params": rng}, jnp.asarray(self.init_inputs()["x"]),
                           train=False)["params"]

  def global_batch(self, index):
    """The global batch at 0-based position `index` (used by update index + 1)."""
    t, n = self.config.toy, self.config.training.batch_size
    x, y = self._points(np.random.default_rng([self.config.seed, index]), n)
    if index + 1 == t.nan_at_step:
      x[:] = np.nan
    return {"x": x, "y": np.eye(t.num_classes, dtype=np.float32)[y]}

  def train_iterator(self, start_step, process_index, process_count):
    b = self.config.training.batch_size // process_count
    for index in itertools.count(start_step):
      if index + 1 == self.config.toy.sigterm_at_step:
        os.kill(os.getpid(), signal.SIGTERM)  # Arrives before update `sigterm_at_step` runs.
      batch = self.global_batch(index)
      yield {k: v[process_index * b:(process_index + 1) * b] for k, v in batch.items()}

  def loss_fn(self, params, batch, rng):
    logits = self.model.apply({"params": params}, batch["x"], train=True,
                              rngs={"dropout": rng})
    loss = optax.softmax_cross_entropy(logits, batch["y"]).mean()
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(batch["y"], -1))}

  def eval_sets(self):
    n, size = self.config.toy.num_eval, self.config.eval.batch_size
    x, y = self._points(np.random.default_rng(999), n)
    batches = []
    for start in range(0, n, size):
      pad = max(0, start + size - n)
      batches.append({"x": np.pad(x[start:start + size], ((0, pad), (0, 0))),
                      "label": np.pad(y[start:start + size], (0, pad)).astype(np.int32),
                      "mask": np.arange(size) < size - pad})
    p, count = jax.process_index(), jax.process_count()
    b = size // count
    return {"eval": [{k: v[p * b:(p + 1) * b] for k, v in batch.items()} for batch in batches]}

  def eval_step(self, params, batch):
    logits = self.model.apply({"params": params}, batch["x"], train=False)
    mask = batch["mask"].astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return {"accuracy": jnp.sum(correct * mask), "loss": jnp.sum(loss * mask),
            "count": jnp.sum(mask)}


def toy_config(**overrides) -> ml_collections.ConfigDict:
  c = common.training_defaults()
  c.task = "toy"
  c.toy = ml_collections.ConfigDict(dict(dim=8, num_classes=4, num_train=256, num_eval=40,
                                         nan_at_step=0, sigterm_at_step=0))
  c.training.batch_size = 16
  c.training.total_steps = 8
  c.training.log_every_steps = 2
  c.training.tensorboard = False
  c.optim.update(name="adamw", lr=1e-2, warmup_steps=1)
  c.eval.batch_size = 16
  c.eval.every_steps = 4
  c.checkpoint.every_steps = 2
  c.checkpoint.keep = 2
  c.checkpoint.best_metric = "eval/accuracy"
  for key, value in overrides.items():
    section, name = key.split(".") if "." in key else (None, key)
    (c[section] if section else c)[name] = value
  c.lock()
  return c


def final_state(config, workdir, step=None):
  setup = _build(config)
  ckpts = loop.open_checkpoints(config, workdir, read_only=True)
  state = ckpts.restore(step or ckpts.latest_step(), loop.abstract_state(setup, config.seed))
  ckpts.close()
  return jax.device_get(state)


def assert_trees_equal(a, b):
  leaves_a, tree_a = jax.tree.flatten(a)
  leaves_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_run_logs_metrics_and_keeps_last_n_and_best(tmp_path):
  # Best by the LARGEST eval loss: the first evaluation (step 2), so "best" differs from
  # "latest" and the policy must keep a checkpoint the LatestN rule alone would delete.
  config = toy_config(**{"training.tensorboard": True, "checkpoint.every_steps": 1,
                         "eval.every_steps": 2, "checkpoint.best_metric": "eval/loss",
                         "checkpoint.best_mode": "max"})
  result = _train(config, str(tmp_path))
  assert (result.status, result.step) == ("finished", 8)

  ckpts = loop.open_checkpoints(config, str(tmp_path), read_only=True)
  records = metrics_lib.read_jsonl(str(tmp_path / "metrics.jsonl"))
  evals = {r["step"]: r["eval/loss"] for r in records if "eval/loss" in r}
  assert sorted(evals) == [2, 4, 6, 8]
  worst = max(evals, key=evals.get)
  assert ckpts.all_steps() == sorted({7, 8, worst})
  assert ckpts.best_step() == worst
  assert ckpts.metrics(worst)["eval/loss"] == pytest.approx(evals[worst])
  ckpts.close()

  train_steps = [r["step"] for r in records if "train/loss" in r]
  assert train_steps == [2, 4, 6, 8]
  assert all(r["perf/points_per_sec"] > 0 for r in records if "train/loss" in r)
  assert records[0]["perf/gflops_per_step_per_device"] > 0
  peak = records[0]["perf/peak_tflops_per_device"]  # CPU: measured at start-up.
  for r in records:
    if "train/loss" in r:  # MFU = achieved / peak TFLOP/s per device.
      assert r["perf/mfu"] == pytest.approx(r["perf/tflops_per_device"] / peak)
  assert result.eval_metrics["eval/count"] == 40
  assert os.listdir(tmp_path / "tensorboard")
  saved = loop.read_config(str(tmp_path))
  assert saved.to_dict() == json.loads(config.to_json_best_effort())

  # Re-running a finished run restores its last checkpoint and returns without training.
  again = _train(config, str(tmp_path))
  assert (again.status, again.step, again.eval_metrics) == ("finished", 8, {})
  assert metrics_lib.read_jsonl(str(tmp_path / "metrics.jsonl")) == records


def test_sigterm_saves_current_step_and_resume_is_bitwise(tmp_path, caplog):
  # Logging every step makes each metrics record one step's values, comparable across runs.
  reference = toy_config(**{"training.total_steps": 10, "checkpoint.every_steps": 4,
                            "training.log_every_steps": 1})
  _train(reference, str(tmp_path / "ref"))

  interrupted = toy_config(**{"training.total_steps": 10, "checkpoint.every_steps": 4,
                              "training.log_every_steps": 1, "toy.sigterm_at_step": 5})
  result = _train(interrupted, str(tmp_path / "run"))
  assert (result.status, result.step) == ("preempted", 5)
  ckpts = loop.open_checkpoints(interrupted, str(tmp_path / "run"), read_only=True)
  assert ckpts.latest_step() == 5  # Not a multiple of checkpoint.every_steps: SIGTERM's save.
  ckpts.close()
  assert int(final_state(interrupted, str(tmp_path / "run"))["step"]) == 5

  # The resumed run's config differs in one key (no more SIGTERM): refused, then allowed.
  run_config = (tmp_path / "run" / "config.json").read_bytes()
  with pytest.raises(loop.ConfigChangedError, match="toy.sigterm_at_step: 5 -> 0"):
    _train(reference, str(tmp_path / "run"))
  assert (tmp_path / "run" / "config.json").read_bytes() == run_config
  resumed = _train(reference, str(tmp_path / "run"), allow_config_change=True)
  assert (resumed.status, resumed.step) == ("finished", 10)
  assert "toy.sigterm_at_step: 5 -> 0 from step 5 on; the old config is kept as" in caplog.text
  assert (tmp_path / "run" / "config.5.json").read_bytes() == run_config
  assert_trees_equal(final_state(reference, str(tmp_path / "run")),
                     final_state(reference, str(tmp_path / "ref")))
  # The metrics file reads like one uninterrupted run, with the same numbers.
  strip = lambda rs: [{k: v for k, v in r.items() if k.startswith(("train/", "eval/"))}
                      | {"step": r["step"]} for r in rs if "train/loss" in r or "eval/loss" in r]
  ref_records = metrics_lib.read_jsonl(str(tmp_path / "ref" / "metrics.jsonl"))
  run_records = metrics_lib.read_jsonl(str(tmp_path / "run" / "metrics.jsonl"))
  assert strip(run_records) == strip(ref_records)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  config = toy_config(**{"training.total_steps": 12, "training.log_every_steps": 3,
                         "checkpoint.every_steps": 2, "checkpoint.keep": 5,
                         "eval.every_steps": None, "toy.nan_at_step": 5})
  with pytest.raises(trainer.NonFiniteLossError, match=r"loss=nan at step 5\b") as info:
    _train(config, str(tmp_path))
  assert info.value.step == 5
  ckpts = loop.open_checkpoints(config, str(tmp_path), read_only=True)
  assert ckpts.all_steps() == [2, 4]  # Step 6's state (after the NaN) was never saved.
  ckpts.close()
  state = final_state(config, str(tmp_path))
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state["params"]))
  records = metrics_lib.read_jsonl(str(tmp_path / "metrics.jsonl"))
  assert max(r["step"] for r in records) < 5


def _vit_config():
  """The smoke ViT (Spherical RoPE) with dropout and stochastic depth on, one layer."""
  config = vit_common.get_config("spherical", "smoke")
  with config.unlocked():
    config.model.update(depth=1, dropout=0.1, drop_path=0.1)
    config.training.total_steps = 1
    config.optim.warmup_steps = 0
    config.eval.image_sizes = ()
    config.data.max_eval_examples = 32
  return config


@pytest.mark.parametrize("make_config", [
    lambda: toy_config(**{"training.total_steps": 1, "optim.warmup_steps": 0,
                          "eval.every_steps": None}),
    _vit_config,
], ids=["toy", "vit"])
def test_one_step_on_four_devices_matches_one_device(tmp_path, make_config):
  assert jax.device_count() == 4
  config = make_config()
  one = _train(config, str(tmp_path / "one"), devices=jax.devices()[:1])
  four = _train(config, str(tmp_path / "four"))
  state_1 = final_state(config, str(tmp_path / "one"))
  state_4 = final_state(config, str(tmp_path / "four"))
  setup = _build(config)
  init = jax.device_get(jax.jit(loop.step_lib.make_init_fn(setup.task, setup.tx))(
      jax.random.key(config.seed)))
  changed = 0
  for a, b, c in zip(jax.tree.leaves(state_1["params"]), jax.tree.leaves(state_4["params"]),
                     jax.tree.leaves(init["params"])):
    changed += not np.array_equal(a, c)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # The same update on 1 and 4.
  assert changed == len(jax.tree.leaves(init["params"]))  # The step moved every parameter.
  assert one.eval_metrics["eval/accuracy"] == four.eval_metrics["eval/accuracy"]
  np.testing.assert_allclose(one.eval_metrics["eval/loss"], four.eval_metrics["eval/loss"],
                             rtol=1e-5)


def test_eval_metrics_are_exact_means_over_valid_examples(tmp_path):
  # 40 eval points in batches of 16 (the last one half padding): the loop's averages must
  # equal a direct computation over the 40 real points.
  config = toy_config(**{"training.total_steps": 2})
  result = _train(config, str(tmp_path))
  task = tasks.get_task(config)
  params = final_state(config, str(tmp_path))["params"]
  x, y = task._points(np.random.default_rng(999), 40)  # pylint: disable=protected-access
  logits = task.model.apply({"params": params}, x, train=False)
  assert result.eval_metrics["eval/accuracy"] == pytest.approx(
      float(np.mean(np.argmax(logits, -1) == y)), abs=1e-7)
  assert result.eval_metrics["eval/loss"] == pytest.approx(
      float(np.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))), rel=1e-5)


@pytest.mark.parametrize("overrides, option", [
    ({"training.batch_size": 6}, "training.batch_size"),
    ({"eval.batch_size": 10}, "eval.batch_size"),
    ({"optim.warmup_steps": 8}, "optim.warmup_steps"),
    ({"training.total_steps": None, "training.total_epochs": 2.0,
      "toy.num_train": None}, "training.total_epochs"),
    ({"training.total_steps": None}, "training.total_steps"),
    ({"optim.name": "sgd"}, "optim.name"),
    ({"task": "segmentation"}, "config.task"),
    ({"checkpoint.best_mode": "largest"}, "checkpoint.best_mode"),
])
def test_bad_config_fails_before_anything_runs(tmp_path, overrides, option):
  config = toy_config(**overrides)
  with pytest.raises(ValueError, match=option.replace(".", r"\.")):
    _train(config, str(tmp_path))
  assert not (tmp_path / "config.json").exists()


def test_allowed_change_to_another_model_is_refused_at_restore_not_moved(tmp_path):
  config = toy_config(**{"training.total_steps": 2, "eval.every_steps": None})
  _train(config, str(tmp_path))
  saved = (tmp_path / "config.json").read_bytes()
  other = toy_config(**{"training.total_steps": 4, "eval.every_steps": None, "toy.dim": 6})
  with pytest.raises(loop.StructureMismatchError, match=r"another model .*other shape: .*hidden"):
    _train(other, str(tmp_path), allow_config_change=True)
  assert (tmp_path / "config.json").read_bytes() == saved  # Not a resumable change.
  assert not (tmp_path / "damaged_checkpoints").exists()  # Not damage: the checkpoint stays.
  assert not list(tmp_path.glob("config.*.json"))
