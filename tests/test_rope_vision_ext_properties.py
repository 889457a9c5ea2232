"""Closed-form properties of the second-round vision functions (docs/spec/vision_ext.md).

Shift-equivariance of the commuting learned variants (ComRoPE, STRING), reductions to plain
RoPE, neutral augmentations, and that everything jits, vmaps and differentiates.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import rope

KEY = jax.random.PRNGKey(0)
D = 32
POS = rope.grid_positions(3, 4, scale="center")
SHIFT = jnp.array([0.37, -0.21])
GAP_TOL = 2e-4      # float32 logits of unit-variance q, k with D = 32 (sum of 32 products)
# Jitted once and shared: the scaled-and-squared expm is costly to trace op by op.
SKEW = jax.jit(rope.skew_rotations)
SKEW_APPLY = jax.jit(lambda x, p, gens: rope.apply_blocks(x, rope.skew_rotations(p, gens)))


def keys(n, seed=1):
  return jax.random.split(jax.random.PRNGKey(seed), n)


# ----------------------------------------------------------------------------- rotations

def comrope_rotate(variant, block_size, std=1.0):
  params = rope.init_comrope(KEY, 1, D, variant=variant, block_size=block_size, init_std=std)
  gens = rope.comrope_generators(params, variant=variant)
  return lambda x, p: SKEW_APPLY(x, p, gens)


def cayley_rotate(layout):
  w = 0.3 * jax.random.normal(KEY, (1, D, D))
  s = jnp.triu(w, 1) - jnp.swapaxes(jnp.triu(w, 1), -1, -2)
  P = rope.cayley(s)
  freqs = rope.freqs_axial(D, 100.0)
  return lambda x, p: rope.string_cayley(x, rope.angles(p, freqs), P, layout=layout)


def circulant_rotate(block=None):
  shape = (2, 1, D) if block is None else (2, 1, D // block, block)
  c = 0.3 * jax.random.normal(KEY, shape)
  return lambda x, p: rope.circulant_string(x, p, c)


EQUIVARIANT = {
    "comrope_ap_b8": comrope_rotate("ap", 8),
    "comrope_ld_b8": comrope_rotate("ld", 8),
    "comrope_ld_b4": comrope_rotate("ld", 4),
    "string_cayley_interleaved": cayley_rotate("interleaved"),
    "string_cayley_half": cayley_rotate("half"),
    "string_circulant_dense": circulant_rotate(),
    "string_circulant_block8": circulant_rotate(8),
}


@pytest.mark.parametrize("name", sorted(EQUIVARIANT))
def test_shift_equivariant(name):
  for shift in (SHIFT, jnp.array([3.0, -2.0])):
    gap = rope.relative_logit_gap(EQUIVARIANT[name], POS * 4, shift, key=KEY, head_dim=D)
    assert gap < GAP_TOL, (name, float(gap))


def test_liere_is_not_shift_equivariant_with_the_same_probe():
  """The probe has power: LieRE's generators do not commute."""
  params = rope.init_liere(KEY, 2, 1, D, block_size=8)
  rotate = lambda x, p: SKEW_APPLY(x, p, rope.liere_generators(params))
  assert rope.relative_logit_gap(rotate, POS * 4, SHIFT, key=KEY, head_dim=D) > 0.1


