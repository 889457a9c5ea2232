"""Properties of the second-round multimodal variants (docs/spec/multimodal_ext.md).

Text-only sequences reduce to 1-D RoPE where the scheme promises it, zero positions are the
identity, GRAPE's rope-init planes are interleaved RoPE, `orthogonalize=True` is a relative
rotation, and every traceable function jits, vmaps and differentiates.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rope

KEY = jax.random.PRNGKey(0)
D = 32
THETA = 1e6
TEXT = [rope.Text(7)]


def qk(key, n, d=D, heads=2):
  kq, kk = jax.random.split(key)
  return (jax.random.normal(kq, (n, heads, d), jnp.float32),
          jax.random.normal(kk, (n, heads, d), jnp.float32))


def one_d(n, d=D, theta=THETA):
  """1-D RoPE angles of tokens 0..n-1: `[n, 1, d/2]`."""
  return rope.angles(jnp.arange(n, dtype=jnp.float32)[:, None], rope.freqs_1d(d, theta))


TABLES = {
    # scheme used for the positions, table; all read one axis per pair at its 1-D frequency.
    "ilrope": ("ilrope", lambda: rope.freqs_mrope_interleaved(D, THETA, (6, 5, 5))),
    "omnirope": ("omnirope", lambda: rope.freqs_mrope(D, THETA, (4, 6, 6))),
    "mmrope": ("mmrope", lambda: rope.freqs_mmrope(D, THETA)),
    "grape_chunked": ("mrope", lambda: rope.freqs_mrope(D, THETA ** 0.5, (4, 6, 6))),
    "grape_cyclic": ("mrope", lambda: rope.freqs_cyclic(D, THETA)),
    "videorope_repo": ("videorope", lambda: rope.freqs_videorope(D, THETA, (4, 6, 6),
                                                                 allocation="repo")),
}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_text_only_is_1d_rope(name):
  scheme, build = TABLES[name]
  pos, nxt = rope.multimodal_positions(TEXT, scheme)
  assert nxt == 7
  freqs = build()
  ref = rope.angles(jnp.arange(7.0)[:, None], jnp.asarray(freqs).sum(-1, keepdims=True))
  np.testing.assert_array_equal(rope.angles(pos, freqs), ref)
  if name != "grape_chunked":                          # warped ladder: base theta ** 0.5
    np.testing.assert_allclose(rope.angles(pos, freqs), one_d(7), rtol=1e-6)


def test_text_only_positions_of_new_schemes_and_options():
  for scheme, kw in [("hope", {"temporal_scale": 0.5}), ("ilrope", {"temporal_stride": 2.0}),
                     ("omnirope", {}), ("mmrope", {"position_scale": (4, 8, 8)}),
                     ("mrope", {"seconds_per_grid": 0.5, "tokens_per_second": 25})]:
    pos, nxt = rope.multimodal_positions(TEXT, scheme, **kw)
    np.testing.assert_array_equal(pos, np.repeat(np.arange(7.0)[:, None], 3, 1))
    assert nxt == 7


def test_hope_text_loses_only_its_nope_pairs():
  """HoPE (reference code) is not 1-D RoPE on text: its t pairs (incl. pair 0) carry no angle."""
  pos, _ = rope.multimodal_positions(TEXT, "hope")
  a = np.asarray(rope.angles(pos, rope.freqs_hope(D, THETA, (4, 6, 6))))
  axes = np.argmax(np.asarray(rope.freqs_videorope(D, THETA, (4, 6, 6), allocation="repo")) != 0,
                   -1)
  assert axes[0] == 0 and not a[..., axes == 0].any()
  np.testing.assert_allclose(a[..., axes != 0], np.asarray(one_d(7))[..., axes != 0], rtol=1e-6)
  orig = np.asarray(rope.freqs_hope(D, THETA, (4, 6, 6), allocation="original"))
  assert orig[0].any() and not orig[-4:].any()        # the paper: only the lowest frequencies


def test_qwen35_partial_text_only_is_partial_1d_rope():
  r = rope.partial_rotary_dim(64, 0.25)
  pos, _ = rope.multimodal_positions(TEXT, "mrope")
  freqs = rope.freqs_mrope_interleaved(r, 1e7, (3, 3, 2))
  q, _ = qk(KEY, 7, d=64)
  out = rope.apply(q, rope.angles(pos, freqs), layout="half")
  ref = rope.apply(q, one_d(7, r, 1e7), layout="half")
  np.testing.assert_allclose(out, ref, atol=1e-6)
  np.testing.assert_array_equal(out[..., r:], q[..., r:])


def test_hope_temporal_scale_per_visual_segment():
  seg = [rope.Text(2), rope.Video(3, 2, 2), rope.Text(1), rope.Video(2, 1, 1), rope.Text(1)]
  pos, nxt = rope.multimodal_positions(seg, "hope", temporal_scale=[0.5, 1.5])
  t = pos[2:14, 0].reshape(3, 4)[:, 0]
  np.testing.assert_array_equal(t, [2.0, 2.5, 3.0])   # cur + tau * 0.5
  assert pos[14, 0] == 4.0                             # max(t') + 1
  np.testing.assert_array_equal(pos[15:, 0], [5.0, 6.5, 7.5])   # gamma 1.5, then text
  assert nxt == 8.5
  # A scalar is the same as repeating it; a draw from a JAX key can be passed as an array.
  gam = jax.random.choice(KEY, jnp.array([0.5, 0.75, 1.0, 1.25, 1.5]), (2,))
  a = rope.multimodal_positions(seg, "hope", temporal_scale=gam)[0]
  b = rope.multimodal_positions(seg, "hope", temporal_scale=[float(gam[0]), float(gam[1])])[0]
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(rope.multimodal_positions(seg, "hope", temporal_scale=2.0)[0],
                                rope.multimodal_positions(seg, "hope",
                                                          temporal_scale=[2.0, 2.0])[0])


def test_hope_gamma_one_is_videorope_layout_with_unit_stride():
  seg = [rope.Text(3), rope.Video(2, 3, 4), rope.Text(2)]
  np.testing.assert_array_equal(
      rope.multimodal_positions(seg, "hope")[0],
      rope.multimodal_positions(seg, "videorope", temporal_stride=1.0)[0])


def test_mrope_time_rounding_rules():
  seg = [rope.Text(1), rope.Video(4, 1, 1), rope.Text(1)]
  t = lambda **kw: rope.multimodal_positions(seg, "mrope", **kw)[0][1:5, 0] - 1
  np.testing.assert_array_equal(t(seconds_per_grid=0.5, tokens_per_second=25), [0, 12, 25, 37])
  np.testing.assert_array_equal(
      t(seconds_per_grid=0.5, tokens_per_second=25, time_rounding="int_seconds"), [0, 0, 0, 0])
  np.testing.assert_array_equal(
      t(seconds_per_grid=1.5, tokens_per_second=2, time_rounding="int_seconds"), [0, 2, 4, 6])
  np.testing.assert_array_equal(t(seconds_per_grid=1.0), t(temporal_stride=2.0))


# ----------------------------------------------------------------------------- zero positions


@pytest.mark.parametrize("build", [
    lambda: rope.freqs_hope(D, THETA, (4, 6, 6)), lambda: rope.freqs_mmrope(D, THETA),
    lambda: rope.freqs_cyclic(D, THETA), lambda: rope.freqs_videorope(D, THETA, (4, 6, 6),
                                                                      allocation="repo"),
])
def test_zero_positions_are_identity_tables(build):
  q, _ = qk(KEY, 5)
  out = rope.apply(q, rope.angles(jnp.zeros((5, 3)), build()), layout="half")
  np.testing.assert_array_equal(out, q)


@pytest.mark.parametrize("mode", rope.grape.GRAPE_MODES)
@pytest.mark.parametrize("rope_init", [True, False])
def test_zero_positions_are_identity_grape(mode, rope_init):
  params = rope.init_grape(KEY, D, mode, block_size=8, rope_init=rope_init)
  pf = rope.grape_plane_freqs(D, THETA, mode, block_size=8)
  q, _ = qk(KEY, 5, d=D + 4)                           # 4 pass-through channels
  for ortho in (False, True):
    out = rope.grape_rotate(q, jnp.zeros((5, 3)), params, pf, mode=mode, orthogonalize=ortho)
    np.testing.assert_allclose(out, q, atol=1e-6)


# ----------------------------------------------------------------------------- GRAPE


def mm_positions():
  seg = [rope.Text(3), rope.Video(2, 2, 3), rope.Text(2)]
  return jnp.asarray(rope.multimodal_positions(seg, "mrope")[0])


@pytest.mark.parametrize("mode,kw", [("mixed", {}), ("block_mixed", {}),
                                     ("block_mixed", {"planes_per_block": 2}),
                                     ("mixed", {"num_planes": 8}), ("axis", {})])
def test_grape_rope_init_is_interleaved_rope(mode, kw):
  pos = mm_positions()
  q, _ = qk(KEY, pos.shape[0], d=D)
  params = rope.init_grape(None, D, mode, block_size=8, **kw)
  pf = np.asarray(rope.grape_plane_freqs(D, THETA, mode, block_size=8, **kw)).reshape(-1)
  # Pair index of each plane (block mode: planes 0..ppb-1 of each block of 8 channels).
  if mode == "block_mixed":
    ppb = kw.get("planes_per_block", 4)
    pairs = (np.arange(D // 8)[:, None] * 4 + np.arange(ppb)[None]).reshape(-1)
  else:
    pairs = np.arange(pf.shape[0])
  freqs = np.zeros((D // 2, 3), np.float32)
  if mode == "axis":
    freqs[pairs] = pf[:, None]                         # every pair turns by (t + h + w) f
  else:
    freqs[pairs, np.arange(len(pairs)) % 3] = pf
  ref = rope.apply(q, rope.angles(pos, freqs), layout="interleaved")
  out = rope.grape_rotate(q, pos, params, pf.reshape(np.shape(
      rope.grape_plane_freqs(D, THETA, mode, block_size=8, **kw))), mode=mode)
  np.testing.assert_allclose(out, ref, atol=2e-5)
  ortho = rope.grape_rotate(q, pos, params, rope.grape_plane_freqs(D, THETA, mode, block_size=8,
                                                                    **kw),
                            mode=mode, orthogonalize=True)
  np.testing.assert_allclose(ortho, out, atol=2e-5)


def test_grape_rope_init_mixed_equals_block_mixed():
  pos = mm_positions()
  q, _ = qk(KEY, pos.shape[0], d=64)
  a = rope.grape_rotate(q, pos, rope.init_grape(None, 64, "mixed"),
                        rope.grape_plane_freqs(64, THETA, "mixed"), mode="mixed")
  b = rope.grape_rotate(q, pos, rope.init_grape(None, 64, "block_mixed"),
                        rope.grape_plane_freqs(64, THETA, "block_mixed"), mode="block_mixed")
  np.testing.assert_allclose(a, b, atol=1e-6)


def random_grape(mode, key=KEY):
  params = rope.init_grape(key, D, mode, block_size=8, rope_init=False)
  return params, rope.grape_plane_freqs(D, THETA, mode, block_size=8)


@pytest.mark.parametrize("mode", rope.grape.GRAPE_MODES)
def test_grape_orthogonalize_preserves_norms(mode):
  params, pf = random_grape(mode)
  pos = mm_positions()
  q, _ = qk(jax.random.PRNGKey(1), pos.shape[0])
  norm = jnp.linalg.norm(q, axis=-1)
  ortho = rope.grape_rotate(q, pos, params, pf, mode=mode, orthogonalize=True)
  np.testing.assert_allclose(jnp.linalg.norm(ortho, axis=-1), norm, rtol=2e-5)
  ref = rope.grape_rotate(q, pos, params, pf, mode=mode)    # the reference's map does not
  assert np.abs(np.asarray(jnp.linalg.norm(ref, axis=-1) / norm) - 1).max() > 1e-2


@pytest.mark.parametrize("mode", ["mixed", "block_mixed"])
def test_grape_orthogonalize_is_shift_equivariant(mode):
  params, pf = random_grape(mode)
  pos = mm_positions() * 0.1
  shift = jnp.array([3.0, -2.0, 5.0])

  def gap(ortho):
    return rope.relative_logit_gap(
        lambda x, p: rope.grape_rotate(x, p, params, pf, mode=mode, orthogonalize=ortho),
        pos, shift, key=jax.random.PRNGKey(2), head_dim=D)

  assert float(gap(True)) < 1e-4
  assert float(gap(False)) > 1e-2                      # random planes: not relative


# ----------------------------------------------------------------------------- jit / vmap / grad


@pytest.mark.parametrize("mode", rope.grape.GRAPE_MODES)
def test_grape_jit_vmap_grad(mode):
  params, pf = random_grape(mode)
  pos = mm_positions()
  q, _ = qk(KEY, pos.shape[0])
  f = jax.jit(functools.partial(rope.grape_rotate, mode=mode, orthogonalize=True))
  np.testing.assert_allclose(f(q, pos, params, pf),
                             rope.grape_rotate(q, pos, params, pf, mode=mode, orthogonalize=True),
                             atol=1e-5)
  # vmap over a batch of sequences (positions and x) and over parameter sets.
  batch = jax.vmap(lambda x, p: rope.grape_rotate(x, p, params, pf, mode=mode))(
      jnp.stack([q, 2 * q]), jnp.stack([pos, pos + 1]))
  np.testing.assert_allclose(batch[1], rope.grape_rotate(2 * q, pos + 1, params, pf, mode=mode),
                             atol=1e-5)
  keys = jax.random.split(KEY, 2)
  many = jax.vmap(lambda k: rope.grape_rotate(
      q, pos, rope.init_grape(k, D, mode, block_size=8, rope_init=False), pf, mode=mode))(keys)
  assert many.shape == (2,) + q.shape
  for ortho in (False, True):
    loss = lambda prm, x: jnp.sum(jnp.sin(rope.grape_rotate(x, pos, prm, pf, mode=mode,
                                                            orthogonalize=ortho)))
    gp, gx = jax.grad(loss, argnums=(0, 1))(params, q)
    leaves = jax.tree_util.tree_leaves(gp)
    assert all(np.isfinite(np.asarray(v)).all() for v in leaves + [gx])
    assert any(np.abs(np.asarray(v)).max() > 0 for v in leaves)


def test_init_grape_jits_and_vmaps():
  f = jax.jit(functools.partial(rope.init_grape, head_dim=D, mode="mixed", rope_init=False))
  a = f(KEY)
  b = rope.init_grape(KEY, D, "mixed", rope_init=False)
  jax.tree_util.tree_map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-6), a, b)
  batch = jax.vmap(lambda k: rope.init_grape(k, D, "block_mixed", block_size=8,
                                             rope_init=False))(jax.random.split(KEY, 3))
  assert batch["a"].shape == (3, D // 8, 4, 8)
  assert float(jnp.std(b["a"])) == pytest.approx(0.02, rel=0.3)


@pytest.mark.parametrize("build", [
    lambda: rope.freqs_hope(D, THETA, (4, 6, 6)), lambda: rope.freqs_mmrope(D, THETA),
    lambda: rope.freqs_cyclic(D, THETA),
    lambda: rope.freqs_videorope(D, THETA, (4, 6, 6), allocation="repo"),
    lambda: rope.freqs_mrope(D, THETA ** (1 / 2.0), (4, 6, 6)),
])
def test_tables_jit_vmap_grad(build):
  pos = mm_positions()
  q, _ = qk(KEY, pos.shape[0])

  def rot(x, p):
    return rope.apply(x, rope.angles(p, build()), layout="half")

  np.testing.assert_allclose(jax.jit(rot)(q, pos), rot(q, pos), atol=1e-6)
  batch = jax.vmap(rot)(jnp.stack([q, q]), jnp.stack([pos, pos + 1]))
  np.testing.assert_allclose(batch[1], rot(q, pos + 1), atol=1e-5)
  g = jax.grad(lambda p: jnp.sum(rot(q, p) ** 3))(pos)
  assert np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).max() > 0


def test_partial_rotary_apply_jit_vmap_grad():
  r = rope.partial_rotary_dim(64, 0.25)
  pos = mm_positions()
  q, _ = qk(KEY, pos.shape[0], d=64)
  freqs = rope.freqs_mrope_interleaved(r, 1e7, (3, 3, 2))

  def rot(x, p):
    return rope.apply(x, rope.angles(p, freqs), layout="half", rotary_dim=r)

  np.testing.assert_allclose(jax.jit(rot)(q, pos), rot(q, pos), atol=1e-6)
  np.testing.assert_allclose(jax.vmap(rot)(q[None], pos[None])[0], rot(q, pos), atol=1e-6)
  gx = jax.grad(lambda x: jnp.sum(rot(x, pos) * q))(q)
  np.testing.assert_allclose(gx[..., r:], q[..., r:], atol=1e-6)   # identity on the tail
