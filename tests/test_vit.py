"""ViT model: sizes, every position encoding against a NumPy re-derivation of the references,
class token untouched, shift (in)variance, resolution changes, config validation, jit + grad.

Tiny models (depth 2, 3 heads of 24 channels, 4-pixel patches on 16-pixel images = 4x4 grid)
except the parameter counts, which use `jax.eval_shape` (no compute) on full ViT-S/16 and B/16.
Tiny models run eagerly (op by op, compiled ops are cached across tests): far cheaper on CPU
than compiling a whole program per test; one test checks `jax.jit`.
"""
import copy
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.linalg

import rope

import flax.linen as nn

from configs import vit_common
from models import registry
from models import vit
from models import vit_encodings
from models.vit_encodings import ENCODINGS

ROPES = tuple(n for n, e in ENCODINGS.items() if e.kind == "rotary")
RELATIVE = ("axial", "mixed", "axial_pi", "axial_learned", "mixed_pi", "uniform")
NOT_RELATIVE = ("spherical", "spherical_learned", "liere")
HEADS, HEAD_DIM, TRAIN = 3, 24, 16      # 24 splits into pairs, quarters, triplets and 8-blocks.

# timm `vit_small_patch16_224` (1000 classes) has 22,050,664 parameters, of which the
# pos_embed is 197 x 384 (196 patches + a cls slot).
TIMM_VIT_S16 = 22_050_664
TIMM_POS_EMBED_S16 = 197 * 384


def tiny_config(encoding, **overrides):
  c = vit.default_config()
  c.variant = "Ti/4"
  c.head_dim = HEAD_DIM
  c.depth = 2
  c.encoding = encoding
  c.train_image_size = TRAIN
  for k, v in overrides.items():
    c[k] = v
  return c


def images(size, batch=2, seed=0):
  if isinstance(size, int):
    size = (size, size)
  return jax.random.normal(jax.random.PRNGKey(seed), (batch, *size, 3))


def init(model, size=TRAIN, seed=0):
  return nn.unbox(model.init(jax.random.PRNGKey(seed), images(size), train=False)["params"])


def count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def param_shapes(config, num_classes=1000, size=224):
  model = vit.model_from_config(config, num_classes)
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  return nn.unbox(
      jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)["params"])


def without_posenc(tree):
  """The parameter tree of the same model with encoding='none' (drops every 'posenc' entry)."""
  return {k: without_posenc(v) if isinstance(v, dict) else v
          for k, v in tree.items() if k != "posenc"}


def layer0_qk(model, params, x):
  """Layer-0 queries and keys after the rotation, `[B, L, H, D]` each (sown by Attention)."""
  _, state = model.apply({"params": params}, x, train=False, mutable=["intermediates"])
  att = state["intermediates"]["encoderblock_0"]["attention"]
  return np.asarray(att["q"][0], np.float64), np.asarray(att["k"][0], np.float64)


# --------------------------------------------------------------------------- parameter counts


def test_vit_s16_mixed_parameter_count():
  shapes = param_shapes(vit.default_config())   # default: S/16, mixed, cls, 224
  # rope-vit: freqs [2, depth, heads * hd / 2] = depth * embed_dim, and no pos_embed.
  assert count(shapes) == TIMM_VIT_S16 - TIMM_POS_EMBED_S16 + 12 * 384
  for i in range(12):
    assert shapes[f"encoderblock_{i}"]["attention"]["posenc"]["freqs"].shape == (6, 32, 2)


def test_vit_s16_ape_parameter_count():
  c = vit.default_config()
  c.encoding = "ape"
  # Same as timm except the APE has no cls slot (rope-vit / DeiT-III convention).
  assert count(param_shapes(c)) == TIMM_VIT_S16 - 384


