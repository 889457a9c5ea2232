"""Second-round vision variants of `rope` against the upstream reference vectors.

tests/golden/vision_ext/ holds one or two cases per variant (ComRoPE, DINOv3, EVA-02, FiT,
STRING, p-RoPE, partial rotary, LookHere, FIRE); its README and manifest.json say which
upstream call made each array and give the tolerances used here. Arrays are in the API layout
(`[L, H, D]`, positions `(row, col)`), so no transposes. Spec: docs/spec/vision_ext.md.
"""
import json
import math
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

import rope

GOLDEN = pathlib.Path(__file__).parent / "golden" / "vision_ext"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())["files"]
# README "Tolerances (for the JAX side, float32)".
TABLE_TOL = 1e-6       # positions, frequency tables, sin / cos
AXIAL_TOL = 2e-5       # rotated q / k of the axial families (DINOv3, EVA-02, FiT, p-RoPE)
BLOCK_TOL = 1e-4       # ComRoPE rotations and q / k; STRING q / k (float64 goldens)


def load(name):
  g = np.load(GOLDEN / name)
  return {k: g[k] for k in g.files}, MANIFEST[name]


def close(actual, expected, atol, rtol=0.0):
  np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64),
                             atol=atol, rtol=rtol)


def logits(q, k):
  """`[H, L, L] = q . k / sqrt(D)` from `[L, H, D]`."""
  q, k = np.swapaxes(np.asarray(q, np.float64), 0, 1), np.swapaxes(np.asarray(k, np.float64), 0, 1)
  return q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])


def check_qk(g, q, k, atol, logit_atol=BLOCK_TOL):
  close(q, g["q_out"], atol)
  close(k, g["k_out"], atol)
  if "logits" in g:
    close(logits(q, k), g["logits"], logit_atol)


def apply_after_prefix(x, angles, num_prefix, **kw):
  """Rotates the tokens after the first `num_prefix` (cls / registers stay untouched)."""
  rotated = rope.apply(x[num_prefix:], angles, **kw)
  return np.concatenate([x[:num_prefix], rotated], 0)


# ----------------------------------------------------------------------------- ComRoPE


def comrope_case(name):
  g, m = load(name)
  variant = m["variant"].split("-")[1]
  h, w = m["grid"]
  pos = rope.with_prefix(rope.grid_positions(h, w, scale="center"), 1, value=0.5)
  close(pos, g["positions"], TABLE_TOL)
  params = {"P": g["P"]}
  if variant == "ld":
    params["theta"] = g["theta"]
  gens = rope.comrope_generators(params, variant=variant)
  close(gens, g["generators"], TABLE_TOL)
  rot = rope.skew_rotations(pos, gens)
  close(rot, g["rotations"], BLOCK_TOL)
  q, k = rope.apply_blocks(g["q"], rot), rope.apply_blocks(g["k"], rot)
  check_qk(g, q, k, BLOCK_TOL)
  return g, gens, pos


def test_comrope_ap_hd64_b8_g14x14():
  g, gens, _ = comrope_case("comrope_ap_hd64_b8_g14x14.npz")
  # AP: block g is driven by axis g % 2 only.
  assert np.all(np.asarray(gens)[0, :, 1::2] == 0) and np.all(np.asarray(gens)[1, :, 0::2] == 0)


def test_comrope_ld_hd64_b8_g6x9():
  comrope_case("comrope_ld_hd64_b8_g6x9.npz")


# ----------------------------------------------------------------------------- DINOv3


