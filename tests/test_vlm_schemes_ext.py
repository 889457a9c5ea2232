"""The VLM schemes of the multimodal extensions (issue #13 item 2; docs/spec/multimodal_ext.md):
HoPE's training-only random temporal scale, GRAPE's learned planes, Qwen3.5's partial rotary,
IL-/Omni-RoPE ids, and the configs/vlm_<scheme>.py files of the new schemes.

Cached == uncached decoding, text-prior and per-scheme forward tests of every registered
scheme are the parametrised tests of tests/test_vlm.py (they iterate over SCHEMES.names()).
"""
import importlib

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rope
from models import vlm
from models import vlm_schemes

import test_vlm as base   # tests/ is on sys.path under pytest (no package)

NEW = ("hope", "ilrope", "omnirope", "mmrope", "grape", "qwen35")


def _settings(scheme, **overrides):
  cfg = base.tiny_config(scheme)
  cfg.update(overrides)
  return vlm_schemes.settings(cfg)


# ---------------------------------------------------------------------------------------------
# HoPE: gamma drawn from the step's key in training, fixed (1) at evaluation.


def test_hope_ids_are_affine_in_the_temporal_scale():
  """The entry's `p1 + (gamma - 1)(p2 - p1)` equals rope's ids at that gamma."""
  segs = [rope.Text(4), rope.Video(3, 2, 3), rope.Text(2), rope.Image(2, 2), rope.Text(3)]
  got = vlm_schemes.SCHEMES.get("hope").positions(segs)
  for gamma in vlm_schemes.HOPE_TEMPORAL_SCALES:
    want, nxt = rope.multimodal_positions(segs, "hope", temporal_scale=gamma)
    ids = got.positions + (gamma - 1.0) * (got.positions_alt - got.positions)
    np.testing.assert_allclose(ids, want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(
        got.next_position + (gamma - 1.0) * (got.next_position_alt - got.next_position), nxt,
        atol=1e-5)


def test_hope_draws_differ_per_step_key_in_training_and_are_fixed_at_eval():
  model, forward = base.model_and_forward("hope")
  params = base.scheme_params("hope")
  segments = [[rope.Text(2), rope.Video(2, 3, 3), rope.Text(4)]] * 4
  inputs = vlm.model_inputs(base.make_batch("hope", segments, num_images=2))
  train = jax.jit(lambda p, x, key: model.apply({"params": p}, **x, rngs={"scheme": key}))
  eval1 = np.asarray(forward(params, inputs))
  eval2 = np.asarray(forward(params, inputs))
  np.testing.assert_array_equal(eval1, eval2)                 # evaluation: deterministic
  drawn = [np.asarray(train(params, inputs, jax.random.PRNGKey(s))) for s in range(4)]
  np.testing.assert_array_equal(drawn[0], np.asarray(train(params, inputs,
                                                           jax.random.PRNGKey(0))))
  assert any(np.abs(d - drawn[0]).max() > 1e-4 for d in drawn[1:])   # keys differ -> draws do
  assert any(np.abs(d - eval1).max() > 1e-4 for d in drawn)
  # The text before the video does not depend on gamma.
  for d in drawn:
    np.testing.assert_allclose(d[:, :2], eval1[:, :2], rtol=1e-5, atol=1e-5)
  # Samples of one batch draw their own gamma: identical samples differ for some key.
  assert any(np.abs(d[1:] - d[:1]).max() > 1e-4 for d in drawn)


# ---------------------------------------------------------------------------------------------
# GRAPE: learned planes per layer with logical names; rope init == interleaved RoPE.


def test_grape_planes_are_per_layer_parameters_with_logical_names():
  cfg = base.tiny_config("grape")
  model = vlm.model_from_config(cfg, base.VOCAB)
  inputs = vlm.dummy_inputs(cfg, base.IMAGE_SIZE, batch_size=1, num_images=1, length=8)
  boxed = jax.eval_shape(lambda k: vlm.init_params(model, k, inputs, boxed=True),
                         jax.random.PRNGKey(0))
  flat = flax.traverse_util.flatten_dict(boxed, sep="/")
  d = cfg.head_dim
  for layer in range(cfg.depth):
    for name, shape in (("grape_a", (d // 2, d)), ("grape_b", (d // 2, d)),
                        ("grape_axis_weight", (d // 2, 3))):
      x = flat[f"layers_{layer}/attn/{name}"]
      assert isinstance(x, nn.Partitioned) and x.value.shape == shape
      assert len(x.names) == len(shape)
      assert set(x.names) <= set(vlm.LOGICAL_AXES) | {None}
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert all(isinstance(x, nn.Partitioned) for x in leaves)
  params = jax.jit(lambda k: vlm.init_params(model, k, inputs))(jax.random.PRNGKey(0))
  init = rope.init_grape(None, d, "mixed", rope_init=True)
  for key, value in init.items():
    np.testing.assert_array_equal(params["layers_1"]["attn"][f"grape_{key}"], value)


@pytest.mark.parametrize("scheme", ["grape"])
def test_grape_rope_init_equals_interleaved_rope_on_the_same_ids(monkeypatch, scheme):
  """With rope-init planes the model equals a model rotating its M-RoPE ids with interleaved
  RoPE, pair p reading axis p mod 3 (`freqs_cyclic`), on the same weights."""

  class Interleaved(vlm_schemes.Scheme):
    def rotate(self, module, q, k, table):
      del module
      return (rope.apply_cos_sin(q, table.cos_q, table.sin_q, layout="interleaved"),
              rope.apply_cos_sin(k, table.cos_k, table.sin_k, layout="interleaved"))

  grape = vlm_schemes.SCHEMES.get(scheme)
  ref = Interleaved("interleaved RoPE on M-RoPE ids", "mrope", grape.table)
  monkeypatch.setitem(vlm_schemes.SCHEMES._entries, "ref_interleaved", ref)  # pylint: disable=protected-access
  params = base.scheme_params(scheme)
  segments = base.sample_segments(scheme)
  batch = base.make_batch(scheme, segments)
  _, forward = base.model_and_forward(scheme)
  got = np.asarray(forward(params, vlm.model_inputs(batch)))
  ref_model = vlm.model_from_config(base.tiny_config("ref_interleaved"), base.VOCAB)
  ref_params = base.shared_params()
  want = np.asarray(ref_model.apply({"params": ref_params}, **vlm.model_inputs(batch)))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Qwen3.5: only the first rotary_dim channels rotate.


def test_qwen35_rotates_only_the_first_rotary_dim_channels():
  s = _settings("qwen35", head_dim=32)
  entry = vlm_schemes.SCHEMES.get("qwen35")
  r = rope.partial_rotary_dim(32, 0.25)
  assert r == vlm_schemes.qwen35_rotary_dim(32) == 8
  assert entry.sections(s) == (2, 1, 1)
  segs = [rope.Text(3), rope.Video(2, 2, 2), rope.Text(2)]
  pos = jnp.asarray(entry.positions(segs).positions)[None]
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.normal(size=(1, pos.shape[1], s.num_heads, 32)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(1, pos.shape[1], s.num_kv_heads, 32)), jnp.float32)
  table = entry.tables(None, s, pos, pos)[0]
  q2, k2 = entry.rotate(None, q, k, table)
  np.testing.assert_array_equal(q2[..., r:], q[..., r:])          # the tail passes through
  np.testing.assert_array_equal(k2[..., r:], k[..., r:])
  ang = rope.angles(pos, rope.freqs_mrope_interleaved(r, s.theta, sections=(2, 1, 1)))
  np.testing.assert_allclose(q2[..., :r], rope.apply(q[..., :r], ang, layout="half"),
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(q2, rope.apply(q, ang, layout="half", rotary_dim=r),
                             rtol=1e-6, atol=1e-6)
  assert float(jnp.abs(q2[..., :r] - q[..., :r]).max()) > 1e-3


def test_qwen35_sections_scale_the_released_split():
  assert vlm_schemes.qwen35_sections(256) == (11, 11, 10)          # the released config
  assert vlm_schemes.qwen35_sections(128) == (5, 6, 5)          # round(5.5) = 6, round(5) = 5


# ---------------------------------------------------------------------------------------------
# IL-RoPE / Omni-RoPE ids are spatial reset's.


@pytest.mark.parametrize("scheme", ["ilrope", "omnirope"])
def test_ilrope_omnirope_ids_equal_spatial_reset(scheme):
  for segs in base.sample_segments(scheme) + [[rope.Text(2), rope.Video(3, 2, 4), rope.Text(1)]]:
    got = vlm.sequence_positions(base.tiny_config(scheme), segs)
    want, nxt = rope.multimodal_positions(segs, "spatial_reset")
    np.testing.assert_array_equal(got.positions, want)
    assert got.next_position == nxt


# ---------------------------------------------------------------------------------------------
# Checks and configs.


@pytest.mark.parametrize("scheme,overrides,match", [
    ("qwen35", {"head_dim": 4}, "`head_dim`=4"),
    ("hope", {"head_dim": 24}, "`head_dim`=24"),
    ("qwen35", {"sections": (1, 1, 1)}, "sections"),
    ("grape", {"head_dim": 6, "num_heads": 6, "num_kv_heads": 3}, None),
])
def test_invalid_settings_raise_naming_the_option(scheme, overrides, match):
  s = _settings(scheme, **overrides)
  if match is None:
    vlm_schemes.SCHEMES.get(scheme).check(s)      # accepted
    return
  with pytest.raises(ValueError, match=match):
    vlm_schemes.SCHEMES.get(scheme).check(s)


@pytest.mark.parametrize("scheme", NEW)
@pytest.mark.parametrize("mode", ["smoke", "cpu"])
def test_configs_build(scheme, mode):
  c = importlib.import_module(f"configs.vlm_{scheme}").get_config(mode)
  assert c.model.scheme == scheme
  vlm_schemes.SCHEMES.get(scheme).check(vlm_schemes.settings(c.model))
  vlm.model_from_config(c.model, 64)