@pytest.mark.parametrize("block_size, paper_count", [(2, 9_216), (8, 64_512), (64, 580_608)])
def test_liere_vit_b_generator_counts_match_paper(block_size, paper_count):
  c = vit.default_config()
  c.variant, c.encoding, c.block_size = "B/16", "liere", block_size
  shapes = param_shapes(c)
  gens = [shapes[f"encoderblock_{i}"]["attention"]["posenc"]["generators"] for i in range(12)]
  g = block_size
  for gen in gens:  # per layer: 2 axes x 12 heads x 64/g blocks of g x g raw parameters.
    assert gen.shape == (2, 12, 64 // g, g, g)
  # LieRE Table 10 counts the free (strict upper triangle) entries, per layer and head.
  free = sum(int(np.prod(gen.shape[:-2])) * g * (g - 1) // 2 for gen in gens)
  assert free == paper_count


def test_liere_vit_s16_parameter_count():
  c = vit.default_config()
  c.encoding = "liere"
  shapes = param_shapes(c)
  assert count(shapes) == TIMM_VIT_S16 - TIMM_POS_EMBED_S16 + 12 * 2 * 6 * 8 * 64
  # Half the heads of ViT-B: half of Table 10's 64,512 free parameters.
  gens = [shapes[f"encoderblock_{i}"]["attention"]["posenc"]["generators"] for i in range(12)]
  assert sum(int(np.prod(x.shape[:-2])) * 28 for x in gens) == 64_512 // 2


def test_variant_sizes_and_head_dim_override():
  for variant, (width, heads, mlp) in {"Ti/16": (192, 3, 768), "S/16": (384, 6, 1536),
                                       "B/16": (768, 12, 3072)}.items():
    c = vit.default_config()
    c.variant = variant
    dims = vit.model_dims(c)
    assert (dims["width"], dims["num_heads"], dims["mlp_dim"], dims["depth"]) == (
        width, heads, mlp, 12)
  c = vit.default_config()
  c.head_dim, c.encoding = 63, "spherical"
  shapes = param_shapes(c)
  assert shapes["encoderblock_0"]["attention"]["qkv"]["kernel"].shape == (378, 3, 6, 63)
  assert shapes["encoderblock_0"]["mlp"]["fc1"]["kernel"].shape == (378, 4 * 378)


def test_no_decay_names():
  c = tiny_config("mixed", ape=True, layerscale_init=1e-4)
  params = param_shapes(c, num_classes=10, size=TRAIN)
  paths = ["/".join(str(getattr(k, "key", k)) for k in path)
           for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  assert "posenc/ape" in paths and "cls" in paths
  assert "encoderblock_1/attention/posenc/freqs" in paths
  assert "encoderblock_0/layerscale_attn/ls" in paths
  assert "encoderblock_0/norm_attn/scale" in paths and "norm_final/bias" in paths


# ------------------------------------------------------------------ every encoding, any size


# LookHere needs 4k heads or 6 (models/vit_encodings.py lookhere_directions; Ti's 3 are
# refused, test_invalid_config_raises_naming_the_option): S's 6 heads at the same width.
SIX_HEADS = {"variant": "S/4", "head_dim": HEADS * HEAD_DIM // 6}
OVERRIDES = {"lookhere": SIX_HEADS}


def _all_configs():
  yield from ((p, OVERRIDES.get(p, {})) for p in ENCODINGS.names())
  yield "mixed", {"ape": True}


@pytest.mark.parametrize("encoding, overrides", list(_all_configs()))
def test_builds_and_runs_at_other_resolutions(encoding, overrides):
  model = vit.model_from_config(tiny_config(encoding, **overrides), 10)
  sizes = (TRAIN, 24, (8, 12))   # training grid, larger, smaller and non-square

  # One compiled program for init and the three sizes: far cheaper than op-by-op dispatch.
  @jax.jit
  def run(key):
    params = nn.unbox(model.init(key, images(TRAIN), train=False)["params"])
    return [model.apply({"params": params}, images(s), train=False) for s in sizes]

  for size, logits in zip(sizes, run(jax.random.PRNGKey(0))):
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    assert np.isfinite(np.asarray(logits)).all(), size


def test_average_pooling_has_no_class_token():
  model = vit.model_from_config(tiny_config("mixed", pool="gap"), 10)

  # New token counts: one compiled program is cheaper than op-by-op compilation here.
  @jax.jit
  def run(key):
    params = nn.unbox(model.init(key, images(TRAIN), train=False)["params"])
    return params, [model.apply({"params": params}, images(s), train=False) for s in (8, 24)]

  params, outputs = run(jax.random.PRNGKey(0))
  assert "cls" not in params
  for logits in outputs:
    assert logits.shape == (2, 10) and np.isfinite(np.asarray(logits)).all()


# --------------------------------------------- rotations against a NumPy re-derivation (spec)


def _axis(n, n_train, scale):
  i = np.arange(n, dtype=np.float64)
  if scale == "index":
    return i
  if scale == "center":           # ComRoPE: patch centres in (0, 1) at every resolution
    return (i + 0.5) / n
  if scale == "centered":         # DINOv3: 2 (i + 0.5) / n - 1
    return 2.0 * (i + 0.5) / n - 1.0
  if scale == "index_interp":     # EVA-02: i * n_train / n
    return i * n_train / n
  s = n / n_train
  if scale == "unit":
    return np.linspace(0.0, s, n)
  return np.linspace(-s * np.pi, s * np.pi, n)


def _rotate_pairs(x, ang):
  """x [B, N, H, D]; ang [N, H|1, D/2]; adjacent channels (2p, 2p+1) form pair p."""
  a, b = x[..., 0::2], x[..., 1::2]
  out = np.empty_like(x)
  out[..., 0::2] = a * np.cos(ang) - b * np.sin(ang)
  out[..., 1::2] = a * np.sin(ang) + b * np.cos(ang)
  return out


def _spherical(x, row, col, w_row, w_col):
  """vision_rope.md §5.1 pseudocode; x [B, N, H, D]; w_* [H|1, D/3]."""
  b, n, h, d = x.shape
  z = x.reshape(b, n, h, d // 3, 3)
  u, v, w = z[..., 0], z[..., 1], z[..., 2]
  al = row[:, None, None] * w_row[None]
  be = col[:, None, None] * w_col[None]
  u1, w1 = u * np.cos(al) - w * np.sin(al), u * np.sin(al) + w * np.cos(al)
  v2, w2 = v * np.cos(be) - w1 * np.sin(be), v * np.sin(be) + w1 * np.cos(be)
  return np.stack([u1, v2, w2], -1).reshape(x.shape)


def _liere(x, row, col, raw):
  """LieRE: R = expm(row * S_row + col * S_col) per head and block; x_b' = R x_b."""
  raw = np.asarray(raw, np.float64)
  upper = np.triu(raw, 1)
  gen = upper - np.swapaxes(upper, -1, -2)                     # [2, H, G, g, g]
  b, n, h, d = x.shape
  g = gen.shape[-1]
  xb = x.reshape(b, n, h, d // g, g)
  out = np.empty_like(xb)
  for t in range(n):
    for hh in range(h):
      for blk in range(d // g):
        r = scipy.linalg.expm(row[t] * gen[0, hh, blk] + col[t] * gen[1, hh, blk])
        out[:, t, hh, blk] = xb[:, t, hh, blk] @ r.T
  return out.reshape(x.shape)


def _skew_np(w):
  upper = np.triu(np.asarray(w, np.float64), 1)
  return upper - np.swapaxes(upper, -1, -2)


def _comrope(x, row, col, p0, variant):
  """ComRoPE (spec §1.1): block g of head h turns by expm(c_g S_hg), S = P - P^T, with
  c_g = the position on axis g mod 2 (AP) or theta[:, g] . position (LD); x_b' = R x_b."""
  p = np.asarray(p0["P"], np.float64)                          # [H, G, g, g]
  s = p - np.swapaxes(p, -1, -2)
  b, n, h, d = x.shape
  g = s.shape[-1]
  pos = np.stack([row, col], -1)                               # [n, 2]
  if variant == "ap":
    coeff = pos[:, np.arange(d // g) % 2]                      # [n, G]
  else:
    coeff = pos @ np.asarray(p0["theta"], np.float64)          # [n, 2] @ [2, G]
  xb = x.reshape(b, n, h, d // g, g)
  out = np.empty_like(xb)
  for t in range(n):
    for hh in range(h):
      for blk in range(d // g):
        out[:, t, hh, blk] = xb[:, t, hh, blk] @ scipy.linalg.expm(coeff[t, blk] * s[hh, blk]).T
  return out.reshape(x.shape)


def _dinov3(x, row, col, base=100.0):
  """DINOv3 (spec §2.1): periods base^(4j/D), angles 2 pi c / period, [row ladder, col ladder],
  rotate-half: pair (j, j + D/2)."""
  d = x.shape[-1]
  w = 2 * np.pi / base ** (4.0 * np.arange(d // 4) / d)
  ang = np.concatenate([np.outer(row, w), np.outer(col, w)], -1)[:, None]   # [N, 1, D/2]
  x1, x2 = x[..., : d // 2], x[..., d // 2:]
  return np.concatenate([x1 * np.cos(ang) - x2 * np.sin(ang),
                         x2 * np.cos(ang) + x1 * np.sin(ang)], -1)


def _string_cayley(x, row, col, p0):
  """Cayley-STRING (spec §4): P RoPE(r) P^T x, P = (I - S)(I + S)^-1 per head, S from W;
  base RoPE rope-vit's axial table (theta 100, integer positions, interleaved pairs)."""
  s = _skew_np(p0["W"])                                        # [H, D, D]
  eye = np.eye(s.shape[-1])
  p = np.linalg.solve((eye + s).swapaxes(-1, -2), (eye - s).swapaxes(-1, -2)).swapaxes(-1, -2)
  d = x.shape[-1]
  f = 100.0 ** (-4.0 * np.arange(d // 4) / d)
  ang = np.concatenate([np.outer(col, f), np.outer(row, f)], -1)[:, None]
  y = _rotate_pairs(np.einsum("hji,bnhj->bnhi", p, x), ang)    # RoPE(r) P^T x
  return np.einsum("hij,bnhj->bnhi", p, y)


def _circulant(x, row, col, p0):
  """Circulant-STRING (spec §4): expm(row L_0 + col L_1) x, L_a = C_a - C_a^T, C_a circulant
  with first column c_a (C[i, j] = c[(i - j) mod D])."""
  c = np.asarray(p0["c"], np.float64)                          # [2, H, D]
  d = c.shape[-1]
  idx = (np.arange(d)[:, None] - np.arange(d)[None]) % d
  circ = c[..., idx]                                           # [2, H, D, D]
  gen = circ - np.swapaxes(circ, -1, -2)
  out = np.empty_like(x)
  for t in range(x.shape[1]):
    for hh in range(x.shape[2]):
      r = scipy.linalg.expm(row[t] * gen[0, hh] + col[t] * gen[1, hh])
      out[:, t, hh] = x[:, t, hh] @ r.T
  return out


def _expected_patch_rotation(encoding, x, grid, p0):
  """Rotated patch queries per the references (spec §2-§6), x [B, N, H, D] float64."""
  kind = ENCODINGS.get(encoding)
  row = np.repeat(_axis(grid, TRAIN // 4, kind.scale), grid)   # row-major tokens
  col = np.tile(_axis(grid, TRAIN // 4, kind.scale), grid)
  d = x.shape[-1]
  t = np.arange(d // 4)
  if encoding in ("axial", "axial_pi", "uniform"):
    f = {"axial": 100.0 ** (-4.0 * t / d),      # rope-vit, theta 100
         "axial_pi": 100.0 ** (-2.0 * t / d),        # Spherical paper App. G
         "uniform": np.full(d // 4, 1 / np.pi)}[encoding]
    ang = np.concatenate([np.outer(col, f), np.outer(row, f)], -1)[:, None]   # x half first
    return _rotate_pairs(x, ang)
  if encoding in ("mixed", "mixed_pi"):
    f = np.asarray(p0["freqs"], np.float64)                                   # [H, D/2, 2]
    return _rotate_pairs(x, row[:, None, None] * f[..., 0] + col[:, None, None] * f[..., 1])
  if encoding == "axial_learned":
    f = np.asarray(p0["freqs"], np.float64)                                   # [H, D/4, 2]
    ang = np.concatenate([col[:, None, None] * f[..., 1], row[:, None, None] * f[..., 0]], -1)
    return _rotate_pairs(x, ang)
  if encoding == "spherical":
    w = 100.0 ** (-2.0 * np.arange(d // 3) / d)[None]
    return _spherical(x, row, col, w, w)
  if encoding == "spherical_learned":
    f = np.asarray(p0["freqs"], np.float64)                                   # [H, D/3, 2]
    return _spherical(x, row, col, f[..., 0], f[..., 1])
  if encoding == "liere":
    return _liere(x, row, col, p0["generators"])
  if encoding in ("comrope_ap", "comrope_ld"):
    return _comrope(x, row, col, p0, encoding[-2:])
  if encoding == "dinov3":
    return _dinov3(x, row, col)
  if encoding in ("eva02", "prope"):
    if encoding == "eva02":   # timm RotaryEmbeddingCat: theta 1e4, row first, interleaved
      f = 1e4 ** (-4.0 * t / d)
      ang = np.concatenate([np.outer(row, f), np.outer(col, f)], -1)[:, None]
    else:   # p-RoPE (spec §5.2): rope-vit's axial table, first int(0.25 * D/4) pairs per axis
      f = np.where(t < int(0.25 * (d // 4)), 100.0 ** (-4.0 * t / d), 0.0)
      ang = np.concatenate([np.outer(col, f), np.outer(row, f)], -1)[:, None]
    return _rotate_pairs(x, ang)
  if encoding == "string_cayley":
    return _string_cayley(x, row, col, p0)
  if encoding == "string_circulant":
    return _circulant(x, row, col, p0)
  raise AssertionError(f"{encoding}: no NumPy reference here; add one for a new rotary entry")


@pytest.mark.parametrize("encoding", ROPES)
@pytest.mark.parametrize("size", [TRAIN, 24])    # training grid 4x4 and extrapolation to 6x6
def test_rotation_matches_reference_and_spares_cls(encoding, size):
  model = vit.model_from_config(tiny_config(encoding), 10)
  plain = vit.model_from_config(tiny_config("none"), 10)
  params = init(model)
  # The class token is initialised to zeros, so its q / k (LayerNorm of zeros, zero qkv bias)
  # would be 0 and any rotation would leave them alone: give it a random value.
  params["cls"] = jax.random.normal(jax.random.PRNGKey(2), params["cls"].shape)
  x = images(size, seed=1)
  q, k = layer0_qk(model, params, x)
  q0, k0 = layer0_qk(plain, without_posenc(params), x)   # same weights, no rotation
  assert np.abs(q0[:, 0]).max() > 1e-1 and np.abs(k0[:, 0]).max() > 1e-1
  p0 = params["encoderblock_0"]["attention"].get("posenc", {})
  tol = 5e-5 if encoding in ("liere", "comrope_ap", "comrope_ld", "string_cayley",
                             "string_circulant") else 1e-5
  if encoding in ("comrope_ap", "comrope_ld"):
    # ComRoPE rotates its class token like a patch, at the image centre (0.5, 0.5) (the
    # reference's cls_position; spec §1.2, §8.2).
    for got, raw in ((q, q0), (k, k0)):
      centre = np.full(1, 0.5)
      want = _comrope(raw[:, :1], centre, centre, p0, encoding[-2:])
      np.testing.assert_allclose(got[:, :1], want, atol=tol, rtol=0)
      assert np.abs(got[:, 0] - raw[:, 0]).max() > 1e-2
  elif encoding in ("string_cayley", "string_circulant"):
    # STRING layers work in P's coordinates (P^T x for the class token, R P^T x for patches:
    # the same logits); the sown q, k are mapped back by P, so the class token is P P^T x.
    np.testing.assert_allclose(q[:, 0], q0[:, 0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(k[:, 0], k0[:, 0], atol=1e-5, rtol=0)
  else:
    # The class token is never rotated (bitwise: the rotation is exactly the identity at 0).
    np.testing.assert_array_equal(q[:, 0], q0[:, 0])
    np.testing.assert_array_equal(k[:, 0], k0[:, 0])
  for got, raw in ((q, q0), (k, k0)):
    want = _expected_patch_rotation(encoding, raw[:, 1:], size // 4, p0)
    np.testing.assert_allclose(got[:, 1:], want, atol=tol, rtol=0)
    assert np.abs(got[:, 1:] - raw[:, 1:]).max() > 1e-2   # the patches did rotate


def test_cls_logits_independent_of_rope_frequencies():
  model = vit.model_from_config(tiny_config("mixed"), 10)
  params = init(model)
  other = jax.tree_util.tree_map_with_path(
      lambda path, v: v * 3.0 + 1.0 if "posenc" in jax.tree_util.keystr(path) else v, params)
  x = images(TRAIN)
  q, k = layer0_qk(model, params, x)
  q2, k2 = layer0_qk(model, other, x)
  cls_cls = lambda q, k: np.einsum("bhd,bhd->bh", q[:, 0], k[:, 0])
  np.testing.assert_array_equal(cls_cls(q, k), cls_cls(q2, k2))
  assert np.abs(q[:, 1:] - q2[:, 1:]).max() > 1e-2


def test_learned_rotations_are_per_layer():
  for encoding in ("mixed", "liere", "spherical_learned", "mixed_pi", "axial_learned"):
    params = init(vit.model_from_config(tiny_config(encoding), 10))
    p = [jax.tree.leaves(params[f"encoderblock_{i}"]["attention"]["posenc"])[0]
         for i in range(2)]
    assert p[0].shape == p[1].shape and p[0].shape[1 if encoding == "liere" else 0] == HEADS
    assert not np.allclose(p[0], p[1]), encoding


def test_mixed_init_is_rope_vit():
  # rope-vit: per head one direction a, |F_j| = 10^(-4j/D) on both halves, halves orthogonal.
  params = init(vit.model_from_config(tiny_config("mixed"), 10))
  f = np.asarray(params["encoderblock_0"]["attention"]["posenc"]["freqs"], np.float64)
  m = 10.0 ** (-4.0 * np.arange(HEAD_DIM // 4) / HEAD_DIM)
  np.testing.assert_allclose(np.linalg.norm(f, axis=-1), np.tile(m, 2)[None].repeat(HEADS, 0),
                             rtol=1e-5)
  first, second = f[:, : HEAD_DIM // 4], f[:, HEAD_DIM // 4:]
  np.testing.assert_allclose(np.sum(first * second, -1), 0.0, atol=1e-6)


# ------------------------------------------------------------------- shift (in)variance


def _shift_gap(encoding):
  """Layer-0 patch<->patch logits of the same patches seen one patch further down-right.

  Crop A is the top-left 4x4 patches of a 5x5-patch image, crop B the bottom-right ones; the
  3x3 patches they share have identical pre-rotation q / k (no APE) but positions shifted by
  one patch. Returns max |logit_A - logit_B| relative to max |logit|.
  """
  model = vit.model_from_config(tiny_config(encoding), 10)
  params = init(model)
  big = np.asarray(images(20, seed=3))
  logits = []
  for crop, first in ((big[:, :16, :16], 1), (big[:, 4:, 4:], 0)):
    q, k = layer0_qk(model, params, jnp.asarray(crop))
    idx = [1 + (first + r) * 4 + (first + c) for r in range(3) for c in range(3)]
    logits.append(np.einsum("bihd,bjhd->bhij", q[:, idx], k[:, idx]))
  return np.abs(logits[0] - logits[1]).max() / np.abs(logits[0]).max()


@pytest.mark.parametrize("encoding", RELATIVE)
def test_commuting_encodings_are_shift_invariant(encoding):
  assert _shift_gap(encoding) < 1e-5


@pytest.mark.parametrize("encoding", NOT_RELATIVE)
def test_non_commuting_encodings_are_not(encoding):
  assert _shift_gap(encoding) > 1e-2


# -------------------------------------------------- rotations computed once, not per layer


def _trig_shapes(jaxpr):
  # rope's trig (rope/_kernels.cos_sin: cos and sin of one array together) is a
  # `platform_dependent` conditional (`branches_platforms`) whose plain branch computes `cos`:
  # one per cos_sin call, with the shape of the angles.
  shapes = []
  for eqn in jaxpr.eqns:
    if eqn.params.get("branches_platforms") is not None:
      plain = eqn.params["branches"][-1].jaxpr
      shapes += [tuple(e.outvars[0].aval.shape) for e in plain.eqns if e.primitive.name == "cos"]
      continue
    for value in eqn.params.values():
      for sub in value if isinstance(value, (list, tuple)) else [value]:
        sub = getattr(sub, "jaxpr", sub)
        if hasattr(sub, "eqns"):
          shapes += _trig_shapes(sub)
  return shapes


# Tables take their trig per grid axis (rope.grid_cos_sin, rope.spherical_grid_cos_sin): 4 rows
# + 4 columns of the 4x4 grid, not 17 tokens; the class token's cos 1 / sin 0 need none.
@pytest.mark.parametrize("encoding, per_model, per_layer", [
    ("axial", [(4, 1, 12)] * 2, []),
    ("uniform", [(4, 1, 12)] * 2, []),
    ("spherical", [(4, 1, 8)] * 2, []),       # alpha of the rows, beta of the columns
    ("mixed", [], [(4, HEADS, 12)] * 2),
    ("spherical_learned", [], [(4, HEADS, 8)] * 2),
])
def test_rotations_computed_once_without_batch_axis(encoding, per_model, per_layer):
  depth, batch = 3, 5
  model = vit.model_from_config(tiny_config(encoding, depth=depth), 10)
  params = init(model)
  jaxpr = jax.make_jaxpr(lambda p, x: model.apply({"params": p}, x, train=False))(
      params, images(TRAIN, batch=batch))
  assert sorted(_trig_shapes(jaxpr.jaxpr)) == sorted(per_model + per_layer * depth)


# ------------------------------------------------------------------ APE interpolation


def test_ape_resize_is_identity_on_training_grid():
  table = jax.random.normal(jax.random.PRNGKey(0), (4, 5, 8))
  np.testing.assert_allclose(vit_encodings.resize_ape(table, (4, 5)), table, atol=1e-6)


def test_ape_resize_is_bicubic_and_centre_aligned():
  # A linear ramp is reproduced exactly by cubic convolution away from the borders; output
  # pixel i samples the source at (i + 0.5) * n / m - 0.5 (align_corners=False, as timm).
  n, m = 6, 12
  rows = np.arange(n, dtype=np.float32)
  table = np.broadcast_to(rows[:, None, None] * 2.0 + 1.0, (n, n, 3)).astype(np.float32)
  out = np.asarray(vit_encodings.resize_ape(jnp.asarray(table), (m, m)))
  src = (np.arange(m) + 0.5) * n / m - 0.5
  inner = slice(4, m - 4)
  np.testing.assert_allclose(out[inner, inner, 0], (src[inner, None] * 2 + 1).repeat(4, 1),
                             atol=1e-5)


def test_learned_ape_used_as_stored_at_training_resolution():
  model = vit.model_from_config(tiny_config("ape"), 10)
  params = init(model)
  table = params["posenc"]["ape"]
  assert table.shape == (4, 4, HEADS * HEAD_DIM)
  out = vit_encodings.APE.embed({"ape": table}, (4, 4), model.options)
  np.testing.assert_allclose(out, table.reshape(16, -1), atol=1e-6)


def test_sincos_table():
  pe = vit_encodings.sincos_2d(3, 5, 16)
  w = 10_000.0 ** (-np.arange(4) / 3)
  np.testing.assert_allclose(pe[2, 4, :4], np.sin(4 * w), atol=1e-6)
  np.testing.assert_allclose(pe[2, 4, 12:], np.cos(2 * w), atol=1e-6)


# ------------------------------------------------------------------------ validation


@pytest.mark.parametrize("overrides, image_size, option", [
    ({"encoding": "rope_foo"}, 224, "encoding"),
    ({}, 30, "image_size"),
    ({"train_image_size": 100}, 224, "train_image_size"),
    ({"head_dim": 64, "encoding": "spherical"}, 224, "head_dim"),
    ({"encoding": "liere", "block_size": 6}, 224, "block_size"),
    ({"encoding": "liere", "block_size": 1}, 224, "block_size"),
    ({"encoding": "comrope_ap", "block_size": 5}, 224, "block_size"),
    ({"encoding": "lookhere", "variant": "Ti/16"}, 224, "LookHere needs a multiple of 4 heads"),
    ({"head_dim": 62, "encoding": "axial"}, 224, "head_dim"),
    ({"variant": "XL/16"}, 224, "variant"),
    ({"variant": "S16"}, 224, "variant"),
    ({"pool": "max"}, 224, "pool"),
    ({"dtype": "float16"}, 224, "dtype"),
    ({"encoding": "liere", "theta": 10.0}, 224, "theta"),
    ({"encoding": "axial", "omega": 1.0}, 224, "omega"),
    ({"encoding": "ape", "ape": True}, 224, "ape"),
    ({"encoding": "none", "position_scale": "pi"}, 224, "position_scale"),
    ({"position_scale": "degrees"}, 224, "position_scale"),
    ({"dropout": 1.5}, 224, "dropout"),
    ({"layerscale_init": -1.0}, 224, "layerscale_init"),
    ({"attention_impl": "flash"}, 224, "attention_impl"),
    ({"attention_impl": "cudnn"}, 224, "attention_impl"),   # float32
])
def test_invalid_config_raises_naming_the_option(overrides, image_size, option):
  c = vit.default_config()
  for key, value in overrides.items():
    c[key] = value
  with pytest.raises(ValueError, match=option):
    vit.validate_config(c, image_size)
  if image_size == 224:   # model_from_config validates at train_image_size
    with pytest.raises(ValueError, match=option):
      vit.model_from_config(c, 10)


def test_non_bool_prune_last_block_raises():
  # ConfigDict's type checks stop `c.prune_last_block = "yes"`; a config read from JSON or
  # built from a dict is checked by validate_config. Configs older than the option default it.
  d = vit.default_config().to_dict()
  with pytest.raises(ValueError, match="prune_last_block"):
    vit.validate_config(ml_collections.ConfigDict({**d, "prune_last_block": "yes"}), 224)
  del d["prune_last_block"]
  assert vit.model_from_config(ml_collections.ConfigDict(d), 10).prune_last_block


def test_image_not_divisible_by_patch_raises():
  model = vit.model_from_config(tiny_config("axial"), 10)
  params = init(model)
  with pytest.raises(ValueError, match="patch"):
    model.apply({"params": params}, images(18), train=False)


def test_default_config_is_valid_and_complete():
  c = vit.default_config()
  assert set(c.keys()) == {
      "name", "variant", "depth", "head_dim", "pool", "prune_last_block", "encoding", "theta",
      "position_scale", "rope_scaling",
      "block_size", "omega", "position_augment", "ape", "attention_impl", "train_image_size",
      "dropout", "drop_path", "layerscale_init", "dtype"} | set(vit.PORTING_DEFAULTS)
  assert set(c.position_augment.keys()) == set(vit_encodings.AUGMENT_KEYS)
  vit.validate_config(c, 384)   # any size divisible by the patch


# ------------------------------------------------------------------------- jit and grad


def _loss_fn(model, batch=2):
  labels = jax.nn.one_hot(jnp.arange(batch) % 10, 10)

  def loss_fn(p, x, key):
    logits = model.apply({"params": p}, x, train=True, rngs={"dropout": key})
    return -jnp.mean(jnp.sum(labels * jax.nn.log_softmax(logits), -1))
  return loss_fn


def test_jit_value_and_grad_with_dropout_droppath_layerscale():
  c = tiny_config("liere", ape=True, dropout=0.1, drop_path=0.1, layerscale_init=0.1)
  model = vit.model_from_config(c, 10)
  params = init(model)
  step = jax.jit(jax.value_and_grad(_loss_fn(model)))
  x = images(TRAIN)
  (a, grads), (b, _) = step(params, x, jax.random.PRNGKey(1)), step(params, x, jax.random.PRNGKey(2))
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  assert np.abs(grads["posenc"]["ape"]).max() > 0
  # LieRE with true per-layer generators: every layer's generators get a gradient (upstream
  # reuses layer 0's rotations, vision_rope.md §4.6).
  for i in range(2):
    g = grads[f"encoderblock_{i}"]["attention"]["posenc"]["generators"]
    assert np.abs(g).max() > 0, i
  assert a != b    # dropout / drop-path draw from the "dropout" rng


@pytest.mark.parametrize("encoding", ["mixed", "spherical", "ape"])
def test_pruned_last_block_gives_the_same_logits_and_gradients(encoding):
  # Under class-token pooling the last block computes only the class token's output; nothing
  # read downstream changes, so logits and every gradient (incl. the last block's k / v
  # weights, which still see every token) equal the unpruned model's up to float32 rounding.
  overrides = {"head_dim": 21} if encoding == "spherical" else {}
  x = images(TRAIN)
  loss = lambda m: jax.jit(
      jax.value_and_grad(lambda p: jnp.sum(m.apply({"params": p}, x, train=False) ** 2)))
  pruned = vit.model_from_config(tiny_config(encoding, **overrides), 10)
  full = vit.model_from_config(tiny_config(encoding, prune_last_block=False, **overrides), 10)
  params = init(full)
  (a, ga), (b, gb) = loss(pruned)(params), loss(full)(params)
  np.testing.assert_allclose(a, b, rtol=1e-5)
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(gb))
  for g1, g2 in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
    np.testing.assert_allclose(g1, g2, atol=1e-5 * scale)
  qkv = gb["encoderblock_1"]["attention"]["qkv"]["kernel"]
  assert np.abs(qkv[:, 1:]).max() > 0    # k and v of the patch tokens still get a gradient
  # The pruned block really is narrower: its MLP sees one token per image.
  _, state = pruned.apply({"params": params}, x, train=False,
                          capture_intermediates=lambda m, _: isinstance(m, vit.MlpBlock))
  shapes = {k: v["mlp"]["__call__"][0].shape for k, v in state["intermediates"].items()}
  assert shapes["encoderblock_0"][1] == 17 and shapes["encoderblock_1"][1] == 1, shapes


def test_bfloat16_compute_keeps_float32_params_and_logits():
  model = vit.model_from_config(tiny_config("spherical", dtype="bfloat16"), 10)
  reference = vit.model_from_config(tiny_config("spherical"), 10)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), images(8))
  # (init also returns the sown "features" collection, in the compute dtype.)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(shapes["params"]))
  params = init(reference)   # same tree; the float32 model's ops are already compiled
  logits = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))(params, images(TRAIN))
  assert logits.dtype == jnp.float32 and np.isfinite(np.asarray(logits)).all()
  ref = reference.apply({"params": params}, images(TRAIN), train=False)
  np.testing.assert_allclose(logits, ref, atol=0.05 * float(np.abs(ref).max()) + 1e-3)


def test_to_strided_reorders_q_and_k_channels_only():
  kernel = jnp.arange(2 * 3 * 2 * 6, dtype=jnp.float32).reshape(2, 3, 2, 6)
  for group, order in ((2, [0, 2, 4, 1, 3, 5]), (3, [0, 3, 1, 4, 2, 5])):
    out = vit.to_strided(kernel, group)
    np.testing.assert_array_equal(out[:, :2], kernel[:, :2][..., order])
    np.testing.assert_array_equal(out[:, 2], kernel[:, 2])
    np.testing.assert_array_equal(vit.from_strided(out[:, :2], group), kernel[:, :2])

# ------------------------------------------------------------------------------ registry


def test_every_entry_is_consistent():
  for name, entry in ENCODINGS.items():
    assert entry.kind in vit_encodings.KINDS, name
    if entry.kind == "rotary":
      assert entry.scale in vit_encodings.POSITION_SCALES, name
    if entry.group:
      assert entry.multiple % entry.group == 0, name   # to_strided needs whole groups


def test_old_names_and_keys_map_to_the_registry_names():
  old = {"none": "none", "ape_learned": "ape", "ape_sincos": "sincos", "rope_axial": "axial",
         "rope_mixed": "mixed", "liere": "liere", "spherical": "spherical",
         "spherical_learned": "spherical_learned", "axial_pi": "axial_pi",
         "axial_learned": "axial_learned", "mixed_pi": "mixed_pi", "uniform": "uniform"}
  assert {a: ENCODINGS.canonical(a) for a in old} == old
  # A model config as an old workdir's config.json holds it: key `posenc`, old value, and
  # neither prune_last_block nor attention_impl.
  # Nor position_augment, and block_size was 8 (LieRE's default) for every encoding.
  d = tiny_config("mixed", ape=True).to_dict()
  del d["encoding"], d["prune_last_block"], d["attention_impl"], d["position_augment"]
  del d["rope_scaling"]
  d["posenc"], d["block_size"] = "rope_mixed", 8
  up = vit.upgrade_config(ml_collections.ConfigDict(d))
  assert up.encoding == "mixed" and "posenc" not in up
  assert up.prune_last_block is True and up.attention_impl == "xla"
  assert up.rope_scaling == "none"
  assert up.block_size is None and vit.position_augment(up) is None
  assert vit.upgrade_config(tiny_config("liere", block_size=8)).block_size == 8   # today's
  new = vit.model_from_config(tiny_config("mixed", ape=True), 10)
  params = init(new)
  old_model = vit.model_from_config(ml_collections.ConfigDict(d), 10)   # tolerant too
  np.testing.assert_array_equal(old_model.apply({"params": params}, images(TRAIN), train=False),
                                new.apply({"params": params}, images(TRAIN), train=False))
  assert vit.upgrade_config(tiny_config("rope_axial")).encoding == "axial"
  with pytest.raises(ValueError, match="both set"):
    vit.upgrade_config(ml_collections.ConfigDict({**d, "encoding": "mixed"}))
  with pytest.raises(ValueError, match=r"model\.encoding='rope_foo' is unknown; allowed: "):
    vit.model_from_config(ml_collections.ConfigDict({**d, "posenc": "rope_foo"}), 10)


def freqs_toy(head_dim: int, omega: float = 0.5) -> jax.Array:
  """The README's new `rope` function: rope-vit's axial layout, every frequency `omega`."""
  return omega * rope.freqs_axial(head_dim, theta=1.0)


def test_a_new_encoding_is_one_registry_entry(monkeypatch):
  # README "Adding an encoding", verbatim: a rope function (above), one entry, one config file.
  encodings = copy.deepcopy(ENCODINGS)
  for module in (vit_encodings, vit, vit_common):
    monkeypatch.setattr(module, "ENCODINGS", encodings)
  from models.vit_encodings import Encoding, pair_tables, rotate_pairs   # as in the module
  encodings.register("toy", Encoding(
      reference="README 'Adding an encoding'", kind="rotary", scale="index", omega=0.5,
      multiple=4, channels="channel pairs, split into two halves (x / y)", group=2,
      tables=lambda params, tokens, o: pair_tables(tokens, freqs_toy(o.head_dim, o.omega)),
      rotate=rotate_pairs))
  config = vit_common.get_config("toy", "smoke")     # configs/vit_toy.py's get_config
  assert config.model.encoding == "toy"
  model = vit.model_from_config(tiny_config("toy"), 10)
  params = init(model)
  assert "posenc" not in params["encoderblock_0"]["attention"]     # no parameters
  loss, grads = jax.value_and_grad(_loss_fn(model))(params, images(TRAIN),
                                                    jax.random.PRNGKey(0))
  assert np.isfinite(loss) and all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  logits = model.apply({"params": params}, images(24), train=False)
  assert logits.shape == (2, 10) and np.isfinite(np.asarray(logits)).all()
  # The rotation is the toy's: compare layer-0 queries with the unrotated ones.
  plain = vit.model_from_config(tiny_config("none"), 10)
  q, _ = layer0_qk(model, params, images(TRAIN))
  q0, _ = layer0_qk(plain, params, images(TRAIN))
  row, col = np.repeat(np.arange(4.0), 4), np.tile(np.arange(4.0), 4)
  f = np.full(HEAD_DIM // 4, 0.5)
  ang = np.concatenate([np.outer(col, f), np.outer(row, f)], -1)[:, None]
  np.testing.assert_allclose(q[:, 1:], _rotate_pairs(q0[:, 1:], ang), atol=1e-5)
  with pytest.raises(ValueError, match="head_dim"):
    vit.model_from_config(tiny_config("toy", head_dim=22), 10)
  with pytest.raises(ValueError, match="theta"):
    vit.model_from_config(tiny_config("toy", theta=3.0), 10)


def test_an_entry_with_a_logit_bias_reaches_the_attention(monkeypatch):
  # Non-rotary baselines (LookHere, FIRE) are entries whose `bias` is added to the logits.
  encodings = copy.deepcopy(ENCODINGS)
  monkeypatch.setattr(vit, "ENCODINGS", encodings)
  def distance_bias(params, tokens, o):
    pos = tokens["positions"]
    dist = jnp.sqrt(jnp.sum((pos[:, None] - pos[None]) ** 2, -1))      # [L, L]
    return -params["slope"][None, :, None, None] * dist[None, None]      # [1, H, L, L]
  encodings.register("slopes", vit_encodings.Encoding(
      reference="a test", kind="bias", scale="index",
      params=(vit_encodings.Param("slope", lambda key, o: jnp.ones((o.num_heads,)),
                                  ("heads",)),),
      bias=distance_bias))
  model = vit.model_from_config(tiny_config("slopes"), 10)
  params = init(model)
  grads = jax.grad(_loss_fn(model))(params, images(TRAIN), jax.random.PRNGKey(0))
  slope = grads["encoderblock_0"]["attention"]["posenc"]["slope"]
  assert slope.shape == (HEADS,) and np.abs(slope).max() > 0
  # Pruning slices the bias' query axis with the queries: same logits.
  full = vit.model_from_config(tiny_config("slopes", prune_last_block=False), 10)
  np.testing.assert_allclose(model.apply({"params": params}, images(TRAIN), train=False),
                             full.apply({"params": params}, images(TRAIN), train=False),
                             rtol=1e-5, atol=1e-5)


def test_registry_errors_name_the_option():
  r = registry.Registry("model.encoding")
  r.register("a", ENCODINGS.get("none"), aliases=("old_a",))
  with pytest.raises(ValueError, match="model.encoding: 'old_a' is registered twice"):
    r.register("old_a", ENCODINGS.get("none"))
  with pytest.raises(ValueError, match=r"model.encoding='b' is unknown; allowed: 'a'"):
    r.get("b")


# --------------------------------------------------------------------------- partitioning


@pytest.mark.parametrize("encoding, overrides", [
    ("mixed", {"ape": True, "layerscale_init": 0.1}), ("liere", {}), ("sincos", {}),
    ("spherical_learned", {"pool": "gap"})])
def test_every_parameter_has_logical_axis_names(encoding, overrides):
  model = vit.model_from_config(tiny_config(encoding, **overrides), 10)
  boxed = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False),
                         images(TRAIN))["params"]
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
  for leaf in leaves:
    assert len(leaf.names) == leaf.value.ndim
    assert set(leaf.names) <= set(vit.LOGICAL_AXES) | {None}, leaf.names
  specs = nn.get_partition_spec(boxed)
  assert jax.tree.structure(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)) \
      == jax.tree.structure(nn.unbox(boxed))
  # Unboxed, the tree is the plain one the trainer keeps (tasks/classification.py).
  assert jax.tree.map(jnp.shape, nn.unbox(boxed)) == jax.tree.map(
      jnp.shape, param_shapes(tiny_config(encoding, **overrides), num_classes=10, size=TRAIN))
  qkv = specs["encoderblock_0"]["attention"]["qkv"]
  assert tuple(qkv["kernel"]) == ("embed", "qkv", "heads", "kv")
  assert tuple(specs["head"]["kernel"]) == ("embed", "classes")


# --------------------------------------------------------------------------------- attention


@pytest.mark.parametrize("encoding", ["spherical", "string_cayley", "string_circulant"])
def test_attention_is_jax_dot_product_attention_with_the_old_logits(encoding):
  # The layer's output equals softmax(q k^T / sqrt(D)) v with the sown (rotated) q and k, i.e.
  # the einsum attention the model had before it called jax.nn.dot_product_attention. STRING
  # layers attend in P's coordinates; the sown q, k are the reference's (test_rotation_...),
  # so this also checks that those coordinates give the reference's logits.
  model = vit.model_from_config(tiny_config(encoding, prune_last_block=False), 10)
  params = init(model)
  if encoding != "spherical":   # A class token that is not zero (its q, k would be 0).
    params["cls"] = jax.random.normal(jax.random.PRNGKey(2), params["cls"].shape)
  x = images(TRAIN)
  _, state = model.apply({"params": params}, x, train=False, mutable=["intermediates"],
                         capture_intermediates=lambda m, _: isinstance(m, vit.Attention))
  att = state["intermediates"]["encoderblock_0"]["attention"]
  q, k = np.asarray(att["q"][0], np.float64), np.asarray(att["k"][0], np.float64)
  p = params["encoderblock_0"]["attention"]
  y = np.asarray(nn.LayerNorm(epsilon=1e-6).apply(
      {"params": params["encoderblock_0"]["norm_attn"]},
      _embedded(model, params, x)), np.float64)
  v = np.einsum("bld,dhe->blhe", y, np.asarray(p["qkv"]["kernel"])[:, 2]) + np.asarray(
      p["qkv"]["bias"])[2]
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(HEAD_DIM)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  out = np.einsum("bhqk,bkhd->bqhd", probs, v)
  want = np.einsum("blhd,hde->ble", out, np.asarray(p["out"]["kernel"])) + np.asarray(
      p["out"]["bias"])
  np.testing.assert_allclose(att["__call__"][0], want, atol=1e-4, rtol=1e-4)


def _embedded(model, params, x):
  """The tokens entering block 0 (patch embedding + class token; no APE, no dropout)."""
  del model
  emb = jax.lax.conv_general_dilated(x, params["embedding"]["kernel"], (4, 4), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
  emb = (emb + params["embedding"]["bias"]).reshape(x.shape[0], -1, emb.shape[-1])
  cls = jnp.broadcast_to(params["cls"], (x.shape[0], 1, emb.shape[-1]))
  return jnp.concatenate([cls, emb], axis=1)


def test_bfloat16_vit_exports_for_accelerators_without_cpu_kernels():
  # The CPU-only kernels of models/matmul.py must vanish when lowering for TPU / GPU.
  model = vit.model_from_config(tiny_config("mixed", dtype="bfloat16"), 10)
  params = init(vit.model_from_config(tiny_config("mixed"), 10))
  grad = jax.jit(jax.grad(lambda p, x: jnp.sum(model.apply({"params": p}, x, train=False))))
  exported = jax.export.export(grad, platforms=("tpu", "cuda"))(params, images(TRAIN))
  text = exported.mlir_module()
  assert "dot_general" in text and "custom_call @cpu" not in text


def test_bfloat16_train_step_runs_on_cpu():
  # The smoke recipe's train step in bfloat16 (the trainer's own step: value_and_grad, optax),
  # compiled for CPU. Tokens-first attention operands once lowered to bf16 batch dots that
  # XLA:CPU's dot thunk rejects at run time; models/matmul.py's CPU attention goes heads-first.
  import tasks                              # pylint: disable=g-import-not-at-top
  from trainer import loop                   # pylint: disable=g-import-not-at-top
  from trainer import step as step_lib       # pylint: disable=g-import-not-at-top
  config = vit_common.load("spherical", "smoke")
  with config.unlocked():
    config.model.dtype = "bfloat16"
  setup = loop.build(config, task=tasks.get_task(config))
  state = jax.jit(step_lib.make_init_fn(setup.task, setup.tx))(jax.random.key(0))
  batch = {"image": images(8, batch=16)[..., :1],
           "label": jax.nn.one_hot(jnp.arange(16) % 10, 10)}
  step = jax.jit(step_lib.make_train_step(setup.task, setup.tx, setup.schedule))
  _, metrics = step(state, batch)
  assert np.isfinite(float(metrics["loss"]))