def dinov3_case(name):
  g, m = load(name)
  h, w = m["grid"]
  d = m["head_dim"]
  periods = rope.dinov3_periods(d, m["base"], min_period=m["min_period"],
                                max_period=m["max_period"])
  close(periods, g["periods"], 0.0, rtol=1e-6)
  freqs = rope.freqs_dinov3(d, m["base"], min_period=m["min_period"], max_period=m["max_period"])
  close(freqs, g["freqs"], TABLE_TOL)
  clean = rope.grid_positions(h, w, scale="centered", normalize=m["normalize_coords"])
  close(clean, g["positions_clean"], TABLE_TOL)
  pos = clean
  if m["training_aug"] is not None:
    pos = rope.augment_positions(clean, shift=g["aug_shift"], jitter=g["aug_jitter"],
                                 rescale=g["aug_rescale"])
  close(pos, g["positions"], TABLE_TOL)
  ang = rope.angles(pos, freqs)
  close(ang[:, 0], g["angles"], TABLE_TOL, rtol=1e-6)
  cos, sin = np.cos(ang[:, 0]), np.sin(ang[:, 0])
  close(np.concatenate([cos, cos], -1), g["cos"], 2 * TABLE_TOL)   # half layout: tiled twice
  close(np.concatenate([sin, sin], -1), g["sin"], 2 * TABLE_TOL)
  n_prefix = m["prefix_tokens"]
  q = apply_after_prefix(g["q"], ang, n_prefix, layout="half")
  k = apply_after_prefix(g["k"], ang, n_prefix, layout="half")
  check_qk(g, q, k, AXIAL_TOL)
  # with_prefix(value=0) rotates the prefix by the identity: the same result in one call.
  full = rope.angles(rope.with_prefix(pos, n_prefix), freqs)
  close(rope.apply(g["q"], full, layout="half"), g["q_out"], AXIAL_TOL)


def test_dinov3_base100_separate_hd64_g14x14():
  dinov3_case("dinov3_base100_separate_hd64_g14x14.npz")


def test_dinov3_base100_separate_hd64_g6x9_aug_all():
  dinov3_case("dinov3_base100_separate_hd64_g6x9_aug_all.npz")


# ----------------------------------------------------------------------------- EVA-02


