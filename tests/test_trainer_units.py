"""Unit tests of the trainer's pieces against independent re-derivations."""
import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import tasks
from configs import common
from configs import vit_common
from trainer import cost
from trainer import durations
from trainer import mesh as mesh_lib
from trainer import metrics as metrics_lib
from trainer import optim
from trainer import progress as progress_lib


def _optim_config(**overrides):
  c = common.training_defaults().optim
  c.update(overrides)
  return c


# --- optim ---


@pytest.mark.parametrize("path, decays", [
    (("encoderblock_0", "attention", "qkv", "kernel"), True),
    (("head", "kernel"), True),
    (("encoderblock_0", "attention", "qkv", "bias"), False),
    (("encoderblock_3", "norm_mlp", "scale"), False),
    (("LayerNorm_0", "scale"), False),
    (("encoderblock_0", "attention", "posenc", "freqs"), False),
    (("posenc", "ape"), False),
    (("cls",), False),
    (("encoderblock_0", "ls"), False),
    (("encoderblock_0", "lsx"), True),  # Only the exact name "ls" is LayerScale.
])
def test_decay_rule(path, decays):
  key_path = tuple(jax.tree_util.DictKey(k) for k in path)
  assert optim.decays(key_path) == decays


@pytest.mark.parametrize("encoding", vit_common.config_names())
def test_vit_decays_exactly_its_kernels(encoding):
  # In the ViT every weight matrix is a "kernel"; everything else (biases, norms, cls,
  # LayerScale, every position parameter) must be exempt. Each configs/vit_<name>.py (every
  # registry entry has one) as train.py builds it: the file sets the sizes its entry needs
  # (LookHere's 6 heads, p-RoPE's head_dim 16).
  config = vit_common.load(encoding, "smoke")
  with config.unlocked():
    config.model.layerscale_init = 1e-4
  params = jax.eval_shape(tasks.get_task(config).init_params, jax.random.key(0))
  flat = jax.tree_util.tree_flatten_with_path(optim.decay_mask(params))[0]
  for path, decayed in flat:
    assert decayed == (path[-1].key == "kernel"), jax.tree_util.keystr(path)
  assert any(d for _, d in flat) and not all(d for _, d in flat)


def test_schedule_matches_closed_form():
  c = _optim_config(lr=4e-3, warmup_init_lr=1e-6, end_lr=1e-5, schedule="cosine")
  total, warmup = 100, 10
  schedule = optim.make_schedule(c, total_steps=total, warmup_steps=warmup)
  for s in range(total + 1):
    if s < warmup:
      expected = 1e-6 + (4e-3 - 1e-6) * s / warmup
    else:
      expected = 1e-5 + (4e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * (s - warmup) /
                                                              (total - warmup)))
    assert float(schedule(s)) == pytest.approx(expected, rel=1e-5, abs=1e-9), s


