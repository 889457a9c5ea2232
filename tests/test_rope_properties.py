"""Closed-form properties of every `rope` variant (independent of the reference vectors)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rope

D = 48            # divisible by 2, 3, 4, 8, 16 and 48: every variant can use it
H = 2
KEY = jax.random.PRNGKey(0)


def uniform_freqs(head_dim, omega=1 / np.pi):
  """Uniform RoPE (vision_rope.md §6): Axial with one frequency for every pair."""
  f = np.zeros((head_dim // 2, 2), np.float32)
  f[: head_dim // 4, 1] = omega
  f[head_dim // 4:, 0] = omega
  return jnp.asarray(f)


def image_positions(h=3, w=4, scale="index"):
  return rope.grid_positions(h, w, scale=scale)


def mm_positions(scheme, **kw):
  segs = [rope.Text(3), rope.Image(3, 4), rope.Text(2), rope.Video(2, 2, 3), rope.Text(2)]
  return jnp.asarray(rope.multimodal_positions(segs, scheme, **kw)[0])


def mm_positions_no_video(scheme, **kw):
  segs = [rope.Text(3), rope.Image(3, 4), rope.Text(2), rope.Image(2, 3), rope.Text(2)]
  return jnp.asarray(rope.multimodal_positions(segs, scheme, **kw)[0])


# Every variant as (rotate(x [..., L, H|1, D], positions) -> x', positions).
def commuting(freqs, layout):
  return lambda x, p: rope.apply(x, rope.angles(p, freqs), layout=layout)


MIXED = rope.init_mixed_freqs(KEY, 1, D)[0]
MH = rope.freqs_multi_head(8, D, head_sections=(2, 3, 3))
LIERE = {g: rope.init_liere(KEY, 2, 1, D, block_size=g) for g in (2, 4, 8, 48)}
SPH_LEARNED = jax.random.uniform(KEY, (1, D // 3, 2))

VARIANTS = {
    "1d": (commuting(rope.freqs_1d(D), "half"), jnp.arange(12.0)[:, None]),
    "axial": (commuting(rope.freqs_axial(D), "interleaved"), image_positions()),
    "axial_pi": (commuting(rope.freqs_axial(D, theta=10.0), "interleaved"),
                 image_positions(scale="pi")),
    "uniform": (commuting(uniform_freqs(D), "interleaved"), image_positions(scale="pi")),
    "mixed": (commuting(MIXED, "interleaved"), image_positions()),
    "mrope": (commuting(rope.freqs_mrope(D, sections=(6, 9, 9)), "half"), mm_positions("mrope")),
    "mrope_interleaved": (commuting(rope.freqs_mrope_interleaved(D, sections=(8, 8, 8)), "half"),
                          mm_positions("spatial_reset")),
    "mhrope_head3": (commuting(MH[3], "half"), mm_positions("spatial_reset")),
    "videorope": (commuting(rope.freqs_videorope(D, sections=(6, 9, 9)), "half"),
                  mm_positions("videorope")),
    "v2pe": (commuting(rope.freqs_1d(D), "half"), mm_positions("v2pe")[:, :1]),
    "circle": (commuting(rope.freqs_mrope(D, sections=(6, 9, 9)), "half"),
               mm_positions_no_video("circle")),
    "liere2": (lambda x, p: rope.apply_blocks(x, rope.liere_rotations(p, LIERE[2])),
               image_positions(scale="unit")),
    "liere8": (lambda x, p: rope.apply_blocks(x, rope.liere_rotations(p, LIERE[8])),
               image_positions(scale="unit")),
    "liere_dense": (lambda x, p: rope.apply_blocks(x, rope.liere_rotations(p, LIERE[48])),
                    image_positions(scale="unit")),
    "spherical": (lambda x, p: rope.apply_blocks(
        x, rope.spherical_rotations(p, rope.spherical_freqs(D))), image_positions(scale="pi")),
    "spherical_learned": (lambda x, p: rope.apply_blocks(
        x, rope.spherical_rotations(p, SPH_LEARNED)), image_positions(scale="pi")),
}
EQUIVARIANT = ["1d", "axial", "axial_pi", "uniform", "mixed", "mrope", "mrope_interleaved",
               "mhrope_head3", "videorope", "v2pe", "circle", "liere2"]
NOT_EQUIVARIANT = ["liere8", "liere_dense", "spherical", "spherical_learned"]
assert sorted(EQUIVARIANT + NOT_EQUIVARIANT) == sorted(VARIANTS)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_norm_preserved(name):
  rotate, pos = VARIANTS[name]
  x = jax.random.normal(KEY, (2, pos.shape[0], 1, D))
  y = rotate(x, pos)
  assert y.shape == x.shape and y.dtype == x.dtype
  np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), jnp.linalg.norm(x, axis=-1),
                             rtol=2e-5)
  assert float(jnp.abs(y - x).max()) > 0.1      # and it really rotates something


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_zero_position_is_identity(name):
  rotate, pos = VARIANTS[name]
  x = jax.random.normal(KEY, (pos.shape[0], 1, D))
  np.testing.assert_allclose(rotate(x, jnp.zeros_like(pos)), x, atol=1e-6)


def shift_for(pos):
  return jnp.asarray([0.37, -0.21, 1.3][: pos.shape[-1]])


@pytest.mark.parametrize("name", EQUIVARIANT)
def test_shift_equivariant(name):
  rotate, pos = VARIANTS[name]
  gap = rope.relative_logit_gap(rotate, pos, shift_for(pos), key=KEY, head_dim=D)
  assert float(gap) < 2e-4, gap
  # Integer shifts too (as a text offset would move positions).
  gap = rope.relative_logit_gap(rotate, pos, jnp.full(pos.shape[-1:], 5.0), key=KEY, head_dim=D)
  assert float(gap) < 2e-4, gap


@pytest.mark.parametrize("name", NOT_EQUIVARIANT)
def test_not_shift_equivariant_has_measurable_gap(name):
  rotate, pos = VARIANTS[name]
  gap = rope.relative_logit_gap(rotate, pos, shift_for(pos), key=KEY, head_dim=D)
  assert float(gap) > 0.1, gap


def test_mhrope_every_head_equivariant_and_nope_heads_identity():
  pos = mm_positions("spatial_reset")
  for h in range(8):
    gap = rope.relative_logit_gap(commuting(MH[h], "half"), pos, shift_for(pos), key=KEY,
                                  head_dim=D)
    assert float(gap) < 2e-4
  # 2 + 3 + 3 = 8 heads: none is NoPE; with (1, 1, 1) of 4 the last head is NoPE.
  f = rope.freqs_multi_head(4, D, head_sections=(1, 1, 1))
  assert float(jnp.abs(f[3]).max()) == 0.0 and float(jnp.abs(f[:3]).min(axis=(1,)).max()) > 0


@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("scheme,freqs", [
    ("mrope", rope.freqs_mrope(D, sections=(6, 9, 9))),
    ("spatial_reset", rope.freqs_mrope_interleaved(D, sections=(8, 8, 8))),
    ("spatial_reset", rope.freqs_multi_head(8, D, head_sections=(2, 3, 3))),
    ("videorope", rope.freqs_videorope(D, sections=(6, 9, 9))),
    ("circle", rope.freqs_mrope(D, sections=(6, 9, 9))),
    ("vanilla", rope.freqs_1d(D)),
    ("v2pe", rope.freqs_1d(D)),
])
def test_text_only_is_exactly_1d_rope(scheme, freqs, layout):
  n = 40
  pos3, nxt = rope.multimodal_positions([rope.Text(n)], scheme)
  assert nxt == n
  np.testing.assert_array_equal(pos3, np.repeat(np.arange(n, dtype=np.float32)[:, None], 3, 1))
  p = pos3 if freqs.shape[-1] == 3 else pos3[:, :1]
  heads = freqs.shape[0] if freqs.ndim == 3 else 1
  x = jax.random.normal(KEY, (2, n, heads, D))
  got = rope.apply(x, rope.angles(p, freqs), layout=layout)
  want = rope.apply(x, rope.angles(jnp.arange(n, dtype=jnp.float32)[:, None],
                                   rope.freqs_1d(D, theta=1e6 if scheme not in (
                                       "vanilla", "v2pe") else 1e4)), layout=layout)
  np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("h,w", [(1, 1), (1, 5), (2, 3), (4, 6), (5, 5), (7, 3), (8, 8)])
@pytest.mark.parametrize("before,after", [(0, 4), (1, 1), (9, 0), (30, 17)])
def test_circle_ptd_is_zero_mrope_is_not(h, w, before, after):
  segs = ([rope.Text(before)] if before else []) + [rope.Image(h, w)] + (
      [rope.Text(after)] if after else [])
  if not before and not after:
    return
  img = np.arange(before, before + h * w)
  txt = np.r_[0:before, before + h * w:before + h * w + after]
  pos, _ = rope.multimodal_positions(segs, "circle")
  assert float(rope.ptd(pos[txt], pos[img])) <= 1e-5
  if h * w > 1:
    pos_m, _ = rope.multimodal_positions(segs, "mrope")
    assert float(rope.ptd(pos_m[txt], pos_m[img])) > 0.05
  # Also with other radii, alpha and a second image: each image is a cone around the text axis.
  segs2 = segs + [rope.Image(h, w), rope.Text(3)]
  pos2, _ = rope.multimodal_positions(segs2, "circle", alpha=0.2, radius=3.0)
  img2 = np.arange(len(pos) , len(pos) + h * w)
  txt2 = np.r_[0:before, before + h * w:len(pos), len(pos) + h * w:len(pos2)]
  assert float(rope.ptd(pos2[txt2], pos2[img2])) <= 1e-5


def test_circle_radius_auto_and_options():
  off = rope.circle_offsets(4, 6, radius="auto")
  np.testing.assert_allclose(np.linalg.norm(off, axis=-1), 2.5, atol=1e-5)   # code: max |x'|
  off = rope.circle_offsets(4, 6, radius="auto-2")
  np.testing.assert_allclose(np.linalg.norm(off, axis=-1), 5.0, atol=1e-5)
  off = rope.circle_offsets(4, 6, move_to_positive="auto")
  assert float(off.min()) == pytest.approx(0.0, abs=1e-5)
  pos, _ = rope.multimodal_positions([rope.Text(2), rope.Image(4, 6)], "circle",
                                     move_to_positive=1.0)
  assert pos[2:].min() == pytest.approx(3.0, abs=1e-5)
  # Image(h, w) and Video(1, h, w) are the same thing in every scheme.
  for scheme in rope.SCHEMES:
    a = rope.multimodal_positions([rope.Text(2), rope.Image(3, 5), rope.Text(2)], scheme)
    b = rope.multimodal_positions([rope.Text(2), rope.Video(1, 3, 5), rope.Text(2)], scheme)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]


def test_multimodal_layouts_video():
  segs = [rope.Text(2), rope.Video(3, 2, 2), rope.Text(1)]
  pos, nxt = rope.multimodal_positions(segs, "mrope")
  # t = 2 + tau, h = 2 + y, w = 2 + x; text resumes at 2 + max(2, 1, 1) + 1 = 5 (classic rule).
  np.testing.assert_array_equal(pos[2:6, 0], [2, 2, 2, 2])
  np.testing.assert_array_equal(pos[6:10, 0], [3, 3, 3, 3])
  np.testing.assert_array_equal(pos[-1], [5, 5, 5])
  assert nxt == 6
  pos, _ = rope.multimodal_positions(segs, "spatial_reset")
  np.testing.assert_array_equal(pos[2:6, 1:], [[0, 0], [0, 1], [1, 0], [1, 1]])
  np.testing.assert_array_equal(pos[-1], [5, 5, 5])
  pos, nxt = rope.multimodal_positions(segs, "videorope")        # stride 2
  np.testing.assert_array_equal(pos[10:14, 0], [6, 6, 6, 6])
  np.testing.assert_array_equal(pos[-1], [7, 7, 7])
  pos, nxt = rope.multimodal_positions(segs, "mrope", temporal_stride=2.0)
  np.testing.assert_array_equal(pos[-1], [7, 7, 7])


def test_liere_block2_equals_mixed():
  """LieRE with 2x2 blocks is RoPE-Mixed with freqs = -W[a, h, j, 0, 1] (interleaved pairs)."""
  params = rope.init_liere(KEY, 2, H, D, block_size=2)
  mixed = -jnp.moveaxis(params[..., 0, 1], 0, -1)                       # [H, D/2, 2]
  pos = rope.grid_positions(5, 7, scale="unit", train_size=(3, 4))
  x = jax.random.normal(KEY, (2, 35, H, D))
  np.testing.assert_allclose(
      rope.apply_blocks(x, rope.liere_rotations(pos, params)),
      rope.apply(x, rope.angles(pos, mixed), layout="interleaved"), atol=2e-5)


def test_grid_positions_conventions():
  np.testing.assert_array_equal(rope.grid_positions(2, 3), [[0, 0], [0, 1], [0, 2],
                                                            [1, 0], [1, 1], [1, 2]])
  p = rope.grid_positions(4, 6, scale="unit", train_size=(2, 3))
  np.testing.assert_allclose(p[-1], [2.0, 2.0])
  p = rope.grid_positions(4, 4, scale="pi", train_size=(8, 8))
  np.testing.assert_allclose(p[0], [-np.pi / 2, -np.pi / 2], atol=1e-6)
  np.testing.assert_allclose(p[-1], [np.pi / 2, np.pi / 2], atol=1e-6)


@pytest.mark.parametrize("scale", ["index", "unit", "pi"])
def test_grid_axes_are_the_grid_positions(scale):
  rows, cols = rope.grid_axes(3, 5, scale=scale, train_size=(2, 4))
  grid = np.stack(np.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2)
  np.testing.assert_array_equal(grid, rope.grid_positions(3, 5, scale=scale, train_size=(2, 4)))


@pytest.mark.parametrize("heads", [None, 4])
def test_grid_cos_sin_equals_trig_of_grid_angles(heads):
  # Image grid (2 axes) and a video grid (3 axes, t x h x w), shared and per-head freqs.
  key = jax.random.PRNGKey(3)
  for axes in (rope.grid_axes(7, 9, scale="index"),
               (jnp.arange(3.0), jnp.arange(4.0) + 5.0, jnp.linspace(-3.0, 3.0, 6))):
    p = len(axes)
    shape = (D // 2, p) if heads is None else (heads, D // 2, p)
    freqs = jax.random.uniform(key, shape) * 2.0
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, p)
    ang = rope.angles(grid, freqs)
    cos, sin = rope.grid_cos_sin(axes, freqs)
    assert cos.shape == sin.shape == ang.shape
    np.testing.assert_allclose(cos, jnp.cos(ang), atol=2e-6)
    np.testing.assert_allclose(sin, jnp.sin(ang), atol=2e-6)


def test_grid_cos_sin_rejects_wrong_axes():
  with pytest.raises(ValueError, match="`axes` must be 2 1-D"):
    rope.grid_cos_sin([jnp.arange(3.0)], rope.freqs_axial(D))


def test_layouts_are_a_channel_permutation_of_each_other():
  ang = rope.angles(rope.grid_positions(3, 4), rope.freqs_axial(D))
  x = jax.random.normal(KEY, (12, 1, D))
  perm = np.stack([np.arange(D // 2), np.arange(D // 2) + D // 2], -1).reshape(-1)
  half = rope.apply(x, ang, layout="half")
  inter = rope.apply(x[..., perm], ang, layout="interleaved")
  np.testing.assert_allclose(half[..., perm], inter, atol=1e-6)


# ----------------------------------------------------------------------------- dtypes, transforms


@pytest.mark.parametrize("name", ["axial", "mrope", "liere8", "spherical"])
def test_bf16_in_bf16_out(name):
  rotate, pos = VARIANTS[name]
  x = jax.random.normal(KEY, (pos.shape[0], 1, D)).astype(jnp.bfloat16)
  y = rotate(x, pos)
  assert y.dtype == jnp.bfloat16
  ref = rotate(x.astype(jnp.float32), pos)
  np.testing.assert_allclose(y.astype(jnp.float32), ref, atol=3e-2)
  cos = jnp.cos(rope.angles(pos[:, :1] if name == "mrope" else pos,
                            rope.freqs_1d(D) if name == "mrope" else rope.freqs_axial(D)))
  assert rope.apply_cos_sin(x, cos, cos, layout="half").dtype == jnp.bfloat16


def test_jit_vmap_grad_commuting():
  pos = rope.grid_positions(3, 4)
  x = jax.random.normal(KEY, (5, 12, H, D))
  freqs = rope.init_mixed_freqs(KEY, H, D)

  def f(x, freqs, pos):
    return rope.apply(x, rope.angles(pos, freqs), layout="interleaved")

  eager = f(x, freqs, pos)
  np.testing.assert_allclose(jax.jit(f)(x, freqs, pos), eager, atol=1e-6)
  np.testing.assert_allclose(jax.vmap(f, (0, None, None))(x, freqs, pos), eager, atol=1e-6)
  # vmap over per-example positions (leading batch dims are also plain broadcasting).
  pos_b = jnp.stack([pos, pos + 1.0])
  np.testing.assert_allclose(jax.vmap(f, (None, None, 0))(x, freqs, pos_b)[1],
                             f(x, freqs, pos + 1.0), atol=1e-6)
  g = jax.grad(lambda fr: jnp.sum(f(x, fr, pos) ** 3))(freqs)
  assert g.shape == freqs.shape and bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0
  # Finite-difference check of the frequency gradient.
  eps = 1e-3
  d = jnp.zeros_like(freqs).at[1, 3, 0].set(eps)
  fd = (jnp.sum(f(x, freqs + d, pos) ** 3) - jnp.sum(f(x, freqs - d, pos) ** 3)) / (2 * eps)
  np.testing.assert_allclose(g[1, 3, 0], fd, rtol=2e-2)
  # Constructors are jittable (static sizes) and init is vmappable over keys.
  init = jax.jit(rope.init_mixed_freqs, static_argnums=(1, 2))
  np.testing.assert_allclose(init(KEY, H, D), freqs, atol=1e-6)
  keys = jax.random.split(KEY, 3)
  assert jax.vmap(lambda k: rope.init_mixed_freqs(k, H, D))(keys).shape == (3, H, D // 2, 2)
  assert jax.jit(rope.freqs_axial, static_argnums=0)(D).shape == (D // 2, 2)


def test_jit_vmap_grad_blocks():
  pos = rope.grid_positions(3, 4, scale="unit")
  x = jax.random.normal(KEY, (2, 12, H, D))
  params = rope.init_liere(KEY, 2, H, D, block_size=8)

  def f(params, x):
    return rope.apply_blocks(x, rope.liere_rotations(pos, params))

  np.testing.assert_allclose(jax.jit(f)(params, x), f(params, x), atol=1e-5)
  np.testing.assert_allclose(jax.vmap(f, (None, 0))(params, x), f(params, x), atol=1e-5)
  loss = lambda p: jnp.sum(f(p, x) * x)
  g = jax.grad(loss)(params)
  assert bool(jnp.all(jnp.isfinite(g)))
  # Only the strict upper triangle is used.
  assert float(jnp.abs(jnp.tril(g)).max()) == 0.0
  eps = 1e-2
  d = jnp.zeros_like(params).at[1, 0, 2, 1, 5].set(eps)
  fd = (loss(params + d) - loss(params - d)) / (2 * eps)
  np.testing.assert_allclose(g[1, 0, 2, 1, 5], fd, rtol=5e-2, atol=1e-2)

  sph = jax.random.uniform(KEY, (H, D // 3, 2))
  pos_pi = rope.grid_positions(3, 4, scale="pi")
  y = jax.random.normal(KEY, (2, 12, H, 48))
  fs = lambda fr, y: rope.apply_blocks(y, rope.spherical_rotations(pos_pi, fr))
  np.testing.assert_allclose(jax.jit(fs)(sph, y), fs(sph, y), atol=1e-6)
  np.testing.assert_allclose(jax.vmap(fs, (None, 0))(sph, y), fs(sph, y), atol=1e-6)
  gs = jax.grad(lambda fr: jnp.sum(fs(fr, y) * y))(sph)
  assert bool(jnp.all(jnp.isfinite(gs))) and float(jnp.abs(gs).max()) > 0


@pytest.mark.parametrize("g, r_shape", [(3, (12, H, 4)), (8, (12, 1, 2)), (2, (12, H, 8))])
def test_apply_blocks_gradient_matches_einsum_autodiff(g, r_shape):
  # apply_blocks has a hand-written VJP; the reference is autodiff of the plain einsum, with
  # rotations broadcast over the batch (and over heads when their head axis is 1).
  x = jax.random.normal(KEY, (3, 12, H, g * r_shape[-1]))
  rot = jax.random.normal(jax.random.PRNGKey(7), r_shape + (g, g))
  w = jax.random.normal(jax.random.PRNGKey(8), x.shape)

  def reference(x, rot):
    xb = x.reshape(x.shape[:-1] + (-1, g))
    y = jnp.einsum("...ij,...j->...i", rot, xb, precision=jax.lax.Precision.HIGHEST)
    return y.reshape(x.shape)

  loss = lambda f: lambda x, rot: jnp.sum(f(x, rot) * w)
  got = jax.grad(loss(rope.apply_blocks), argnums=(0, 1))(x, rot)
  want = jax.grad(loss(reference), argnums=(0, 1))(x, rot)
  assert got[1].shape == rot.shape
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("batch, table_heads", [(3, 1), (3, H), (40, H)])
def test_apply_cos_sin_gradient_matches_plain_autodiff(layout, batch, table_heads):
  # apply_cos_sin has a hand-written VJP (and sums over the batch with unrolled adds, or a
  # ones-matmul past 32 rows); the reference is autodiff of the textbook formula.
  x = jax.random.normal(KEY, (batch, 12, H, D))
  ang = jax.random.normal(jax.random.PRNGKey(5), (12, table_heads, D // 2)) * 3.0
  cos, sin = jnp.cos(ang), jnp.sin(ang)
  w = jax.random.normal(jax.random.PRNGKey(6), x.shape)

  def reference(x, cos, sin):
    if layout == "half":
      x1, x2 = x[..., :D // 2], x[..., D // 2:]
      return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return jnp.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).reshape(x.shape)

  ours = functools.partial(rope.apply_cos_sin, layout=layout)
  loss = lambda f: lambda *a: jnp.sum(f(*a) * w)
  got = jax.grad(loss(ours), argnums=(0, 1, 2))(x, cos, sin)
  want = jax.grad(loss(reference), argnums=(0, 1, 2))(x, cos, sin)
  np.testing.assert_allclose(ours(x, cos, sin), reference(x, cos, sin), atol=1e-6)
  for a, b in zip(got, want):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_jit_vmap_grad_multimodal_and_diagnostics():
  # circle_offsets: alpha / radius may be traced; vmap over a batch of radii.
  radii = jnp.array([1.0, 5.0, 10.0])
  off = jax.vmap(lambda r: rope.circle_offsets(4, 6, radius=r))(radii)
  np.testing.assert_allclose(jnp.linalg.norm(off, axis=-1), radii[:, None] * jnp.ones(24),
                             atol=1e-5)
  np.testing.assert_allclose(jax.jit(lambda a: rope.circle_offsets(4, 6, alpha=a))(0.5),
                             rope.circle_offsets(4, 6), atol=1e-6)
  g = jax.grad(lambda a: jnp.sum(rope.circle_offsets(4, 6, alpha=a)[:, 0] ** 2))(0.3)
  assert np.isfinite(g) and g != 0
  # multimodal_positions is static host work: inside jit it is a constant.
  segs = [rope.Text(2), rope.Image(2, 2)]
  f = jax.jit(lambda x: x + rope.multimodal_positions(segs, "mrope")[0])
  np.testing.assert_array_equal(f(jnp.zeros((6, 3))), rope.multimodal_positions(segs, "mrope")[0])
  # ptd: jit, vmap over sequences, grad.
  t, i = jax.random.normal(KEY, (5, 3)), jax.random.normal(KEY, (7, 3)) + 3
  np.testing.assert_allclose(jax.jit(rope.ptd)(t, i), rope.ptd(t, i), rtol=1e-6)
  assert jax.vmap(rope.ptd)(jnp.stack([t, t]), jnp.stack([i, i])).shape == (2,)
  assert bool(jnp.all(jnp.isfinite(jax.grad(rope.ptd)(t, i))))
  # relative_logit_gap under jit (rotate and head_dim static).
  rotate = commuting(rope.freqs_axial(D), "interleaved")
  gap = jax.jit(functools.partial(rope.relative_logit_gap, rotate, head_dim=D))(
      rope.grid_positions(3, 4), jnp.array([1.0, 2.0]), key=KEY)
  assert float(gap) < 2e-4
  assert jax.jit(rope.grid_positions, static_argnums=(0, 1))(2, 3).shape == (6, 2)


@pytest.mark.parametrize("g", [2, 3, 8, 64])
@pytest.mark.parametrize("scale", [0.05, 1.0, 10.0])
def test_liere_expm_matches_scipy_float64(g, scale):
  """The fixed scaling-and-squaring exponential vs SciPy's float64 expm, over a wide norm range."""
  scipy_linalg = pytest.importorskip("scipy.linalg")
  rng = np.random.default_rng(g)
  w = rng.uniform(0, 2 * np.pi, (1, 1, 6, g, g)) * scale
  pos = jnp.array([[1.0], [0.5], [-2.0]])
  got = np.asarray(rope.liere_rotations(pos, jnp.asarray(w, jnp.float32)))
  s = np.triu(w[0, 0], 1)
  s = s - np.swapaxes(s, -1, -2)
  want = np.stack([[scipy_linalg.expm(p * m) for m in s] for p in (1.0, 0.5, -2.0)])
  np.testing.assert_allclose(got[:, 0], want, atol=1e-4)
  eye = np.eye(g)
  np.testing.assert_allclose(got @ np.swapaxes(got, -1, -2), np.broadcast_to(eye, got.shape),
                             atol=1e-4)


