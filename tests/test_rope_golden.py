"""`rope` against reference vectors produced by the upstream implementations.

The .npz files in tests/golden/ were made by rope-vit, LieRE, CARE (Spherical RoPE),
transformers (Qwen2-VL / Qwen3-VL), the official Multimodal-RoPEs repo and the official
Circle-RoPE code; their READMEs give the exact upstream calls. Upstream tensors are
[B, H, N, D]; `rope` uses [..., L, H, D], hence the transposes.
"""
import json
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

import rope

GOLDEN = pathlib.Path(__file__).parent / "golden"
POS_TOL = 1e-5
ROT_TOL = 1e-4


def load(name):
  return dict(np.load(GOLDEN / name))


def bhnd_to_blhd(x):
  return np.swapaxes(x, 1, 2)


def logits(q_blhd, k_blhd):
  q, k = np.swapaxes(q_blhd, 1, 2), np.swapaxes(k_blhd, 1, 2)   # [B, H, L, D]
  return (q * q.shape[-1] ** -0.5) @ np.swapaxes(k, -1, -2)


def with_cls(pos):
  """Prepends the cls token at position 0 (every rotation is the identity there)."""
  return jnp.concatenate([jnp.zeros((1, pos.shape[-1])), pos], 0)


# ----------------------------------------------------------------------------- vision


def test_ropevit_axial():
  g = load("vision_rope/ropevit_axial_hd64.npz")
  freqs = rope.freqs_axial(64, theta=100.0)
  pos = rope.grid_positions(4, 6, scale="index")
  np.testing.assert_allclose(pos[:, 1], g["t_x"], atol=0)
  np.testing.assert_allclose(pos[:, 0], g["t_y"], atol=0)
  ang = rope.angles(pos, freqs)[:, 0]
  np.testing.assert_allclose(np.cos(ang), g["freqs_cis_real"], atol=POS_TOL)
  np.testing.assert_allclose(np.sin(ang), g["freqs_cis_imag"], atol=POS_TOL)
  full = with_cls(pos)
  a = rope.angles(full, freqs)
  q = rope.apply(bhnd_to_blhd(g["q"]), a, layout="interleaved")
  k = rope.apply(bhnd_to_blhd(g["k"]), a, layout="interleaved")
  np.testing.assert_allclose(q, bhnd_to_blhd(g["q_out_full"]), atol=POS_TOL)
  np.testing.assert_allclose(k, bhnd_to_blhd(g["k_out_full"]), atol=POS_TOL)
  np.testing.assert_allclose(logits(q, k), g["attn_logits"], atol=ROT_TOL)
  # Patch tokens only, rotated without a cls slot, and the larger grid (integer extension).
  qp = rope.apply(bhnd_to_blhd(g["q"][:, :, 1:]), ang[:, None], layout="interleaved")
  np.testing.assert_allclose(qp, bhnd_to_blhd(g["q_out_patch"]), atol=POS_TOL)
  big = rope.angles(rope.grid_positions(6, 8, scale="index"), freqs)[:, 0]
  np.testing.assert_allclose(np.cos(big), g["freqs_cis_big_real"], atol=POS_TOL)
  np.testing.assert_allclose(np.sin(big), g["freqs_cis_big_imag"], atol=POS_TOL)


def ropevit_mixed_to_rope(f):
  """rope-vit's per-layer `[2 (x, y), H, D/2]` -> `[H, D/2, 2 (row, col)]`."""
  return np.ascontiguousarray(f.transpose(1, 2, 0)[..., ::-1])