def _timm_lamb_reference(params, grads_seq, *, lr, b1, b2, eps, wd, decayed):
  """timm.optim.Lamb (grad_averaging, always_adapt=False, no internal clipping) in numpy."""
  p = {k: np.array(v, np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v2 = {k: np.zeros_like(v) for k, v in p.items()}
  for step, grads in enumerate(grads_seq, start=1):
    for k in p:
      g = np.asarray(grads[k], np.float64)
      m[k] = b1 * m[k] + (1 - b1) * g
      v2[k] = b2 * v2[k] + (1 - b2) * g * g
      denom = np.sqrt(v2[k]) / math.sqrt(1 - b2 ** step) + eps
      update = (m[k] / (1 - b1 ** step)) / denom
      if decayed[k]:
        update = update + wd * p[k]
        w_norm, u_norm = np.linalg.norm(p[k]), np.linalg.norm(update)
        update = update * (w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0)
      p[k] = p[k] - lr * update
  return p


def test_lamb_matches_timm():
  rng = np.random.default_rng(0)
  params = {"kernel": rng.normal(size=(3, 4)).astype(np.float32),
            "bias": rng.normal(size=(4,)).astype(np.float32)}
  grads_seq = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
               for _ in range(3)]
  c = _optim_config(name="lamb", lr=0.01, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.05,
                    grad_clip_norm=0.0, schedule="constant", warmup_init_lr=0.01)
  tx, _ = optim.make_optimizer(c, total_steps=10, warmup_steps=0)
  state, p = tx.init(params), jax.tree.map(jnp.asarray, params)
  for grads in grads_seq:
    updates, state = tx.update(grads, state, p)
    p = optax.apply_updates(p, updates)
  expected = _timm_lamb_reference(params, grads_seq, lr=0.01, b1=0.9, b2=0.999, eps=1e-6,
                                  wd=0.05, decayed={"kernel": True, "bias": False})
  for k in params:
    np.testing.assert_allclose(p[k], expected[k], rtol=1e-5, atol=1e-6)


def test_adamw_skips_decay_on_exempt_params_and_clips():
  # With zero gradients Adam's step is 0, so the only change is decay: lr * wd * w on the
  # kernel, none on the bias. A huge gradient is clipped to norm 1 first.
  params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}
  c = _optim_config(name="adamw", lr=0.1, weight_decay=0.5, schedule="constant",
                    grad_clip_norm=1.0, eps=1e-8)
  tx, _ = optim.make_optimizer(c, total_steps=10, warmup_steps=0)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(updates["kernel"], -0.1 * 0.5 * np.ones((2, 2)), rtol=1e-6)
  np.testing.assert_allclose(updates["bias"], np.zeros(2), atol=1e-7)
  clip = optax.clip_by_global_norm(1.0)
  clipped, _ = clip.update({"g": jnp.full((4,), 100.0)}, clip.init(None))
  assert float(optax.tree.norm(clipped)) == pytest.approx(1.0, rel=1e-6)


def test_optimizer_rejects_bad_options():
  with pytest.raises(ValueError, match="optim.name"):
    optim.make_optimizer(_optim_config(name="rmsprop"), total_steps=10, warmup_steps=0)
  with pytest.raises(ValueError, match="optim.schedule"):
    optim.make_optimizer(_optim_config(schedule="step"), total_steps=10, warmup_steps=0)
  with pytest.raises(ValueError, match="warm-up"):
    optim.make_optimizer(_optim_config(), total_steps=10, warmup_steps=10)


# --- durations ---


def test_durations_steps_or_epochs():
  c = ml_collections.ConfigDict({"total_steps": None, "total_epochs": 400.0})
  # CIFAR-100 at batch 1024: 50000 / 1024 = 48.83 steps per epoch -> ceil(19531.25).
  spe = durations.steps_per_epoch(50_000, 1024)
  assert durations.to_steps(c, "training", "total", steps_per_epoch=spe) == 19532
  c = ml_collections.ConfigDict({"total_steps": 7, "total_epochs": None})
  assert durations.to_steps(c, "training", "total", steps_per_epoch=None) == 7
  both = ml_collections.ConfigDict({"every_steps": 3, "every_epochs": 1.0})
  assert durations.to_steps(both, "eval", "every", steps_per_epoch=10.0) == 3  # Steps win.
  with pytest.raises(ValueError, match="eval.every_epochs=-1"):
    durations.to_steps(ml_collections.ConfigDict({"every_steps": None, "every_epochs": -1.0}),
                       "eval", "every", steps_per_epoch=1.0)
  neither = ml_collections.ConfigDict({"every_steps": None, "every_epochs": None})
  assert durations.to_steps(neither, "eval", "every", steps_per_epoch=1.0,
                            allow_none=True) is None
  with pytest.raises(ValueError, match="eval.every_steps"):
    durations.to_steps(neither, "eval", "every", steps_per_epoch=1.0)


# --- configs.common.parse_arg ---


def test_parse_arg():
  arg = common.parse_arg("smoke,seed=3,name=x", smoke=False, seed=0, name="", rate=0.5)
  assert arg.to_dict() == {"smoke": True, "seed": 3, "name": "x", "rate": 0.5}
  assert common.parse_arg(None, smoke=False).smoke is False
  assert common.parse_arg("smoke=false", smoke=True).smoke is False
  assert common.parse_arg("128", res=224, smoke=False).res == 128  # Bare value: first key.
  with pytest.raises(ValueError, match="'turbo' is unknown; allowed: smoke, seed"):
    common.parse_arg("turbo", smoke=False, seed=0)
  with pytest.raises(ValueError, match="seed='x'"):
    common.parse_arg("seed=x", smoke=False, seed=0)


