"""The vision-extension encodings of issue #14 (ComRoPE, STRING, DINOv3, EVA-02, p-RoPE,
LookHere, FIRE) in the ViT, and the training-time position augmentation (model.position_augment).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rope
from models import vit
from models import vit_encodings

NEW = ("comrope_ap", "comrope_ld", "string_cayley", "string_circulant", "dinov3", "eva02",
       "prope", "lookhere", "fire")
ROTARY = ("comrope_ap", "comrope_ld", "string_cayley", "string_circulant", "dinov3", "eva02",
          "prope")
TRAIN = 8   # 4x4 grid of 2-px patches


def config(encoding, **overrides):
  c = vit.default_config()
  # 4 heads x 16: every new entry splits it (LookHere needs 4k heads, p-RoPE >= 16 channels).
  c.update(dict(variant="Ti/2", head_dim=16, depth=2, encoding=encoding, train_image_size=TRAIN,
                block_size=2, prune_last_block=False))
  c.update(overrides)
  return c


def model_and_params(encoding, **overrides):
  c = config(encoding, **overrides)
  # Ti has 3 heads; LookHere needs 4k (or 6): S has 6.
  if encoding == "lookhere":
    c.update(dict(variant="S/2", head_dim=8))
  model = vit.model_from_config(c, 10)
  boxed = model.init(jax.random.PRNGKey(0), images(TRAIN), train=False)["params"]
  return model, boxed


def images(size, b=2):
  return jax.random.normal(jax.random.PRNGKey(3), (b, size, size, 3), jnp.float32)


@pytest.mark.parametrize("encoding", NEW)
def test_builds_runs_trains_and_names_every_parameter(encoding):
  model, boxed = model_and_params(encoding)
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
  for leaf in leaves:
    assert len(leaf.names) == leaf.value.ndim
    assert set(leaf.names) <= set(vit.LOGICAL_AXES) | {None}, leaf.names
  # Forward passes at other resolutions: tests/test_vit.py test_builds_and_runs_at_other_resolutions.
  params = nn.unbox(boxed)
  x = images(TRAIN)
  labels = jnp.array([1, 2])

  def loss(p):
    logits = model.apply({"params": p}, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

  grads = jax.jit(jax.grad(loss))(params)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
  if vit_encodings.ENCODINGS.get(encoding).params:
    posenc = grads["encoderblock_0"]["attention"]["posenc"]
    assert any(np.abs(np.asarray(g)).sum() > 0 for g in jax.tree.leaves(posenc))


def _qk(model, params, x, train=False, key=None):
  """Layer-0 input of the projection (LN output), and the sown rotated q, k."""
  kw = {"rngs": {"dropout": key}} if train else {}
  _, state = model.apply({"params": params}, x, train=train, mutable=["intermediates"],
                         capture_intermediates=lambda m, _: isinstance(m, nn.LayerNorm), **kw)
  blk = state["intermediates"]["encoderblock_0"]
  y = blk["norm_attn"]["__call__"][0]
  qkv = params["encoderblock_0"]["attention"]["qkv"]
  raw = [jnp.einsum("bld,dhe->blhe", y, qkv["kernel"][:, i], precision="highest")
         + qkv["bias"][i] for i in range(2)]
  return raw, (blk["attention"]["q"][0], blk["attention"]["k"][0])


def _reference(encoding, params, x_raw, grid, positions=None):
  """ComRoPE's rotation of `x_raw` rebuilt from the rope functions (class token at 0.5)."""
  p = params["encoderblock_0"]["attention"]["posenc"]
  pos = positions if positions is not None else rope.with_prefix(
      rope.grid_positions(*grid, scale="center"), 1, value=0.5)
  gens = rope.comrope_generators(p, variant=encoding[-2:])
  return rope.apply_blocks(x_raw, rope.skew_rotations(pos, gens))


def test_comrope_perturbation_through_the_model_is_perturb_positions():
  model, boxed = model_and_params("comrope_ld", position_augment=dict(
      perturbation=0.5, offset=0.1))
  params = nn.unbox(boxed)
  key = jax.random.PRNGKey(7)
  raw, rotated = _qk(model, params, images(TRAIN), train=True, key=key)
  # The model's draw: the step key split as nn.Module.make_rng("dropout") does, then
  # token_positions' split; rebuild it from the rope functions.
  tokens = model.apply({"params": params}, images(TRAIN), train=True, rngs={"dropout": key},
                       method=lambda m, x, train: m.encoding.positions(
                           (4, 4), m.options, 1, m.make_rng("dropout")))
  pos = tokens["positions"]
  base = rope.with_prefix(rope.grid_positions(4, 4, scale="center"), 1, value=0.5)
  delta = pos - base
  assert float(jnp.abs(delta[1:] - delta[:1]).max()) > 0   # patches moved relative to cls
  # Same per-patch moves and offset expressed with rope.perturb_positions.
  offset = delta[0]
  pert = (delta[1:] - offset) * 4.0
  np.testing.assert_allclose(rope.perturb_positions(base, pert, offset, grid=(4, 4)), pos,
                             atol=1e-6)
  assert float(jnp.abs(pert).max()) <= 0.5 + 1e-6
  for r, got in zip(raw, rotated):
    np.testing.assert_allclose(got, _reference("comrope_ld", params, r, (4, 4), pos),
                               atol=2e-5, rtol=2e-5)


