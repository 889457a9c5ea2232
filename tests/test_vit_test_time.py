"""Test-time resolution options of the ViT (model.rope_scaling, position_scale index_interp).

The scaled rotations are checked against a NumPy re-derivation of FiT's formulas
(docs/spec/vision_ext.md §5.1: linear, NTK, YaRN ramp and amplitude), written out here rather
than taken from `rope.scale_freqs`. Tiny models (depth 1, 3 heads of 24 channels, patch 4,
trained at 16 px = a 4x4 grid), run eagerly like tests/test_vit.py. eval.py's flags for them:
tests/test_train_e2e.py (a trained run; the JSON records the options).
"""
import math

import flax.linen as nn
import jax
import numpy as np
import pytest

import rope
from models import vit

HEAD_DIM, TRAIN, PATCH = 24, 16, 4
SCALABLE = ("axial", "eva02", "prope", "string_cayley")


def tiny_config(encoding, **overrides):
  c = vit.default_config()
  c.update(variant="Ti/4", head_dim=HEAD_DIM, depth=1, encoding=encoding,
           train_image_size=TRAIN)
  if encoding == "eva02" and overrides.get("rope_scaling", "none") != "none":
    c.position_scale = "index"     # FiT's setting: integer positions, then scaling
  c.update(overrides)
  return c


def images(size, seed=1):
  return jax.random.normal(jax.random.PRNGKey(seed), (2, *size, 3))


def layer0_qk(model, params, x):
  _, state = model.apply({"params": params}, x, train=False, mutable=["intermediates"])
  att = state["intermediates"]["encoderblock_0"]["attention"]
  return np.asarray(att["q"][0], np.float64), np.asarray(att["k"][0], np.float64)


@pytest.fixture(scope="module")
def params():
  """Per encoding: parameters of the tiny model. One init (the entries without parameters
  share the plain ViT's; Cayley-STRING adds its W), the class token made non-zero so that a
  rotation of it would show."""
  plain = vit.model_from_config(tiny_config("none"), 10)
  p = nn.unbox(jax.jit(lambda x: plain.init(jax.random.PRNGKey(0), x, train=False))(
      images((TRAIN, TRAIN)))["params"])
  p["cls"] = jax.random.normal(jax.random.PRNGKey(2), p["cls"].shape)
  w = 0.3 * jax.random.normal(jax.random.PRNGKey(3), (3, HEAD_DIM, HEAD_DIM))
  string = jax.tree.map(lambda a: a, p)
  string["encoderblock_0"]["attention"] = dict(p["encoderblock_0"]["attention"],
                                               posenc={"W": w})
  return {"axial": p, "eva02": p, "prope": p, "string_cayley": string}