# --- mesh ---


def test_global_batch_layout_and_sharding():
  mesh = mesh_lib.make_mesh()
  local = {"x": np.arange(8 * 3, dtype=np.float32).reshape(8, 3)}
  batch = mesh_lib.global_batch(local, mesh)
  assert batch["x"].shape == (8, 3)  # One process: the global batch is the local one.
  np.testing.assert_array_equal(np.asarray(batch["x"]), local["x"])
  # Device d holds rows [2d, 2d + 2): split along the example axis, nothing else.
  for shard in batch["x"].addressable_shards:
    d = list(mesh.devices.flat).index(shard.device)
    np.testing.assert_array_equal(np.asarray(shard.data), local["x"][2 * d:2 * d + 2])
  with pytest.raises(ValueError, match="training.batch_size=6 .* devices \\(4\\)"):
    mesh_lib.check_batch_size(6, mesh, 1, "training.batch_size")
  with pytest.raises(ValueError, match="processes \\(3\\)"):
    mesh_lib.check_batch_size(8, mesh, 3, "training.batch_size")


# --- cost ---


def test_flops_are_per_device():
  x = np.ones((64, 128), np.float32)
  w = np.ones((128, 256), np.float32)
  expected = 2 * 64 * 128 * 256  # Multiply-adds of the matmul.
  for n in (1, 4):
    mesh = mesh_lib.make_mesh(jax.devices()[:n])
    xs = jax.device_put(x, mesh_lib.batch_sharding(mesh))
    ws = jax.device_put(w, mesh_lib.replicated(mesh))
    compiled = jax.jit(lambda w, x: x @ w).lower(ws, xs).compile()
    assert cost.flops_per_device(compiled) == pytest.approx(expected / n, rel=0.01)


# --- progress ---


def test_progress_measures_throughput_and_eta(monkeypatch):
  clock = iter([100.0, 110.0, 115.0])
  monkeypatch.setattr(progress_lib.time, "perf_counter", lambda: next(clock))
  p = progress_lib.Progress(total_steps=1000, start_step=200, examples_per_step=64,
                            unit="images", flops_per_device=2e12, enabled=False)
  out = p.measure(300)  # 100 steps in 10 s.
  assert out == pytest.approx({"perf/steps_per_sec": 10.0, "perf/images_per_sec": 640.0,
                               "perf/eta_sec": 70.0, "perf/tflops_per_device": 20.0})
  assert p.measure(300) == {}  # No step since the last measurement.
  line = p.line(300, {"train/loss": 1.5, **out})
  assert "step 300/1000 (30.0%)" in line and "640.0 images/s" in line
  assert "20.000 TFLOP/s/device" in line and "ETA 1m10s" in line
  assert progress_lib.format_duration(3725) == "1h02m05s"


# --- metrics ---


def test_metric_writer_jsonl_and_drop_after(tmp_path):
  w = metrics_lib.MetricWriter(str(tmp_path), enabled=True, tensorboard=False)
  for step in (1, 2, 3):
    w.write(step, {"train/loss": 1.0 / step})
  w.write(4, {"train/loss": float("nan")})
  w.drop_after(2)
  w.write(3, {"train/loss": 0.25})
  w.close()
  records = metrics_lib.read_jsonl(str(tmp_path / "metrics.jsonl"))
  assert [(r["step"], r["train/loss"]) for r in records] == [(1, 1.0), (2, 0.5), (3, 0.25)]
  disabled = metrics_lib.MetricWriter(str(tmp_path / "other"), enabled=False)
  disabled.write(1, {"a": 1.0})
  assert not (tmp_path / "other").exists()
  nan_writer = metrics_lib.MetricWriter(str(tmp_path / "nan"), enabled=True, tensorboard=False)
  nan_writer.write(1, {"x": float("nan")})
  assert json.loads((tmp_path / "nan" / "metrics.jsonl").read_text())["x"] == "nan"