# ------------------------------------------------- Spherical RoPE as two rounds of plane turns

THIRDS = np.arange(12).reshape(4, 3).T.reshape(-1)   # D=12: (3t+i) -> i*4+t


@pytest.mark.parametrize("learned", [False, True])
@pytest.mark.parametrize("layout", ["interleaved", "thirds"])
def test_apply_spherical_equals_reference_matrices_with_gradients(learned, layout):
  key = jax.random.PRNGKey(3)
  freqs = (jax.random.uniform(key, (3, 4, 2)) if learned else rope.spherical_freqs(12))
  axes = rope.grid_axes(3, 5, scale="pi")
  pos = rope.grid_positions(3, 5, scale="pi")
  x = jax.random.normal(key, (2, 15, 3, 12))
  perm = THIRDS if layout == "thirds" else np.arange(12)
  inv = np.argsort(perm)

  def ref(x, f):
    return rope.apply_blocks(x, rope.spherical_rotations(pos, f))

  def ours(x, f, grid):
    tables = (rope.spherical_grid_cos_sin(axes, f) if grid else rope.spherical_cos_sin(pos, f))
    return rope.apply_spherical(x[..., perm], tables, layout=layout,
                                materialize=not grid)[..., inv]

  w = jax.random.normal(jax.random.PRNGKey(4), x.shape)
  g_ref = jax.grad(lambda x, f: jnp.sum(ref(x, f) * w), (0, 1))(x, freqs)
  for grid in (False, True):
    np.testing.assert_allclose(ours(x, freqs, grid), ref(x, freqs), atol=2e-6)
    g = jax.grad(lambda x, f: jnp.sum(ours(x, f, grid) * w), (0, 1))(x, freqs)
    np.testing.assert_allclose(g[0], g_ref[0], atol=2e-5)
    np.testing.assert_allclose(g[1], g_ref[1], rtol=1e-5, atol=1e-4)
  # Orthogonal: norms of every triplet preserved.
  y = ours(x, freqs, True)
  np.testing.assert_allclose(jnp.linalg.norm(y.reshape(2, 15, 3, 4, 3), axis=-1),
                             jnp.linalg.norm(x.reshape(2, 15, 3, 4, 3), axis=-1), rtol=1e-5)