def test_ropevit_mixed():
  g = load("vision_rope/ropevit_mixed_hd64.npz")
  pos = rope.grid_positions(4, 6, scale="index")
  for layer in range(3):
    freqs = ropevit_mixed_to_rope(g["freqs_model"][:, layer].reshape(2, 2, 32))
    ang = np.swapaxes(rope.angles(pos, freqs), 0, 1)                     # [H, L, D/2]
    np.testing.assert_allclose(np.cos(ang), g["freqs_cis_model_real"][layer], atol=POS_TOL)
    np.testing.assert_allclose(np.sin(ang), g["freqs_cis_model_imag"][layer], atol=POS_TOL)
    big = np.swapaxes(rope.angles(rope.grid_positions(6, 8), freqs), 0, 1)
    np.testing.assert_allclose(np.cos(big), g["freqs_cis_big_real"][layer], atol=POS_TOL)
  freqs = ropevit_mixed_to_rope(g["freqs_single"])
  a = rope.angles(with_cls(pos), freqs)
  q = rope.apply(bhnd_to_blhd(g["q"]), a, layout="interleaved")
  k = rope.apply(bhnd_to_blhd(g["k"]), a, layout="interleaved")
  np.testing.assert_allclose(q, bhnd_to_blhd(g["q_out_full"]), atol=POS_TOL)
  np.testing.assert_allclose(k, bhnd_to_blhd(g["k_out_full"]), atol=POS_TOL)
  np.testing.assert_allclose(logits(q, k), g["attn_logits"], atol=ROT_TOL)


def test_init_mixed_freqs_structure_reproduces_ropevit():
  """A JAX key can't redraw torch's angles: check the init's structure on the stored angles."""
  g = load("vision_rope/ropevit_mixed_hd64.npz")
  freqs = rope.init_mixed_freqs(jax_key(0), 2, 64, theta=10.0)
  m = 10.0 ** (-4 * np.arange(16) / 64)
  a = np.arctan2(freqs[:, 0, 0], freqs[:, 0, 1])                  # (sin a, cos a) in row 0
  expected = np.concatenate([
      np.stack([m * np.sin(a)[:, None], m * np.cos(a)[:, None]], -1),
      np.stack([m * np.cos(a)[:, None], -m * np.sin(a)[:, None]], -1)], 1)
  np.testing.assert_allclose(freqs, expected, atol=1e-6)
  # The same formula with rope-vit's stored angles gives rope-vit's stored frequencies.
  a = g["init_angles"]
  expected = np.concatenate([
      np.stack([m * np.sin(a)[:, None], m * np.cos(a)[:, None]], -1),
      np.stack([m * np.cos(a)[:, None], -m * np.sin(a)[:, None]], -1)], 1)
  np.testing.assert_allclose(expected, ropevit_mixed_to_rope(g["freqs_single"]), atol=1e-5)
  # rotate=False is RoPE-Axial with theta 10.
  np.testing.assert_allclose(rope.freqs_axial(64, theta=10.0),
                             ropevit_mixed_to_rope(g["freqs_rotate_false"])[0], atol=1e-6)


def jax_key(seed):
  import jax
  return jax.random.PRNGKey(seed)


def test_liere_g8():
  g = load("vision_rope/liere_hd64_g8.npz")
  params = g["generator_raw_params"][:, 0].reshape(2, 2, 8, 8, 8)
  np.testing.assert_allclose(rope.liere_generators(params),
                             g["skew_bases"][:, 0].reshape(2, 2, 8, 8, 8), atol=1e-6)
  pos = rope.grid_positions(4, 6, scale="unit")
  np.testing.assert_allclose(pos, g["positions"][0], atol=POS_TOL)
  np.testing.assert_allclose(rope.grid_positions(8, 12, scale="unit", train_size=(4, 6)),
                             g["positions_big"][0], atol=POS_TOL)
  rot = rope.liere_rotations(pos, params)
  np.testing.assert_allclose(rot, g["rotations"][0, 1:, 0].reshape(24, 2, 8, 8, 8), atol=5e-5)
  full_rot = rope.liere_rotations(with_cls(pos), params)
  q = rope.apply_blocks(bhnd_to_blhd(g["q"]), full_rot)
  k = rope.apply_blocks(bhnd_to_blhd(g["k"]), full_rot)
  np.testing.assert_allclose(q, bhnd_to_blhd(g["q_out"]), atol=ROT_TOL)
  np.testing.assert_allclose(k, bhnd_to_blhd(g["k_out"]), atol=ROT_TOL)
  np.testing.assert_allclose(logits(q, k), g["attn_logits"], atol=ROT_TOL)