def test_eva02_hd64_g14x14_ref16x16():
  g, m = load("eva02_hd64_g14x14_ref16x16.npz")
  h, w = m["grid"]
  freqs = rope.freqs_eva(m["head_dim"], m["theta"])
  close(freqs, g["freqs"], TABLE_TOL)
  close(freqs[: m["head_dim"] // 4, 0], g["bands"], TABLE_TOL)
  pos = rope.grid_positions(h, w, scale="index_interp", train_size=tuple(m["ref_feat_shape"]))
  close(pos, g["positions"], TABLE_TOL)
  ang = rope.angles(pos, freqs)
  close(ang[:, 0], g["angles"], TABLE_TOL, rtol=1e-6)
  rep = lambda t: np.repeat(t, 2, axis=-1)                 # interleaved: each angle twice
  close(rep(np.cos(ang[:, 0])), g["cos"], 2 * TABLE_TOL)
  close(rep(np.sin(ang[:, 0])), g["sin"], 2 * TABLE_TOL)
  q = apply_after_prefix(g["q"], ang, m["prefix_tokens"], layout="interleaved")
  k = apply_after_prefix(g["k"], ang, m["prefix_tokens"], layout="interleaved")
  check_qk(g, q, k, AXIAL_TOL)


# ----------------------------------------------------------------------------- FiT


def fit_case(name, method):
  g, m = load(name)
  h, w = m["grid"]
  d, L = m["head_dim"], m["ori_max_pe_len"]
  base = rope.freqs_axial(d, m["theta"], first="row")
  if m["decouple"]:
    scale = np.maximum(np.array([h, w], np.float32) / L, 1.0)
  else:
    scale = np.full(2, max(max(h, w) / L, 1.0), np.float32)
  freqs = rope.scale_freqs(base, scale, method=method, train_len=L, theta=m["theta"])
  close(freqs, g["freqs"], TABLE_TOL)
  close(freqs[: d // 4, 0], g["freqs_row"], TABLE_TOL)
  close(freqs[d // 4:, 1], g["freqs_col"], TABLE_TOL)
  amp = rope.attention_scale(method, (h, w), L)
  close(amp, g["amplitude"], TABLE_TOL)
  pos = rope.grid_positions(h, w, scale="index")
  close(pos, g["positions"], 0.0)
  ang = rope.angles(pos, freqs)
  close(ang[:, 0], g["angles"], TABLE_TOL, rtol=1e-6)
  rep = lambda t: np.repeat(t, 2, axis=-1)
  close(rep(np.cos(ang[:, 0])) * amp, g["cos"], 2 * TABLE_TOL)
  close(rep(np.sin(ang[:, 0])) * amp, g["sin"], 2 * TABLE_TOL)
  q = rope.apply(g["q"], ang, layout="interleaved", amplitude=amp)
  k = rope.apply(g["k"], ang, layout="interleaved", amplitude=amp)
  check_qk(g, q, k, AXIAL_TOL)


def test_fit_ntk_hd72_g8x16_L8_decoupled():
  fit_case("fit_ntk_hd72_g8x16_L8_decoupled.npz", "ntk")


def test_fit_yarn_hd72_g8x16_L8_coupled():
  fit_case("fit_yarn_hd72_g8x16_L8_coupled.npz", "yarn")


# ----------------------------------------------------------------------------- p-RoPE, partial


def test_prope_axial_p05_hd64_g14x14():
  g, m = load("prope_axial_p0.5_hd64_g14x14.npz")
  h, w = m["grid"]
  full = rope.freqs_axial(m["head_dim"], 100.0)
  close(full, g["freqs_full"], TABLE_TOL)
  freqs = rope.truncate_freqs(full, m["proportion"])
  close(freqs, g["freqs"], TABLE_TOL)
  assert int((np.asarray(freqs)[:, 0] != 0).sum()) == m["kept_pairs_per_axis"]
  pos = rope.grid_positions(h, w)
  close(pos, g["positions"], 0.0)
  ang = rope.angles(pos, freqs)
  close(ang[:, 0], g["angles"], TABLE_TOL, rtol=1e-6)
  q = rope.apply(g["q"], ang, layout=m["layout"])
  k = rope.apply(g["k"], ang, layout=m["layout"])
  check_qk(g, q, k, AXIAL_TOL)


def test_partial_rotary_neox_1d_f025_hd64_L16():
  g, m = load("partial_rotary_neox_1d_f0.25_hd64_L16.npz")
  r = rope.partial_rotary_dim(m["head_dim"], m["factor"])
  assert r == m["rotary_dim"]
  freqs = rope.freqs_1d(r, m["base"])
  close(freqs[:, 0], g["inv_freq"], TABLE_TOL)
  pos = jnp.arange(m["tokens"], dtype=jnp.float32)[:, None]
  close(pos, g["positions"], 0.0)
  out = rope.apply(g["x"], rope.angles(pos, freqs), layout="half", rotary_dim=r)
  close(out, g["out"], AXIAL_TOL)
  close(np.asarray(out)[..., r:], g["x"][..., r:], 0.0)    # the tail passes through


# ----------------------------------------------------------------------------- STRING


def test_string_cayley_hd64_g14x14():
  g, m = load("string_cayley_hd64_g14x14.npz")
  h, w = m["grid"]
  d = m["head_dim"]
  P = rope.cayley(g["S"])
  close(P, g["P"], 1e-5)
  freqs = rope.freqs_axial(d, 100.0)
  close(freqs, g["freqs"], TABLE_TOL)
  pos = rope.grid_positions(h, w)
  close(pos, g["positions"], 0.0)
  ang = rope.angles(pos, freqs)
  close(ang[:, 0], g["angles"], TABLE_TOL, rtol=1e-6)
  q = rope.string_cayley(g["q"], ang, P, layout=m["layout"])
  k = rope.string_cayley(g["k"], ang, P, layout=m["layout"])
  check_qk(g, q, k, BLOCK_TOL)
  qe = rope.string_cayley(g["q"], ang, P, layout=m["layout"], left=False)
  ke = rope.string_cayley(g["k"], ang, P, layout=m["layout"], left=False)
  close(qe, g["q_out_effective"], BLOCK_TOL)
  close(ke, g["k_out_effective"], BLOCK_TOL)
  close(logits(qe, ke), logits(q, k), 1e-4)                 # dropping the leading P: same logits


def circulant_generators(c):
  """`C - C^T` with `C[i, j] = c[(i - j) mod n]`, for `c [..., n]` (test helper, NumPy)."""
  n = c.shape[-1]
  idx = (np.arange(n)[:, None] - np.arange(n)[None, :]) % n
  C = c[..., idx]
  return C - np.swapaxes(C, -1, -2)


def test_string_circulant_hd32_g6x9():
  g, m = load("string_circulant_hd32_g6x9.npz")
  h, w = m["grid"]
  pos = rope.grid_positions(h, w)
  close(pos, g["positions"], 0.0)
  c = g["c"]
  close(2 * np.imag(np.fft.fft(c.astype(np.float64), axis=-1)), g["eigenvalues_imag"], TABLE_TOL)
  gens = circulant_generators(c.astype(np.float64))
  close(gens, g["generators"], TABLE_TOL)
  # The same rotations through the general expm path (one dense D x D block per head).
  rot = rope.skew_rotations(pos, gens[:, :, None].astype(np.float32))
  close(rot[:, :, 0], g["rotations"], BLOCK_TOL)
  q = rope.circulant_string(g["q"], pos, c)
  k = rope.circulant_string(g["k"], pos, c)
  check_qk(g, q, k, BLOCK_TOL)
  close(rope.apply_blocks(g["q"], rot), g["q_out"], BLOCK_TOL)


# ----------------------------------------------------------------------------- biases


def test_lookhere_halves_g4x5():
  g, m = load("lookhere_halves_g4x5.npz")
  h, w = m["grid"]
  cfg = m["lh_config"]
  kw = dict(head_directions=cfg["head_directions"], num_heads=m["heads"], depth=m["depth"],
            global_slope=cfg["global_slope"], layer_slopes=tuple(cfg["layer_slopes"]))
  bias = rope.lookhere_bias(h, w, num_prefix=0, **kw)
  close(bias, g["bias"], 0.0)                               # exact on the bfloat16 values
  close(rope.lookhere_bias(h, w, num_prefix=1, **kw), g["bias_with_cls"], 0.0)
  close(rope.lookhere_bias(h, w, **kw), g["bias_with_cls"], 0.0)   # num_prefix=1 by default
  blocked = np.asarray(bias)[0] == -rope.biases.BF16_MAX
  np.testing.assert_array_equal(blocked, g["blocked"])
  # Pieces: distances, head / layer slopes and the unquantised bias, via the private helpers.
  layer = rope.biases._lookhere_layer(h, w, cfg["head_directions"], m["heads"], "linear")
  slopes = rope.biases._head_slopes([cfg["head_directions"]] * m["heads"])
  close(slopes, g["head_slopes"], 0.0)
  ls = np.linspace(*cfg["layer_slopes"], m["depth"])
  close(ls, g["layer_slopes"], 0.0)
  dist = np.where(np.isinf(layer[0]), np.nan, layer[0] / slopes[0])
  close(np.where(g["blocked"][0], np.nan, g["distance"]), dist, 1e-6)
  unq = -np.nan_to_num(cfg["global_slope"] * ls[:, None, None, None] * layer,
                       posinf=rope.biases.BF16_MAX)
  close(unq, g["bias_float64_unquantised"], 0.0, rtol=1e-6)


def test_fire_1d_g4x5_L8():
  g, m = load("fire_1d_g4x5_L8.npz")
  params = {"W1": g["W1"], "b1": g["b1"], "W2": g["W2"], "b2": g["b2"], "c": g["c"],
            "L": g["L_threshold"]}
  close(rope.biases._fire_normalized_distance(m["tokens"], g["c"], g["L_threshold"], m["eps"]),
        g["normalized_distance"], TABLE_TOL)
  bias = rope.fire_bias(m["tokens"], params, eps=m["eps"])
  assert bias.shape == (m["heads"], m["tokens"], m["tokens"])
  close(bias, g["bias"], TABLE_TOL)


def test_every_golden_file_has_a_test():
  names = {p.name for p in GOLDEN.glob("*.npz")}
  assert names == set(MANIFEST), "manifest and files disagree"
  src = pathlib.Path(__file__).read_text()
  missing = [n for n in names if n not in src]
  assert not missing, f"golden files without a test: {missing}"