def test_apply_spherical_rejects_bad_input():
  x = jnp.zeros((2, 15, 3, 12))
  tables = rope.spherical_grid_cos_sin(rope.grid_axes(3, 5), rope.spherical_freqs(12))
  with pytest.raises(ValueError, match="`layout`='half' is not supported; allowed: "
                                       "'interleaved', 'thirds'"):
    rope.apply_spherical(x, tables, layout="half")
  with pytest.raises(ValueError, match=r"`tables` \(cos alpha\) must be \[\.\.\., L, 1\|H, D/3\]"):
    rope.apply_spherical(x[:, :14], tables)
  with pytest.raises(ValueError, match="divisible by 3"):
    rope.apply_spherical(jnp.zeros((2, 15, 3, 10)), tables)
  with pytest.raises(ValueError, match="`axes` must be \\(rows, cols\\)"):
    rope.spherical_grid_cos_sin([jnp.arange(3.0)], rope.spherical_freqs(12))


# ------------------------------------------------- vectorised CPU trig (rope/_cpu.py)

@pytest.mark.parametrize("limit", [1.0, 100.0, 5e4])
def test_trig_matches_float64_within_two_ulp(limit):
  from rope import _cpu as _trig
  x = np.random.default_rng(0).uniform(-limit, limit, 200_000).astype(np.float32)
  x[:5] = [0.0, np.pi / 2, -np.pi, 3 * np.pi / 4, -1e-30]
  cos, sin = jax.jit(_trig.cos_sin)(x)
  x64 = x.astype(np.float64)
  assert np.abs(np.asarray(cos, np.float64) - np.cos(x64)).max() < 1.2e-7   # 2 ulp of 1
  assert np.abs(np.asarray(sin, np.float64) - np.sin(x64)).max() < 1.2e-7
  # Position 0 stays exactly the identity: cos 0 = 1, sin 0 = 0.
  assert float(cos[0]) == 1.0 and float(sin[0]) == 0.0