def test_liere_shift_gap_matches_reference_measurement():
  """vision_rope README: the (+0.25, -0.1) shift changes patch logits by up to 2.659."""
  g = load("vision_rope/liere_hd64_g8.npz")
  params = g["generator_raw_params"][:, 0].reshape(2, 2, 8, 8, 8)
  pos = rope.grid_positions(4, 6, scale="unit")
  q, k = bhnd_to_blhd(g["q"][:, :, 1:]), bhnd_to_blhd(g["k"][:, :, 1:])

  def patch_logits(p):
    r = rope.liere_rotations(p, params)
    return logits(rope.apply_blocks(q, r), rope.apply_blocks(k, r))

  gap = np.abs(patch_logits(pos + jnp.array([0.25, -0.1])) - patch_logits(pos)).max()
  np.testing.assert_allclose(gap, 2.659, atol=2e-3)


def test_spherical_fixed():
  g = load("vision_rope/spherical_fixed_hd63.npz")
  freqs = rope.spherical_freqs(63, theta=100.0)
  np.testing.assert_allclose(freqs, g["theta_d"], atol=1e-6)
  pos = rope.grid_positions(4, 6, scale="pi")
  np.testing.assert_allclose(pos, g["pos"][:, ::-1], atol=POS_TOL)
  pos_big = rope.grid_positions(8, 12, scale="pi", train_size=(4, 6))
  np.testing.assert_allclose(pos_big, g["pos_big"][:, ::-1], atol=POS_TOL)
  rot = rope.spherical_rotations(with_cls(pos), freqs)
  q = rope.apply_blocks(bhnd_to_blhd(g["q"]), rot)
  k = rope.apply_blocks(bhnd_to_blhd(g["k"]), rot)
  np.testing.assert_allclose(q, bhnd_to_blhd(g["q_out_full"]), atol=POS_TOL)
  np.testing.assert_allclose(k, bhnd_to_blhd(g["k_out_full"]), atol=POS_TOL)
  np.testing.assert_allclose(logits(q, k), g["attn_logits"], atol=ROT_TOL)
  qb = rope.apply_blocks(bhnd_to_blhd(g["q_big"][:, :, 1:]), rope.spherical_rotations(pos_big, freqs))
  np.testing.assert_allclose(qb, bhnd_to_blhd(g["q_big_out_patch"]), atol=POS_TOL)
  # The fast form (two rounds of plane rotations from cos / sin tables), in both layouts.
  q2 = rope.apply_spherical(bhnd_to_blhd(g["q"]), rope.spherical_cos_sin(with_cls(pos), freqs))
  np.testing.assert_allclose(q2, bhnd_to_blhd(g["q_out_full"]), atol=POS_TOL)
  thirds = np.arange(63).reshape(21, 3).T.reshape(-1)       # (u's, v's, w's)
  qg = rope.apply_spherical(bhnd_to_blhd(g["q_big"][:, :, 1:])[..., thirds],
                            rope.spherical_grid_cos_sin(rope.grid_axes(8, 12, scale="pi",
                                                                       train_size=(4, 6)), freqs),
                            layout="thirds", materialize=False)
  np.testing.assert_allclose(qg[..., np.argsort(thirds)], bhnd_to_blhd(g["q_big_out_patch"]),
                             atol=POS_TOL)
  # Shift gap measured with the reference's q, k: (row, col) += (0.37, -0.21) -> 0.842.
  qp, kp = bhnd_to_blhd(g["q"][:, :, 1:]), bhnd_to_blhd(g["k"][:, :, 1:])

  def patch_logits(p):
    r = rope.spherical_rotations(p, freqs)
    return logits(rope.apply_blocks(qp, r), rope.apply_blocks(kp, r))

  gap = np.abs(patch_logits(pos + jnp.array([0.37, -0.21])) - patch_logits(pos)).max()
  np.testing.assert_allclose(gap, 0.842, atol=2e-3)