def test_comrope_generators_commute_and_are_skew():
  for variant in ("ap", "ld"):
    gens = rope.comrope_generators(
        rope.init_comrope(KEY, 2, D, variant=variant, block_size=8), variant=variant)
    assert gens.shape == (2, 2, D // 8, 8, 8)
    np.testing.assert_allclose(gens, -jnp.swapaxes(gens, -1, -2), atol=0)
    comm = gens[0] @ gens[1] - gens[1] @ gens[0]
    np.testing.assert_allclose(comm, 0, atol=1e-5)
    rot = SKEW(POS, gens)
    eye = jnp.eye(8)
    np.testing.assert_allclose(rot @ jnp.swapaxes(rot, -1, -2), jnp.broadcast_to(eye, rot.shape),
                               atol=1e-5)
    np.testing.assert_allclose(SKEW(jnp.zeros((12, 2)), gens)[0],
                               jnp.broadcast_to(eye, gens.shape[1:]), atol=0)


def test_comrope_ap_block2_is_axial_rope_with_learned_frequencies():
  """b = 2 AP: block g is a plane rotation by -(P01 - P10) * x_{g % 2} (spec §1.1)."""
  params = rope.init_comrope(KEY, 2, D, variant="ap", block_size=2)
  s = params["P"][..., 0, 1] - params["P"][..., 1, 0]                    # [H, D/2]
  axis = jnp.arange(D // 2) % 2
  freqs = -s[..., None] * jax.nn.one_hot(axis, 2)                          # [H, D/2, 2]
  x = jax.random.normal(KEY, (12, 2, D))
  np.testing.assert_allclose(SKEW_APPLY(x, POS, rope.comrope_generators(params, variant="ap")),
                             rope.apply(x, rope.angles(POS, freqs), layout="interleaved"),
                             atol=1e-5)


def test_skew_rotations_generalises_liere():
  params = rope.init_liere(KEY, 2, 2, D, block_size=8)
  np.testing.assert_allclose(SKEW(POS, rope.liere_generators(params)),
                             jax.jit(rope.liere_rotations)(POS, params), atol=1e-6)


def test_string_with_zero_generators_is_its_base_rope():
  x = jax.random.normal(KEY, (12, 2, D))
  for layout in ("interleaved", "half"):
    ang = rope.angles(rope.grid_positions(3, 4), rope.freqs_axial(D))
    P = rope.cayley(jnp.zeros((2, D, D)))
    np.testing.assert_array_equal(P, jnp.broadcast_to(jnp.eye(D), (2, D, D)))
    np.testing.assert_allclose(rope.string_cayley(x, ang, P, layout=layout),
                               rope.apply(x, ang, layout=layout), atol=0)
  for shape in ((2, 2, D), (2, 1, D // 8, 8)):
    np.testing.assert_allclose(rope.circulant_string(x, POS * 5, jnp.zeros(shape)), x, atol=1e-6)


def test_cayley_is_orthogonal_and_matches_its_formula():
  w = jax.random.normal(KEY, (3, 16, 16))
  s = w - jnp.swapaxes(w, -1, -2)
  P = rope.cayley(s)
  eye = np.eye(16)
  np.testing.assert_allclose(P @ jnp.swapaxes(P, -1, -2), np.broadcast_to(eye, P.shape), atol=2e-5)
  s64 = np.asarray(s, np.float64)
  ref = (eye - s64) @ np.linalg.inv(eye + s64)
  np.testing.assert_allclose(P, ref, atol=2e-5)


def test_circulant_block_equals_dense_per_block():
  x = jax.random.normal(KEY, (12, 2, D))
  c = 0.3 * jax.random.normal(KEY, (2, 2, 4, 8))
  blocks = [rope.circulant_string(x[..., 8 * g:8 * g + 8], POS, c[:, :, g]) for g in range(4)]
  np.testing.assert_allclose(rope.circulant_string(x, POS, c), jnp.concatenate(blocks, -1),
                             atol=1e-6)


@pytest.mark.parametrize("d,block", [(32, None), (32, 8), (15, 5), (12, 3), (8, 2)])
def test_circulant_string_is_expm_in_its_real_fourier_basis(d, block):
  # The complex-free form (a RoPE in circulant_basis) against float64 expm of the generators
  # C - C^T, for even and odd blocks (odd: no alternating mode) and far positions; left=False
  # gives the coordinates in B: the same q^T k.
  b = block or d
  basis = rope.circulant_basis(d, block)
  np.testing.assert_allclose(basis @ basis.T, np.eye(d), atol=1e-6)
  c = 0.3 * np.asarray(jax.random.normal(KEY, (2, 1, d // b, b)), np.float64)
  pos = np.array([[0.0, 0.0], [1.0, -2.0], [7.5, 3.25], [300.0, 41.0]])
  x = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (4, 1, d)), np.float64)
  idx = (np.arange(b)[:, None] - np.arange(b)[None]) % b
  gens = c[..., idx] - np.swapaxes(c[..., idx], -1, -2)                 # [2, 1, G, b, b]
  want = np.stack([np.concatenate([
      scipy.linalg.expm(p[0] * gens[0, 0, g] + p[1] * gens[1, 0, g]) @ xi[0, g * b:(g + 1) * b]
      for g in range(d // b)]) for p, xi in zip(pos, x)])[:, None]
  cf = c.astype(np.float32) if block else c[:, :, 0].astype(np.float32)
  got = rope.circulant_string(x.astype(np.float32), pos.astype(np.float32), cf)
  # Angles up to ~300 * 2 * |c|_1 rad: float32 rounding of the phase, relative 6e-8.
  np.testing.assert_allclose(got, want, atol=2e-4 * max(1.0, np.abs(pos).max() / 10))
  np.testing.assert_allclose(got[:2], want[:2], atol=2e-6)
  coords = rope.circulant_string(x.astype(np.float32), pos.astype(np.float32), cf, left=False)
  np.testing.assert_allclose(np.einsum("ji,...j->...i", basis, coords), got, atol=1e-5)
  np.testing.assert_allclose(coords[0], np.einsum("ij,...j->...i", basis, x[0]), atol=1e-6)


def test_apply_dense_transpose():
  x = jax.random.normal(KEY, (5, 2, 8))
  M = jax.random.normal(KEY, (2, 8, 8))
  np.testing.assert_allclose(rope.apply_dense(x, M), jnp.einsum("hij,lhj->lhi", M, x), atol=1e-5)
  np.testing.assert_allclose(rope.apply_dense(x, M, transpose=True),
                             rope.apply_dense(x, jnp.swapaxes(M, -1, -2)), atol=1e-6)


# ----------------------------------------------------------------------------- positions

def test_grid_position_scales():
  np.testing.assert_allclose(rope.grid_positions(2, 4, scale="center"),
                             [[r, c] for r in (0.25, 0.75) for c in (0.125, 0.375, 0.625, 0.875)])
  sep = np.asarray(rope.grid_positions(6, 9, scale="centered"))
  np.testing.assert_allclose(sep.min(0), -sep.max(0), atol=1e-7)             # centred per axis
  mx = np.asarray(rope.grid_positions(6, 9, scale="centered", normalize="max"))
  np.testing.assert_allclose([mx[:, 0].min(), mx[:, 0].max()], [-8 / 9, 2 / 9], atol=1e-6)
  mn = np.asarray(rope.grid_positions(6, 9, scale="centered", normalize="min"))
  np.testing.assert_allclose(mn[:, 1].max(), 2 * 8.5 / 6 - 1, atol=1e-6)
  np.testing.assert_allclose(rope.grid_positions(5, 7, scale="index_interp"),
                             rope.grid_positions(5, 7), atol=1e-6)
  np.testing.assert_allclose(rope.grid_positions(24, 24, scale="index_interp",
                                                 train_size=(16, 16))[:3, 1], [0, 2 / 3, 4 / 3],
                             atol=1e-6)
  # "center" renormalises at any resolution (train_size has no effect).
  np.testing.assert_array_equal(rope.grid_positions(5, 7, scale="center", train_size=(2, 2)),
                                rope.grid_positions(5, 7, scale="center"))
  axes = rope.grid_axes(6, 9, scale="centered", normalize="max")
  np.testing.assert_array_equal(axes[0], mx[::9, 0])


def test_with_prefix():
  pos = rope.grid_positions(2, 3)
  np.testing.assert_array_equal(rope.with_prefix(pos, 0), pos)
  out = rope.with_prefix(pos, 2, value=0.5)
  assert out.shape == (8, 2) and out.dtype == jnp.float32
  np.testing.assert_array_equal(out[:2], 0.5)
  np.testing.assert_array_equal(out[2:], pos)
  batched = rope.with_prefix(jnp.stack([pos, pos + 1]), 1, value=jnp.array([0.5, -1.0]))
  assert batched.shape == (2, 7, 2)
  np.testing.assert_array_equal(batched[:, 0], [[0.5, -1.0]] * 2)
  # value 0: the prefix tokens are rotated by the identity.
  x = jax.random.normal(KEY, (7, 2, D))
  ang = rope.angles(rope.with_prefix(pos, 1), rope.freqs_dinov3(D))
  np.testing.assert_array_equal(rope.apply(x, ang)[0], x[0])


def test_neutral_augmentations_are_the_identity():
  pos = rope.grid_positions(3, 4, scale="centered")
  np.testing.assert_array_equal(rope.augment_positions(pos), pos)
  np.testing.assert_array_equal(
      rope.augment_positions(pos, shift=jnp.zeros(2), jitter=jnp.ones(2), rescale=jnp.ones(1)),
      pos)
  vals = rope.sample_position_augment(KEY)
  assert vals == {"shift": None, "jitter": None, "rescale": None}
  vals = rope.sample_position_augment(KEY, shift=0.0, jitter=1.0, rescale=1.0)
  np.testing.assert_array_equal(rope.augment_positions(pos, **vals), pos)
  cpos = rope.with_prefix(rope.grid_positions(3, 4, scale="center"), 1, value=0.5)
  pert, off = rope.sample_comrope_perturbation(KEY, 12, intensity=0.0, offset_intensity=0.0)
  np.testing.assert_array_equal(rope.perturb_positions(cpos, pert, off, grid=(3, 4)), cpos)


def test_augmentation_values_follow_dinov3():
  pos = rope.grid_positions(3, 4, scale="centered")
  shift, jitter, rescale = jnp.array([0.1, -0.2]), jnp.array([1.1, 0.9]), jnp.array([1.7])
  np.testing.assert_allclose(rope.augment_positions(pos, shift=shift, jitter=jitter,
                                                    rescale=rescale),
                             ((pos + shift) * jitter) * rescale, atol=0)
  draws = [rope.sample_position_augment(k, shift=0.25, jitter=1.5, rescale=2.0) for k in keys(64)]
  sh = np.stack([d["shift"] for d in draws])
  ji = np.stack([d["jitter"] for d in draws])
  re = np.stack([d["rescale"] for d in draws])
  assert sh.shape == (64, 2) and ji.shape == (64, 2) and re.shape == (64, 1)
  assert np.all(np.abs(sh) <= 0.25) and np.all(np.abs(np.log(ji)) <= math.log(1.5) + 1e-6)
  assert np.all(np.abs(np.log(re)) <= math.log(2.0) + 1e-6)
  assert sh.std() > 0.05 and np.log(re).std() > 0.1          # actually random


def test_comrope_perturbation_follows_the_reference():
  pert, off = rope.sample_comrope_perturbation(KEY, 500, intensity=4.0, offset_intensity=0.5)
  assert pert.shape == (500, 2) and off.shape == (2,)
  assert np.all(np.abs(pert) <= 0.5) and np.any(np.abs(pert) == 0.5)     # clipped
  pos = rope.with_prefix(rope.grid_positions(2, 3, scale="center"), 1, value=0.5)
  p = jnp.array([[0.3, -0.9]] * 6)
  out = rope.perturb_positions(pos, p, jnp.array([0.1, 0.2]), grid=(2, 3))
  np.testing.assert_allclose(out[0], [0.6, 0.7], atol=1e-7)               # cls: offset only
  np.testing.assert_allclose(out[1:], pos[1:] + jnp.array([0.3 / 2, -0.5 / 3]) + jnp.array(
      [0.1, 0.2]), atol=1e-7)


# ----------------------------------------------------------------------------- tables

def test_axial_first_row_swaps_the_halves():
  col, row = np.asarray(rope.freqs_axial(D)), np.asarray(rope.freqs_axial(D, first="row"))
  np.testing.assert_array_equal(row[: D // 4], col[D // 4:])
  np.testing.assert_array_equal(row[D // 4:], col[: D // 4])
  np.testing.assert_array_equal(rope.freqs_eva(D, 1e4), rope.freqs_axial(D, 1e4, first="row"))


def test_dinov3_is_two_pi_times_row_first_axial():
  np.testing.assert_allclose(rope.freqs_dinov3(64),
                             2 * np.pi * np.asarray(rope.freqs_axial(64, 100.0, first="row")),
                             rtol=1e-6)
  periods = rope.dinov3_periods(64, min_period=0.5, max_period=80.0)
  np.testing.assert_allclose([periods[0], periods[-1]], [0.5, 80.0], rtol=1e-6)
  np.testing.assert_allclose(rope.freqs_dinov3(64, min_period=0.5, max_period=80.0)[:16, 0],
                             2 * np.pi / np.asarray(periods), rtol=1e-6)


def test_truncate_freqs():
  f = rope.freqs_axial(64)
  np.testing.assert_array_equal(rope.truncate_freqs(f, 1.0), f)
  np.testing.assert_array_equal(rope.truncate_freqs(f, 0.0), 0)
  t = np.asarray(rope.truncate_freqs(f, 0.25))
  np.testing.assert_array_equal(t[:4], np.asarray(f)[:4])
  np.testing.assert_array_equal(t[4:16], 0)
  np.testing.assert_array_equal(t[16:20], np.asarray(f)[16:20])
  np.testing.assert_array_equal(t[20:], 0)
  # 1-D: Gemma's rope_proportion (the first int(p D/2) pairs keep base^(-2j/D)).
  g = np.asarray(rope.truncate_freqs(rope.freqs_1d(64, 1e4), 0.25))
  np.testing.assert_array_equal(g[:8], np.asarray(rope.freqs_1d(64, 1e4))[:8])
  np.testing.assert_array_equal(g[8:], 0)
  # Zeroed pairs pass through apply unrotated.
  x = jax.random.normal(KEY, (12, 1, 64))
  out = rope.apply(x, rope.angles(rope.grid_positions(3, 4), jnp.asarray(t)), layout="interleaved")
  np.testing.assert_array_equal(out[..., 8:32], x[..., 8:32])
  # A traced table takes the jnp path and agrees.
  np.testing.assert_array_equal(jax.jit(lambda f: rope.truncate_freqs(f, 0.25))(f), t)


@pytest.mark.parametrize("method", ["linear", "ntk", "ntk_by_parts", "yarn"])
def test_scale_freqs_neutral_and_monotone(method):
  f = rope.freqs_eva(72)
  np.testing.assert_allclose(rope.scale_freqs(f, [1.0, 1.0], method=method, train_len=8), f,
                             rtol=1e-6)
  scaled = np.asarray(rope.scale_freqs(f, [2.0, 1.0], method=method, train_len=8))
  np.testing.assert_allclose(scaled[18:], np.asarray(f)[18:], rtol=1e-6)      # col untouched
  assert np.all(scaled[:18, 0] <= np.asarray(f)[:18, 0] * (1 + 1e-6))          # never faster
  if method != "linear":
    np.testing.assert_allclose(scaled[0, 0], 1.0)   # the highest frequency is kept
  if method == "linear":
    np.testing.assert_allclose(scaled[:18, 0], np.asarray(f)[:18, 0] / 2, rtol=1e-6)


def test_scale_freqs_traced_table_and_scale():
  f = rope.freqs_eva(72)
  for method in ("linear", "ntk"):
    ref = rope.scale_freqs(f, [2.0, 3.0], method=method, train_len=8)
    out = jax.jit(lambda f, s: rope.scale_freqs(f, s, method=method, train_len=8))(
        f, jnp.array([2.0, 3.0]))
    np.testing.assert_allclose(out, ref, rtol=1e-6)
  ref = rope.scale_freqs(f, [2.0, 3.0], method="yarn", train_len=8)
  out = jax.jit(lambda s: rope.scale_freqs(f, s, method="yarn", train_len=8))(jnp.array([2., 3.]))
  np.testing.assert_allclose(out, ref, rtol=1e-6)


def test_attention_scale():
  for method in ("none", "linear", "ntk", "ntk_by_parts"):
    assert float(rope.attention_scale(method, (32, 32), 8)) == 1.0
  assert float(rope.attention_scale("yarn", (8, 8), 16)) == 1.0
  np.testing.assert_allclose(rope.attention_scale("yarn", (8, 32), 16), 0.1 * math.log(2) + 1,
                             rtol=1e-6)
  np.testing.assert_allclose(rope.attention_scale("pro1", (16, 12), 16),
                             math.sqrt(math.log(32) / math.log(16)), rtol=1e-6)
  np.testing.assert_allclose(rope.attention_scale("pro2", (16, 12), 16),
                             math.sqrt(math.log(2 * 192) / math.log(256)), rtol=1e-6)
  assert float(rope.attention_scale("pro1", (4, 4), 16)) == 1.0            # 2n <= L


# ----------------------------------------------------------------------------- biases

def test_lookhere_geometry():
  bias = np.asarray(rope.lookhere_bias(3, 4, head_directions="triangles", num_heads=4, depth=3,
                                       num_prefix=2))
  assert bias.shape == (3, 4, 14, 14)
  np.testing.assert_array_equal(bias[:, :, :2], 0)
  np.testing.assert_array_equal(bias[:, :, :, :2], 0)
  patch = bias[:, :, 2:, 2:]
  np.testing.assert_array_equal(np.diagonal(patch, axis1=-2, axis2=-1), 0)   # self: distance 0
  blocked = patch == -rope.biases.BF16_MAX
  # tri_up, query (2, 1) = token 9: keys (1, 0), (1, 1), (1, 2), (0, *) with |dc| <= dr allowed.
  allowed = ~blocked[0, 0, 9].reshape(3, 4)
  expected = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [0, 1, 0, 0]], bool)
  np.testing.assert_array_equal(allowed, expected)
  # Layer slopes 1.5 -> 0.5: the first layer penalises distance most.
  d = patch[:, 0, 9, 5]     # key (1, 1): distance 1, head slope 0.5
  np.testing.assert_allclose(d, [-0.75, -0.5, -0.25])


def test_fire_bias_properties():
  p = {"W1": jnp.linspace(-1, 1, 32), "b1": jnp.linspace(0.5, -0.5, 32),
       "W2": jax.random.normal(KEY, (3, 32)), "b2": jnp.arange(3.0), "c": 0.1, "L": 512.0}
  bias = np.asarray(rope.fire_bias(20, p))
  assert bias.shape == (3, 20, 20)
  # Below the threshold the normaliser is psi(L) for every query: the bias depends on |i - j|.
  np.testing.assert_allclose(bias, np.swapaxes(bias, -1, -2), atol=1e-6)
  np.testing.assert_allclose(bias[:, 3, 1], bias[:, 10, 8], atol=1e-6)
  # On the diagonal the distance is 0: the MLP at 0.
  h0 = np.maximum(np.asarray(p["b1"]), 0) @ np.asarray(p["W2"]).T + np.asarray(p["b2"])
  np.testing.assert_allclose(bias[:, 5, 5], h0, atol=1e-5)


# ----------------------------------------------------------------------------- transforms

def test_everything_jits():
  pos = rope.grid_positions(3, 4, scale="centered")
  x = jax.random.normal(KEY, (12, 2, D))
  params = rope.init_comrope(KEY, 2, D, variant="ld", block_size=8)
  P = rope.cayley(0.1 * jax.random.normal(KEY, (2, D, D)))
  c = 0.1 * jax.random.normal(KEY, (2, 2, D))
  fire = {"W1": jnp.ones(32), "b1": jnp.zeros(32), "W2": jnp.ones((2, 32)), "b2": jnp.zeros(2),
          "c": 0.1, "L": 8.0}
  calls = {
      "with_prefix": (lambda p: rope.with_prefix(p, 2, value=0.5), (pos,)),
      "augment_positions": (lambda p, s, j, r: rope.augment_positions(p, shift=s, jitter=j,
                                                                      rescale=r),
                            (pos, jnp.ones(2), jnp.ones(2), jnp.ones(1))),
      "sample_position_augment": (lambda k: rope.sample_position_augment(k, shift=0.1,
                                                                         jitter=1.2,
                                                                         rescale=2.0), (KEY,)),
      "perturb_positions": (lambda p, d, o: rope.perturb_positions(p, d, o, num_prefix=0,
                                                                   grid=(3, 4)),
                            (pos, jnp.ones((12, 2)), jnp.ones(2))),
      "sample_comrope_perturbation": (lambda k: rope.sample_comrope_perturbation(
          k, 12, intensity=1.0, offset_intensity=0.5), (KEY,)),
      "grid_positions": (lambda: rope.grid_positions(3, 4, scale="index_interp",
                                                     train_size=(6, 6)), ()),
      "freqs_dinov3": (lambda: rope.freqs_dinov3(D), ()),
      "scale_freqs": (lambda s: rope.scale_freqs(rope.freqs_eva(D), s, method="ntk_by_parts",
                                                 train_len=4), (jnp.array([2.0, 1.5]),)),
      "attention_scale": (lambda h, w: rope.attention_scale("pro2", (h, w), 4), (8, 6)),
      "truncate_freqs": (lambda f: rope.truncate_freqs(f, 0.5), (rope.freqs_axial(D),)),
      "comrope_generators": (lambda p: rope.comrope_generators(p, variant="ld"), (params,)),
      "skew_rotations": (lambda p, g: rope.skew_rotations(p, g),
                         (pos, rope.comrope_generators(params, variant="ld"))),
      "cayley": (rope.cayley, (jnp.zeros((2, D, D)),)),
      "string_cayley": (lambda x, P: rope.string_cayley(x, rope.angles(pos, rope.freqs_axial(D)),
                                                        P), (x, P)),
      "circulant_string": (rope.circulant_string, (x, pos, c)),
      "lookhere_bias": (lambda: rope.lookhere_bias(3, 4, head_directions="corners", num_heads=4,
                                                   depth=2), ()),
      "fire_bias": (lambda p: rope.fire_bias(12, p), (fire,)),
  }
  for name, (fn, args) in calls.items():
    eager, jitted = fn(*args), jax.jit(fn)(*args)
    for e, j in zip(jax.tree_util.tree_leaves(eager), jax.tree_util.tree_leaves(jitted)):
      np.testing.assert_allclose(e, j, rtol=1e-5, atol=1e-6, err_msg=name)


def test_everything_vmaps():
  pos = rope.grid_positions(3, 4, scale="center")
  xs = jax.random.normal(KEY, (3, 12, 2, D))
  poss = jnp.stack([pos, pos + 0.5, pos * 2])
  gens = rope.comrope_generators(rope.init_comrope(KEY, 2, D, block_size=8), variant="ap")
  Ss = 0.1 * jax.random.normal(KEY, (3, 2, D, D))
  cs = 0.1 * jax.random.normal(KEY, (3, 2, 2, D // 8, 8))
  shifts = jax.random.normal(KEY, (3, 2))
  ang = rope.angles(pos, rope.freqs_axial(D))
  cases = {
      "apply_blocks(skew)": (lambda x, p: rope.apply_blocks(x, rope.skew_rotations(p, gens)),
                             (xs, poss)),
      "cayley": (rope.cayley, (Ss,)),
      "string_cayley": (lambda x, S: rope.string_cayley(x, ang, rope.cayley(S)), (xs, Ss)),
      "circulant_string": (rope.circulant_string, (xs, poss, cs)),
      "augment_positions": (lambda p, s: rope.augment_positions(p, shift=s), (poss, shifts)),
      "perturb_positions": (lambda p, s: rope.perturb_positions(p, jnp.zeros((12, 2)) + s, s,
                                                                num_prefix=0, grid=(3, 4)),
                            (poss, shifts)),
      "with_prefix": (lambda p: rope.with_prefix(p, 1, value=0.5), (poss,)),
      "sample_position_augment": (lambda k: rope.sample_position_augment(k, shift=0.2)["shift"],
                                  (keys(3),)),
      "scale_freqs": (lambda s: rope.scale_freqs(rope.freqs_eva(D), s, method="yarn",
                                                 train_len=4), (1 + jnp.abs(shifts),)),
      "truncate_freqs": (lambda m: rope.truncate_freqs(rope.freqs_axial(D) * m, 0.5),
                         (1 + jnp.abs(shifts)[:, :1],)),
      "attention_scale": (lambda n: rope.attention_scale("yarn", (n, 8.0), 4),
                          (jnp.array([4.0, 8.0, 16.0]),)),
      "fire_bias": (lambda c: rope.fire_bias(12, {"W1": jnp.ones(8), "b1": jnp.zeros(8),
                                                  "W2": jnp.ones((2, 8)), "b2": jnp.zeros(2),
                                                  "c": c, "L": 6.0}),
                    (jnp.array([0.1, 0.2, 0.3]),)),
  }
  for name, (fn, args) in cases.items():
    batched = jax.jit(jax.vmap(fn))(*args)
    single_fn = jax.jit(fn)
    for i in range(3):
      single = single_fn(*(a[i] for a in args))
      np.testing.assert_allclose(batched[i], single, rtol=1e-5, atol=1e-5, err_msg=name)
  # Batched positions broadcast without vmap too.
  np.testing.assert_allclose(SKEW(poss, gens)[1], SKEW(poss[1], gens), atol=1e-6)
  np.testing.assert_allclose(rope.circulant_string(xs, poss, cs[0])[2],
                             rope.circulant_string(xs[2], poss[2], cs[0]), atol=1e-5)


def directional_check(f, x, seed=3, eps=1e-2, rtol=2e-2):
  """grad(f)(x) . v against a central difference along a random unit direction v (float32)."""
  leaves, tree = jax.tree_util.tree_flatten(x)
  ks = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  v = [jax.random.normal(k, jnp.shape(a)) for k, a in zip(ks, leaves)]
  norm = jnp.sqrt(sum(jnp.sum(a * a) for a in v))
  v = jax.tree_util.tree_unflatten(tree, [a / norm for a in v])
  f = jax.jit(f)
  g = jax.jit(jax.grad(f))(x)
  dot = sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(g),
                                           jax.tree_util.tree_leaves(v)))
  plus = jax.tree_util.tree_map(lambda a, b: a + eps * b, x, v)
  minus = jax.tree_util.tree_map(lambda a, b: a - eps * b, x, v)
  fd = (f(plus) - f(minus)) / (2 * eps)
  assert np.all(np.isfinite(np.asarray(dot)))
  np.testing.assert_allclose(dot, fd, rtol=rtol, atol=2e-2)


def test_everything_differentiates():
  pos = rope.grid_positions(3, 4, scale="center")
  x = jax.random.normal(KEY, (12, 2, D))
  tgt = jax.random.normal(jax.random.PRNGKey(9), (12, 2, D))
  loss = lambda y: jnp.sum(y * tgt)
  ang = rope.angles(pos, rope.freqs_axial(D))
  # ComRoPE-LD parameters (P and theta) through generators, expm and apply_blocks, together
  # with the positions' offset (perturb_positions).
  params = rope.init_comrope(KEY, 2, D, variant="ld", block_size=8, init_std=0.5)

  def comrope_loss(a):
    p, o = a
    pos_p = rope.perturb_positions(pos, jnp.zeros((12, 2)), o, num_prefix=0, grid=(3, 4))
    return loss(rope.apply_blocks(x, rope.skew_rotations(
        3 * pos_p, rope.comrope_generators(p, variant="ld"))))

  directional_check(comrope_loss, (params, jnp.array([0.1, -0.2])))
  # DINOv3 augmentation values through angles and apply.
  directional_check(lambda s: loss(rope.apply(x, rope.angles(
      rope.augment_positions(pos, shift=s[:2], jitter=s[2:4], rescale=s[4:]),
      rope.freqs_dinov3(D)))), jnp.array([0.1, -0.2, 1.1, 0.9, 1.3]))
  # STRING: the skew parameter through the Cayley solve; circulant first columns.
  directional_check(lambda S: loss(rope.string_cayley(x, ang, rope.cayley(S - jnp.swapaxes(
      S, -1, -2)))), 0.1 * jax.random.normal(KEY, (2, D, D)))
  directional_check(lambda c: loss(rope.circulant_string(x, pos * 3, c)),
                    0.1 * jax.random.normal(KEY, (2, 2, D)))
  # Tables: FiT scale (through yarn's blend), p-RoPE truncation.
  directional_check(lambda s: loss(rope.apply(x, rope.angles(pos * 4, rope.scale_freqs(
      rope.freqs_eva(D), s, method="yarn", train_len=4)))), jnp.array([2.0, 1.5]))
  # (through learned magnitudes: perturbing the zero entries would change the axis groups)
  directional_check(lambda m: loss(rope.apply(x, rope.angles(pos * 4, rope.truncate_freqs(
      rope.freqs_axial(D) * m[:, None], 0.5)))), jnp.linspace(0.5, 1.5, D // 2))
  # FIRE parameters (c and L included).
  fire = {"W1": jnp.linspace(-1, 1, 32), "b1": jnp.linspace(0.3, -0.3, 32),
          "W2": jax.random.normal(KEY, (2, 32)), "b2": jnp.zeros(2), "c": jnp.float32(0.1),
          "L": jnp.float32(6.0)}
  directional_check(lambda p: jnp.sum(rope.fire_bias(12, p) * jnp.arange(144.0).reshape(12, 12)
                                      / 100), fire)