def test_trig_derivatives_are_the_exact_ones():
  from rope import _cpu as _trig
  x = jnp.linspace(-7.0, 7.0, 11)
  dcos = jax.vmap(jax.grad(lambda t: _trig.cos_sin(t)[0]))(x)
  dsin = jax.vmap(jax.grad(lambda t: _trig.cos_sin(t)[1]))(x)
  np.testing.assert_allclose(dcos, -np.sin(np.asarray(x, np.float64)), atol=2e-7)
  np.testing.assert_allclose(dsin, np.cos(np.asarray(x, np.float64)), atol=2e-7)


def test_partial_rotary_passes_the_tail_and_rotates_the_head_like_a_full_table():
  """`rotary_dim < D`: x[..., r:] is untouched; x[..., :r] is `apply` on that slice alone;
  `amplitude` scales only the rotated channels."""
  key = jax.random.PRNGKey(3)
  x = jax.random.normal(key, (2, 10, 3, 64))
  ang = rope.angles(jnp.arange(10.0)[:, None] * 7.0, rope.freqs_1d(16))     # [10, 1, 8]
  for layout in ("half", "interleaved"):
    out = rope.apply(x, ang, layout=layout, rotary_dim=16, amplitude=1.5)
    np.testing.assert_array_equal(out[..., 16:], x[..., 16:])
    head = rope.apply(x[..., :16], ang, layout=layout)
    np.testing.assert_allclose(out[..., :16], 1.5 * head, rtol=1e-6, atol=1e-6)
    assert float(jnp.abs(head - x[..., :16]).max()) > 0.1   # it did rotate
  np.testing.assert_array_equal(rope.apply(x, ang), rope.apply(x, ang, rotary_dim=16))
  # apply_cos_sin: the same rule from the tables' width (the VLM's Qwen3.5 path), bf16 kept.
  cos, sin = jnp.cos(ang), jnp.sin(ang)
  for xx in (x, x.astype(jnp.bfloat16)):
    out = jax.jit(lambda x: rope.apply_cos_sin(x, cos, sin, rotary_dim=16))(xx)
    assert out.dtype == xx.dtype
    np.testing.assert_array_equal(out[..., 16:], xx[..., 16:])
    np.testing.assert_allclose(np.asarray(out, np.float32),
                               np.asarray(rope.apply(xx, ang), np.float32), rtol=1e-6, atol=1e-6)
  assert rope.partial_rotary_dim(256, 0.25) == 64 and rope.partial_rotary_dim(10, 0.5) == 4