def test_spherical_order_is_non_commuting():
  """M_u(-1.1) M_v(0.7) - M_v(0.7) M_u(-1.1) has max-abs entry 0.574 (README)."""
  # A single triplet with row-frequency 1, col-frequency 0 gives M_v(row); the reverse M_u(col).
  f_row = jnp.array([[[1.0, 0.0]]])
  f_col = jnp.array([[[0.0, 1.0]]])
  m_v = rope.spherical_rotations(jnp.array([[0.7, 0.0]]), f_row)[0, 0, 0]
  m_u = rope.spherical_rotations(jnp.array([[0.0, -1.1]]), f_col)[0, 0, 0]
  both = rope.spherical_rotations(jnp.array([[0.7, -1.1]]), jnp.array([[[1.0, 1.0]]]))[0, 0, 0]
  np.testing.assert_allclose(both, m_u @ m_v, atol=1e-6)
  np.testing.assert_allclose(np.abs(m_u @ m_v - m_v @ m_u).max(), 0.574, atol=1e-3)


# ----------------------------------------------------------------------------- multimodal

CASE1 = [rope.Text(5), rope.Image(4, 6), rope.Text(3)]
MM_VARIANTS = {
    # name: (positions key, scheme, theta, freqs builder per head_dim)
    "mrope": ("pos.mrope", "mrope", 1e6,
              {128: (16, 24, 24), 64: (8, 12, 12)}, rope.freqs_mrope),
    "mropei_qwen3": ("pos.qwen3vl", "mrope", 5e6,
                     {128: (24, 20, 20), 64: (11, 11, 10)}, rope.freqs_mrope_interleaved),
    "mropei_sr": ("pos.spatial_reset", "spatial_reset", 1e6,
                  {128: (24, 20, 20), 64: (11, 11, 10)}, rope.freqs_mrope_interleaved),
}


@pytest.mark.parametrize("scheme,key,delta", [
    ("mrope", "pos.mrope", "rope_delta.mrope"),
    ("mrope", "pos.qwen3vl", "rope_delta.qwen3vl"),
    ("spatial_reset", "pos.spatial_reset", "rope_delta.spatial_reset"),
])
def test_multimodal_positions_hf(scheme, key, delta):
  g = load("multimodal_rope/case1_image.npz")
  pos, nxt = rope.multimodal_positions(CASE1, scheme)
  assert pos.dtype == np.float32 and pos.shape == (32, 3)
  np.testing.assert_array_equal(pos, g[key].T)
  assert nxt - 32 == g[delta]


@pytest.mark.parametrize("scheme,key,options", [
    ("vanilla", "vanilla-rope", {}),
    ("videorope", "videorope", {}),
    ("v2pe", "v2pe", {}),
    ("spatial_reset", "ilrope", {}),
    ("spatial_reset", "omnirope", {}),
    # The repo's circle test config: dff_rate=True = weight 1.0 on the un-circled grid.
    ("circle", "circlerope", {"dff_rate": True}),
])
def test_multimodal_positions_repo(scheme, key, options):
  g = load("multimodal_rope/case1_image.npz")
  pos, _ = rope.multimodal_positions(CASE1, scheme, **options)
  np.testing.assert_allclose(pos, g["pos.repo." + key].T, atol=POS_TOL)


def test_multimodal_next_positions_worked_example():
  """multimodal_rope.md §2.2: after the image, VideoRoPE's text is 6, 7, 8 and V2PE's 21, 22, 23."""
  assert rope.multimodal_positions(CASE1, "videorope")[1] == 9
  assert rope.multimodal_positions(CASE1, "v2pe")[1] == 24
  assert rope.multimodal_positions(CASE1, "vanilla")[1] == 32