AUG = dict(shift=0.5, jitter=1.5, rescale=2.0, perturbation=1.0, offset=0.1)


# Every rotary table builder (LieRE's blocks are ComRoPE-LD's path, ComRoPE-AP differs from LD
# only in its generators: both left out for time).
@pytest.mark.parametrize("encoding", tuple(e for e in ROTARY if e != "comrope_ap") +
                         ("axial", "mixed"))
def test_augmentation_off_at_eval_random_in_training(encoding):
  plain, boxed = model_and_params(encoding)
  params = nn.unbox(boxed)
  c = config(encoding, position_augment=AUG)
  aug = vit.model_from_config(c, 10)
  x = images(TRAIN)
  np.testing.assert_array_equal(aug.apply({"params": params}, x, train=False),
                                plain.apply({"params": params}, x, train=False))
  run = lambda m, k: np.asarray(m.apply({"params": params}, x, train=True,
                                        rngs={"dropout": jax.random.PRNGKey(k)}))
  aug0 = run(aug, 0)    # each training forward once (ComRoPE / LieRE run eagerly are slow)
  assert not np.allclose(aug0, run(aug, 1), atol=1e-6)
  assert not np.allclose(aug0, run(plain, 0), atol=1e-6)
  np.testing.assert_array_equal(aug0, run(aug, 0))


@pytest.mark.parametrize("encoding", ("dinov3", "eva02", "comrope_ld"))
def test_neutral_augmentation_changes_nothing(encoding):
  plain, boxed = model_and_params(encoding)
  params = nn.unbox(boxed)
  neutral = vit.model_from_config(config(encoding, position_augment=dict(
      shift=0.0, jitter=1.0, rescale=1.0, perturbation=0.0, offset=0.0)), 10)
  x = images(TRAIN)
  run = lambda m: np.asarray(m.apply({"params": params}, x, train=True,
                                     rngs={"dropout": jax.random.PRNGKey(0)}))
  np.testing.assert_allclose(run(neutral), run(plain), atol=1e-5)


def test_dinov3_augmentation_is_rope_augment_positions():
  c = config("dinov3", position_augment=dict(shift=0.3, jitter=1.2, rescale=2.0))
  model = vit.model_from_config(c, 10)
  opts = model.options
  key = jax.random.PRNGKey(5)
  tokens = vit_encodings.token_positions((4, 4), opts, 1, key)
  k_aug, _ = jax.random.split(key)
  v = rope.sample_position_augment(k_aug, shift=0.3, jitter=1.2, rescale=2.0)
  want = rope.augment_positions(rope.grid_positions(4, 4, scale="centered"), **v)
  np.testing.assert_allclose(tokens["positions"][1:], want, atol=1e-6)
  rows, cols = tokens["axes"]
  grid = jnp.stack(jnp.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2)
  np.testing.assert_allclose(grid, want, atol=1e-6)
  assert vit_encodings.token_positions((4, 4), opts, 1, None)["positions"][1:].tolist() == \
      rope.grid_positions(4, 4, scale="centered").tolist()


def test_augmentation_is_validated():
  with pytest.raises(ValueError, match="position_augment.jitter"):
    vit.model_from_config(config("axial", position_augment=dict(jitter=0.5)), 10)
  with pytest.raises(ValueError, match="needs a rotary encoding"):
    vit.model_from_config(config("fire", position_augment=dict(rescale=2.0)), 10)


@pytest.mark.parametrize("encoding", ("lookhere", "fire"))
def test_bias_reaches_attention(encoding):
  model, boxed = model_and_params(encoding)
  params = nn.unbox(boxed)
  none_cfg = config("none")
  if encoding == "lookhere":
    none_cfg.update(dict(variant="S/2", head_dim=8))
  none = vit.model_from_config(none_cfg, 10)
  x = images(TRAIN)
  a = model.apply({"params": params}, x, train=False)
  strip = {k: v for k, v in params.items()}
  for i in range(2):
    att = dict(strip[f"encoderblock_{i}"]["attention"])
    att.pop("posenc", None)
    strip[f"encoderblock_{i}"] = dict(strip[f"encoderblock_{i}"], attention=att)
  b = none.apply({"params": strip}, x, train=False)
  assert not np.allclose(a, b, atol=1e-5)
  tokens = {"grid": (4, 4), "num_prefix": 1}
  p = params["encoderblock_0"]["attention"].get("posenc", {})
  enc = model.encoding
  assert enc.bias_per_layer == (encoding == "lookhere")   # LookHere's slopes differ per layer
  bias = enc.bias(p, tokens, model.options, *((0,) if enc.bias_per_layer else ()))
  assert bias.shape[-2:] == (17, 17) and float(jnp.abs(bias).max()) > 0
  if enc.bias_per_layer:
    last = enc.bias(p, tokens, model.options, 1)
    assert not np.allclose(bias, last)
    # Each layer's bias is that layer of rope.lookhere_bias's whole stack, bitwise.
    stack = rope.lookhere_bias(4, 4, head_directions="halves-none", num_heads=6, depth=2)
    np.testing.assert_array_equal(bias, stack[:1])
    np.testing.assert_array_equal(last, stack[1:])
