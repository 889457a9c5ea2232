"""The model steps export for accelerators: `jax.export` with `platforms=("tpu", "cuda")`.

Configs are discovered (configs/vit_*.py, configs/vlm_*.py, each at `:smoke`) and built as
train.py does (`trainer.loop.build`: task, optimizer, schedule; `trainer.step`: the train
step), on abstract inputs (`jax.ShapeDtypeStruct`), so nothing is computed and no TPU / GPU
is needed. Exported: the ViT train step of every encoding; the VLM train step and one greedy
decode step (the KV-cached `VisionLanguageModel.decode`) of every scheme. A failure here means
a model or a rope kernel has no lowering for (or is specialised to) one of those platforms.
"""
import glob
import importlib
import os

import jax
import numpy as np
import pytest

import tasks
from configs import vit_common
from trainer import loop
from trainer import step as step_lib

ACCELERATORS = ("tpu", "cuda")
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _configs(prefix):
  paths = sorted(glob.glob(os.path.join(_ROOT, "configs", f"{prefix}_*.py")))
  names = [os.path.basename(p)[:-3] for p in paths]
  return [n for n in names if n != f"{prefix}_common"]


VIT = _configs("vit")
VLM = _configs("vlm")


def _abstract(tree):
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype), tree)


def _setup(name, **model_overrides):
  config = importlib.import_module(f"configs.{name}").get_config("smoke")
  if model_overrides:
    with config.unlocked():
      config.model.update(model_overrides)
  setup = loop.build(config, task=tasks.get_task(config))
  state = jax.eval_shape(step_lib.make_init_fn(setup.task, setup.tx), jax.random.key(0))
  batch = next(iter(setup.task.train_iterator(0, 0, 1)))
  return setup, state, _abstract(batch)


def _export_train_step(name, **model_overrides):
  setup, state, batch = _setup(name, **model_overrides)
  train_step = step_lib.make_train_step(setup.task, setup.tx, setup.schedule)
  exported = jax.export.export(jax.jit(train_step), platforms=ACCELERATORS)(state, batch)
  assert tuple(exported.platforms) == ACCELERATORS
  assert "stablehlo" in exported.mlir_module()


def test_configs_are_discovered():
  assert len(VIT) >= 10 and len(VLM) >= 6, (VIT, VLM)


@pytest.mark.parametrize("name", VIT)
def test_vit_train_step_exports(name):
  _export_train_step(name)


# bf16 compute goes through models/matmul.py's custom-VJP bf16 x bf16 -> f32 dots; one config
# per position-encoding family (the float32 test above covers every config, and what bf16 adds,
# the dots and the casts around each rotation, is shared within a family).
VIT_BF16 = [f"vit_{n}" for n in vit_common.FAMILIES]


def test_every_family_is_a_config():
  assert set(VIT_BF16) <= set(VIT), VIT_BF16


@pytest.mark.parametrize("name", VIT_BF16)
def test_vit_bfloat16_train_step_exports(name):
  _export_train_step(name, dtype="bfloat16")


@pytest.mark.parametrize("name", VLM)
def test_vlm_train_step_exports(name):
  _export_train_step(name)


@pytest.mark.parametrize("name", VLM)
def test_vlm_greedy_decode_step_exports(name):
  from models import vlm  # pylint: disable=g-import-not-at-top
  setup, state, batch = _setup(name)
  model = setup.task.model
  inputs = vlm.model_inputs(batch)
  params = state["params"]

  def prefill(params, inputs):
    return model.apply({"params": params}, **inputs, cache_len=model.max_len,
                       method=vlm.VisionLanguageModel.prefill)

  _, caches = jax.eval_shape(prefill, params, inputs)
  b = batch["tokens"].shape[0]
  i32, f32 = np.dtype(np.int32), np.dtype(np.float32)
  token = jax.ShapeDtypeStruct((b,), i32)
  pos = jax.ShapeDtypeStruct((b, 3), f32)
  slots = jax.ShapeDtypeStruct((b,), i32)

  def decode_step(params, token, pos, pos_alt, slots, caches):
    logits, caches = model.apply({"params": params}, token, pos, pos_alt, slots, caches,
                                 method=vlm.VisionLanguageModel.decode)
    return jax.numpy.argmax(logits, -1), caches

  exported = jax.export.export(jax.jit(decode_step), platforms=ACCELERATORS)(
      params, token, pos, pos, slots, caches)
  assert tuple(exported.platforms) == ACCELERATORS