@pytest.mark.parametrize("name", sorted(MM_VARIANTS))
@pytest.mark.parametrize("d", [64, 128])
def test_multimodal_cos_sin_and_rotation(name, d):
  g = load("multimodal_rope/case1_image.npz")
  key, scheme, theta, sections, build = MM_VARIANTS[name]
  freqs = build(d, theta=theta, sections=sections[d])
  np.testing.assert_array_equal(np.argmax(np.asarray(freqs) != 0, -1),
                                g[f"axis_of_pair.{name}.d{d}"])
  np.testing.assert_allclose(np.asarray(freqs).sum(-1), g[f"inv_freq.{name}.d{d}"], rtol=1e-6)
  pos = g[key].T
  a = rope.angles(pos, freqs)
  assert a.shape == (32, 1, d // 2)
  full = np.concatenate([a, a], -1)[:, 0]
  np.testing.assert_allclose(np.cos(full), g[f"cos.{name}.d{d}"], atol=2e-5)
  np.testing.assert_allclose(np.sin(full), g[f"sin.{name}.d{d}"], atol=2e-5)
  q = rope.apply(bhnd_to_blhd(g[f"q.d{d}"]), a, layout="half")
  k = rope.apply(bhnd_to_blhd(g[f"k.d{d}"]), a, layout="half")
  np.testing.assert_allclose(q, bhnd_to_blhd(g[f"q_rot.{name}.d{d}"]), atol=2e-5)
  np.testing.assert_allclose(k, bhnd_to_blhd(g[f"k_rot.{name}.d{d}"]), atol=2e-5)


@pytest.mark.parametrize("d", [64, 128])
def test_mhrope(d):
  g = load("multimodal_rope/case1_image.npz")
  freqs = rope.freqs_multi_head(8, d, theta=1e6, head_sections=(2, 3, 3))
  np.testing.assert_array_equal(np.argmax(np.asarray(freqs)[:, 0] != 0, -1),
                                g["axis_of_kv_head.mhrope"])
  a = rope.angles(g["pos.spatial_reset"].T, freqs)                      # [L, 8, D/2]
  full = np.swapaxes(np.concatenate([a, a], -1), 0, 1)                  # [8, L, D]
  np.testing.assert_allclose(np.cos(full), g[f"cos.mhrope.d{d}"], atol=2e-5)
  np.testing.assert_allclose(np.sin(full), g[f"sin.mhrope.d{d}"], atol=2e-5)
  if d == 128:
    aq = rope.angles(g["pos.spatial_reset"].T, jnp.repeat(freqs, 2, axis=0))
    q = rope.apply(bhnd_to_blhd(g["q_mh.d128"]), aq, layout="half")
    np.testing.assert_allclose(q, bhnd_to_blhd(g["q_rot.mhrope.d128"]), atol=2e-5)


def test_multimodal_meta_is_case1():
  g = load("multimodal_rope/case1_image.npz")
  meta = json.loads(str(g["meta_json"]))
  assert isinstance(meta, dict)
  np.testing.assert_array_equal(g["image_grid_thw"], [[1, 8, 12]])


# ----------------------------------------------------------------------------- Circle-RoPE


def test_circle_offsets_and_cip_stages():
  g = load("circle_rope/case1_text5_img1x4x6_text3.npz")
  off = rope.circle_offsets(4, 6)
  np.testing.assert_allclose(off, g["cip0_ids_thw"].T, atol=POS_TOL)
  np.testing.assert_allclose(off.sum(-1), 0, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(off, axis=-1), 10.0, atol=1e-5)
  proj = g["cip0_projected_whz"]                                        # (w, h, t) x [4, 6]
  np.testing.assert_allclose(off[:, ::-1].T.reshape(3, 4, 6), proj, atol=POS_TOL)


@pytest.mark.parametrize("fname,alpha", [
    ("case1_text5_img1x4x6_text3.npz", 0.5), ("case6_variant_alpha0.npz", 0.0)])
def test_circle_positions(fname, alpha):
  g = load("circle_rope/" + fname)
  pos, nxt = rope.multimodal_positions(CASE1, "circle", alpha=alpha)
  np.testing.assert_allclose(pos, g["position_ids_circle"][:, 0].T, atol=POS_TOL)
  np.testing.assert_allclose(nxt - 32, g["rope_deltas_circle"][0, 0], atol=POS_TOL)
  pos_m, nxt_m = rope.multimodal_positions(CASE1, "mrope")
  np.testing.assert_array_equal(pos_m, g["position_ids_mrope"][:, 0].T)
  assert nxt_m - 32 == g["rope_deltas_mrope"][0, 0]


def test_circle_rotation_and_logits():
  g = load("circle_rope/case1_text5_img1x4x6_text3.npz")
  freqs = rope.freqs_mrope(128, theta=1e6, sections=(16, 24, 24))
  np.testing.assert_allclose(np.asarray(freqs).sum(-1), g["inv_freq"], rtol=1e-6)
  for which in ("circle", "mrope"):
    pos, _ = rope.multimodal_positions(CASE1, which)
    a = rope.angles(pos, freqs)
    full = np.concatenate([a, a], -1)[:, 0]
    np.testing.assert_allclose(np.cos(full), g[f"cos_{which}"][0], atol=2e-5)
    np.testing.assert_allclose(np.sin(full), g[f"sin_{which}"][0], atol=2e-5)
    q = rope.apply(bhnd_to_blhd(g["q"]), a, layout="half")
    k = rope.apply(bhnd_to_blhd(g["k"]), a, layout="half")
    np.testing.assert_allclose(q, bhnd_to_blhd(g[f"q_rot_{which}"]), atol=ROT_TOL)
    np.testing.assert_allclose(k, bhnd_to_blhd(g[f"k_rot_{which}"]), atol=ROT_TOL)
    np.testing.assert_allclose(logits(q, k), g[f"logits_{which}"], atol=ROT_TOL)


def test_age_schedule_matches_released_strategy_4():
  g = load("circle_rope/case1_text5_img1x4x6_text3.npz")
  np.testing.assert_array_equal(rope.age_schedule(36, "alternate"), g["age_layer_uses_circle"])
  np.testing.assert_array_equal(rope.age_schedule(36, "lower"), np.arange(36) < 18)
  np.testing.assert_array_equal(rope.age_schedule(36, "upper"), np.arange(36) >= 18)
  assert rope.age_schedule(5, "all").all()


def test_ptd_reference_values():
  """circle_rope.md §3 / §7: the reported and reproduced PTD values."""
  g = load("circle_rope/case1_text5_img1x4x6_text3.npz")
  text = np.r_[0:5, 29:32]
  image = np.r_[5:29]
  pc = g["position_ids_circle"][:, 0].T
  pm = g["position_ids_mrope"][:, 0].T
  assert float(rope.ptd(pc[text], pc[image])) < 1e-5
  np.testing.assert_allclose(rope.ptd(pm[text], pm[image]), 1.0181, atol=1e-4)
  # 1-D: 9 consecutive image ids, 5 text ids outside -> exactly 20/9.
  np.testing.assert_allclose(
      rope.ptd(np.arange(9, 14.0)[:, None], np.arange(9.0)[:, None]), 20 / 9, atol=1e-5)
  # 2-D grid {0,1,2}^2 with text at (p, p), p = 9..13 -> 0.6414.
  img = np.stack(np.meshgrid(np.arange(3.0), np.arange(3.0), indexing="ij"), -1).reshape(9, 2)
  txt = np.stack([np.arange(9.0, 14), np.arange(9.0, 14)], -1)
  np.testing.assert_allclose(rope.ptd(txt, img), 0.6414, atol=1e-4)
  # Qwen2.5-VL M-RoPE ids of 3 text + 3x3 image + 2 text -> 0.5504.
  pos, _ = rope.multimodal_positions([rope.Text(3), rope.Image(3, 3), rope.Text(2)], "mrope")
  t_idx = np.r_[0:3, 12:14]
  np.testing.assert_allclose(rope.ptd(pos[t_idx], pos[3:12]), 0.5504, atol=1e-4)