def _ladder(encoding, d):
  """The entry's per-axis ladder f_j, j < D/4, and whether the row axis comes first."""
  theta = 1e4 if encoding == "eva02" else 100.0
  return theta, theta ** (-4.0 * np.arange(d // 4) / d), encoding == "eva02"


def _fit_scaled(f, s, method, theta, train_len):
  """FiT's rescaled ladder for one axis (spec §5.1), per-axis dim dd = 2 len(f)."""
  if s == 1.0:
    return f
  dd, j = 2 * len(f), np.arange(len(f), dtype=np.float64)
  if method == "linear":
    return f / s
  if method == "ntk":     # base theta * s ** (dd / (dd - 2))
    return (theta * s ** (dd / (dd - 2))) ** (-2.0 * j / dd)
  assert method == "yarn"
  kappa = lambda rho: dd * math.log(train_len / (2 * math.pi * rho)) / (2 * math.log(theta))
  lo, hi = max(math.floor(kappa(32)), 0), min(math.ceil(kappa(1)), dd - 1)
  hi = hi + 0.001 if lo == hi else hi
  ramp = np.clip((j - lo) / (hi - lo), 0.0, 1.0)
  return (f / s) * ramp + f * (1.0 - ramp)


def _rotate_pairs(x, ang):
  """x [B, N, H, D], ang [N, 1, D/2]: adjacent channels (2p, 2p + 1) form pair p."""
  a, b = x[..., 0::2], x[..., 1::2]
  out = np.empty_like(x)
  out[..., 0::2] = a * np.cos(ang) - b * np.sin(ang)
  out[..., 1::2] = a * np.sin(ang) + b * np.cos(ang)
  return out


def _expected(encoding, method, raw, grid, p0):
  """Rotated patch q / k of a scalable entry under `method` at `grid` (NumPy, float64)."""
  d = raw.shape[-1]
  theta, f, row_first = _ladder(encoding, d)
  n_train = TRAIN // PATCH
  s_row, s_col = (max(n / n_train, 1.0) for n in grid)
  f_row = _fit_scaled(f, s_row, method, theta, n_train)
  f_col = _fit_scaled(f, s_col, method, theta, n_train)
  if encoding == "prope":   # p-RoPE keeps the first int(0.25 D/4) frequencies of each axis
    keep = np.arange(d // 4) < int(0.25 * (d // 4))
    f_row, f_col = np.where(keep, f_row, 0.0), np.where(keep, f_col, 0.0)
  row = np.repeat(np.arange(grid[0], dtype=np.float64), grid[1])
  col = np.tile(np.arange(grid[1], dtype=np.float64), grid[0])
  halves = [np.outer(row, f_row), np.outer(col, f_col)]
  ang = np.concatenate(halves if row_first else halves[::-1], -1)[:, None]
  s_max = max(grid) / n_train
  amp = 0.1 * math.log(s_max) + 1.0 if method == "yarn" and s_max > 1 else 1.0
  if encoding != "string_cayley":
    return amp * _rotate_pairs(raw, ang)
  w = np.asarray(p0["W"], np.float64)
  skew = np.triu(w, 1) - np.swapaxes(np.triu(w, 1), -1, -2)
  eye = np.eye(d)
  p = np.linalg.solve((eye + skew).swapaxes(-1, -2), (eye - skew).swapaxes(-1, -2)
                      ).swapaxes(-1, -2)                            # (I - S)(I + S)^-1
  y = _rotate_pairs(np.einsum("hji,bnhj->bnhi", p, raw), ang)
  return amp * np.einsum("hij,bnhj->bnhi", p, y)


def _without_posenc(tree):
  return {k: _without_posenc(v) if isinstance(v, dict) else v
          for k, v in tree.items() if k != "posenc"}


@pytest.mark.parametrize("encoding,method", [
    ("axial", "linear"), ("axial", "ntk"), ("axial", "yarn"), ("eva02", "yarn"),
    ("prope", "linear"), ("string_cayley", "yarn")])
def test_scaled_rotation_matches_fit_by_hand(params, encoding, method):
  # 16 x 24 px: a 4 x 6 grid, rows at the training length (s = 1), columns s = 1.5.
  size, grid = (16, 24), (4, 6)
  model = vit.model_from_config(tiny_config(encoding, rope_scaling=method), 10)
  plain = vit.model_from_config(tiny_config("none"), 10)
  x = images(size)
  q, k = layer0_qk(model, params[encoding], x)
  q0, k0 = layer0_qk(plain, _without_posenc(params[encoding]), x)   # same weights
  p0 = params[encoding]["encoderblock_0"]["attention"].get("posenc", {})
  # The class token: not rotated, no amplitude (STRING: P P^T x, the sown q, k mapped back
  # from the layer's P coordinates, so equal to rounding; test_vit).
  tol = 5e-5 if encoding == "string_cayley" else 1e-5
  cls_tol = 1e-5 if encoding == "string_cayley" else 0.0
  np.testing.assert_allclose(q[:, 0], q0[:, 0], atol=cls_tol, rtol=0)
  np.testing.assert_allclose(k[:, 0], k0[:, 0], atol=cls_tol, rtol=0)
  unscaled = layer0_qk(vit.model_from_config(tiny_config(encoding), 10), params[encoding], x)[0]
  for got, raw in ((q, q0), (k, k0)):
    np.testing.assert_allclose(got[:, 1:], _expected(encoding, method, raw[:, 1:], grid, p0),
                               atol=tol, rtol=0)
  assert np.abs(q[:, 1:] - unscaled[:, 1:]).max() > 1e-3     # the scaling did something


def test_ntk_by_parts_is_rope_scale_freqs_on_each_axis(params):
  """The fourth method through the model: the rope function applied by hand (its formula is
  checked against FiT's goldens in tests/test_rope_vision_ext.py)."""
  size, grid = (16, 24), (4, 6)
  model = vit.model_from_config(tiny_config("axial", rope_scaling="ntk_by_parts"), 10)
  plain = vit.model_from_config(tiny_config("none"), 10)
  x = images(size)
  q = layer0_qk(model, params["axial"], x)[0]
  q0 = layer0_qk(plain, params["axial"], x)[0]
  freqs = rope.scale_freqs(rope.freqs_axial(HEAD_DIM, theta=100.0), [1.0, 6 / 4],
                           method="ntk_by_parts", train_len=4, theta=100.0)
  ang = np.asarray(rope.angles(rope.grid_positions(*grid), freqs)).reshape(
      grid[0] * grid[1], 1, HEAD_DIM // 2)
  want = rope.apply(q0[:, 1:].astype(np.float32), ang, layout="interleaved")
  np.testing.assert_allclose(q[:, 1:], want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("encoding", SCALABLE)
def test_training_grid_and_none_are_todays_model_bitwise(params, encoding):
  """s = 1 on both axes is the identity (FiT never shrinks: s = max(n / n_train, 1));
  "none" is the model without the option on a larger grid too."""
  index = {"position_scale": "index"} if encoding == "eva02" else {}   # as tiny_config's
  base = vit.model_from_config(tiny_config(encoding, **index), 10)
  x = images((TRAIN, TRAIN))
  want = base.apply({"params": params[encoding]}, x, train=False)
  for method in ("linear", "yarn"):
    got = vit.model_from_config(tiny_config(encoding, rope_scaling=method), 10).apply(
        {"params": params[encoding]}, x, train=False)
    np.testing.assert_array_equal(got, want)
  x = images((16, 24))
  none = vit.model_from_config(tiny_config(encoding, rope_scaling="none"), 10)
  default = vit.model_from_config(tiny_config(encoding), 10)
  np.testing.assert_array_equal(none.apply({"params": params[encoding]}, x, train=False),
                                default.apply({"params": params[encoding]}, x, train=False))


def test_index_interp_positions_are_evas_on_an_integer_encoding(params):
  """position_scale 'index_interp' on axial: positions i * n_train / n (EVA-02), i.e. the
  rotation of the axial model at positions interpolated onto the 4x4 training grid."""
  model = vit.model_from_config(tiny_config("axial", position_scale="index_interp"), 10)
  plain = vit.model_from_config(tiny_config("none"), 10)
  x = images((16, 24))
  q = layer0_qk(model, params["axial"], x)[0]
  q0 = layer0_qk(plain, params["axial"], x)[0]
  rows, cols = np.arange(4.0), np.arange(6) * 4 / 6
  f = 100.0 ** (-4.0 * np.arange(HEAD_DIM // 4) / HEAD_DIM)
  ang = np.concatenate([np.outer(np.tile(cols, 4), f), np.outer(np.repeat(rows, 6), f)],
                       -1)[:, None]
  np.testing.assert_allclose(q[:, 1:], _rotate_pairs(q0[:, 1:], ang), atol=1e-5, rtol=0)


@pytest.mark.parametrize("overrides,match", [
    ({"encoding": "mixed", "rope_scaling": "yarn"},
     r"model\.rope_scaling='yarn'.*encoding='mixed'.*accept it: \['axial', .*'eva02', "
     r"'prope'\]"),
    ({"encoding": "eva02", "rope_scaling": "ntk"},
     r"model\.rope_scaling='ntk' needs integer positions.*'index_interp'"),
    ({"encoding": "axial", "rope_scaling": "ntk", "position_scale": "index_interp"},
     r"model\.rope_scaling='ntk' needs integer positions"),
    ({"encoding": "axial", "rope_scaling": "YaRN"}, r"model\.rope_scaling='YaRN'; allowed"),
    ({"encoding": "dinov3", "position_scale": "index_interp"},
     r"model\.position_scale='index_interp'.*'dinov3'.*accept it: \['axial', 'mixed'"),
])
def test_options_refused_where_undefined(overrides, match):
  c = vit.default_config()
  c.update(overrides)
  with pytest.raises(ValueError, match=match):
    vit.validate_config(c, 224)


def test_scalable_entries_are_fixed_ladders_over_integer_positions():
  """Every entry accepting model.rope_scaling is checked above by hand, and has what the
  scaling needs: a base theta, integer positions, no learned tables."""
  from models.vit_encodings import ENCODINGS   # pylint: disable=g-import-not-at-top
  scalable = {n for n, e in ENCODINGS.items() if e.scalable}
  assert scalable == set(SCALABLE)
  for name in scalable:
    entry = ENCODINGS.get(name)
    assert entry.theta and entry.scale in ("index", "index_interp") and entry.kind == "rotary"
    assert all(p.name == "W" for p in entry.params), name   # only STRING's P, not the ladder
