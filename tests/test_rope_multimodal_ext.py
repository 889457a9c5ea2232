"""`rope`'s second-round multimodal variants against tests/golden/multimodal_ext/.

The .npz files were made by the upstream code (JJJYmmm/Multimodal-RoPEs @ cd413b9 under
transformers 5.3.0; transformers 4.49.0 / 4.57.1 / 5.3.0 / 5.25.0 for Qwen2.5-VL / Qwen3.5) and
cross-checked by an independent NumPy re-derivation; see tests/golden/multimodal_ext/README.md
and docs/spec/multimodal_ext.md. One test per file; each asserts every array the file holds
(the `Golden` wrapper fails the test if a key was never read). Tolerances are the manifest's:
positions and rope_delta exact, cos/sin atol 2e-5, rotated q/k atol 5e-5 (rtol 0).
Upstream tensors are [B, H, L, D]; `rope` uses [..., L, H, D], hence the transposes.
"""
import json
import pathlib

import jax
import numpy as np
import pytest

import rope

GOLDEN = pathlib.Path(__file__).parent / "golden" / "multimodal_ext"
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())
COS_SIN_TOL = 2e-5
ROT_TOL = 5e-5
FREQ_RTOL = 1e-6           # inv_freq / tables: the cross-check found at most 1 float32 ulp
THETA = 1e6
CHUNKED = {128: (16, 24, 24), 64: (8, 12, 12)}
INTERLEAVED = {128: (24, 20, 20), 64: (11, 11, 10)}


def test_manifest_tolerances_are_the_ones_used():
  tol = MANIFEST["tolerances"]
  assert tol["cos_sin"] == "atol 2e-5, rtol 0"
  assert tol["q_k_rotated"] == "atol 5e-5, rtol 0"
  assert tol["grape_learned_q_k_rotated"] == "atol 5e-5, rtol 0"
  assert tol["positions"].startswith("exact") and tol["rope_delta"] == "exact"
  files = {f["file"] for f in MANIFEST["files"]}
  assert files == {p.name for p in GOLDEN.glob("*.npz")}


class Golden:
  """An .npz whose every key must be read by the test (`done()` checks)."""

  def __init__(self, name):
    with np.load(GOLDEN / name) as z:
      self._d = dict(z)
    self._read = set()
    self.name = name

  def __getitem__(self, key):
    self._read.add(key)
    return self._d[key]

  def keys(self, prefix=""):
    return sorted(k for k in self._d if k.startswith(prefix))

  @property
  def meta(self):
    return json.loads(str(self["meta_json"]))

  def done(self):
    missing = sorted(set(self._d) - self._read)
    assert not missing, f"{self.name}: arrays never checked: {missing}"


def segments(g):
  """`Text` / `Image` / `Video` segments from the file's token types and raw grids."""
  types = g["mm_token_type_ids"]
  merge = int(g["spatial_merge_size"])
  assert len(g["input_ids"]) == len(types)
  grids = {1: [tuple(int(v) for v in r) for r in g["image_grid_thw"]],
           2: [tuple(int(v) for v in r) for r in g["video_grid_thw"]]}
  used = {1: 0, 2: 0}
  out, i = [], 0
  while i < len(types):
    j = i
    while j < len(types) and types[j] == types[i]:
      j += 1
    n, kind = j - i, int(types[i])
    if kind == 0:
      out.append(rope.Text(n))
    else:
      t, h, w = grids[kind][used[kind]]
      h, w = h // merge, w // merge
      if kind == 1:
        assert n == h * w
        out.append(rope.Image(h, w))
        used[1] += 1
      elif n == t * h * w:                  # contiguous Qwen2/2.5-VL video
        out.append(rope.Video(t, h, w))
        used[2] += 1
      else:                                 # one frame of a Qwen3-VL per-frame video
        assert n == h * w
        out.append(rope.Video(1, h, w))
    i = j
  return out


def blhd(x):
  return np.swapaxes(x, 1, 2)


def check_positions(g, suffix, pos, nxt):
  """`pos.<suffix>` (3, L), `rope_delta.<suffix>`, `next_pos.<suffix>`: exact."""
  ref = g["pos" + suffix]
  assert pos.dtype == np.float32 and pos.shape == ref.T.shape
  np.testing.assert_array_equal(pos, ref.T.astype(np.float32))
  assert np.float32(nxt) - len(pos) == np.float32(g["rope_delta" + suffix])
  assert np.float32(nxt) == np.float32(g["next_pos" + suffix])


def check_table(g, suffix, freqs, axis_freqs=None):
  """`inv_freq`, `axis_of_pair` and (if present) `freqs` of a commuting `[D/2, 3]` table.

  `axis_freqs` is the table before any NoPE zeroing (HoPE), from which the axis map and the
  ladder are read."""
  axis_freqs = np.asarray(freqs if axis_freqs is None else axis_freqs)
  np.testing.assert_array_equal(np.argmax(axis_freqs != 0, -1), g["axis_of_pair" + suffix])
  np.testing.assert_allclose(axis_freqs.sum(-1), g["inv_freq" + suffix], rtol=FREQ_RTOL)
  if "freqs" + suffix in g._d:
    np.testing.assert_allclose(freqs, g["freqs" + suffix], rtol=FREQ_RTOL, atol=0)


def check_rotation(g, suffix, pos, freqs, *, qk_suffix="", rotary_dim=None):
  """`cos`, `sin` (half layout) and `q_rot`, `k_rot` of a commuting table."""
  a = rope.angles(pos, freqs)                                     # [L, 1, R/2]
  full = np.concatenate([a, a], -1)[:, 0]
  np.testing.assert_allclose(np.cos(full), g["cos" + suffix], atol=COS_SIN_TOL, rtol=0)
  np.testing.assert_allclose(np.sin(full), g["sin" + suffix], atol=COS_SIN_TOL, rtol=0)
  for name in ("q", "k"):
    x = blhd(g[name + qk_suffix])
    out = rope.apply(x, a, layout="half", rotary_dim=rotary_dim)
    np.testing.assert_allclose(out, blhd(g[f"{name}_rot{suffix}"]), atol=ROT_TOL, rtol=0)


def options(g):
  return g.meta["options"]


# ----------------------------------------------------------------------------- HoPE


def test_golden_hope():
  g = Golden("hope__case1_image.npz")
  seg = segments(g)
  for opt, o in options(g).items():
    gamma = o["hope_random_draws"]                    # one per visual block, in order
    assert len(gamma) == sum(not isinstance(s, rope.Text) for s in seg)
    pos, nxt = rope.multimodal_positions(seg, "hope", temporal_scale=gamma)
    check_positions(g, f".{opt}", pos, nxt)
    if len(set(gamma)) == 1:                           # scalar form gives the same ids
      np.testing.assert_array_equal(
          rope.multimodal_positions(seg, "hope", temporal_scale=gamma[0])[0], pos)
    for d in (64, 128):
      sec = tuple(o["mrope_section"][str(d)])
      freqs = rope.freqs_hope(d, THETA, sec)
      check_table(g, f".{opt}.d{d}", freqs,
                  rope.freqs_videorope(d, THETA, sec, allocation="repo"))
      assert not np.asarray(freqs)[:, 0].any()         # the t pairs are NoPE
      check_rotation(g, f".{opt}.d{d}", pos, freqs, qk_suffix=f".d{d}")
  g.done()


# ----------------------------------------------------------------------------- IL-RoPE, Omni-RoPE


@pytest.mark.parametrize("fname,scheme,build", [
    ("ilrope__case3_two_images.npz", "ilrope", rope.freqs_mrope_interleaved),
    ("omnirope__case1_image.npz", "omnirope", rope.freqs_mrope),
])
def test_golden_ilrope_omnirope(fname, scheme, build):
  g = Golden(fname)
  seg = segments(g)
  for opt, o in options(g).items():
    pos, nxt = rope.multimodal_positions(seg, scheme, temporal_stride=o["temporal_stride"])
    check_positions(g, f".{opt}", pos, nxt)
    same = rope.multimodal_positions(seg, "spatial_reset", temporal_stride=o["temporal_stride"])
    np.testing.assert_array_equal(same[0], pos)
    assert same[1] == nxt
    for d in (64, 128):
      freqs = build(d, THETA, tuple(o["mrope_section"][str(d)]))
      check_table(g, f".{opt}.d{d}", freqs)
      check_rotation(g, f".{opt}.d{d}", pos, freqs, qk_suffix=f".d{d}")
  g.done()


# ----------------------------------------------------------------------------- MM-RoPE


def test_golden_mmrope():
  g = Golden("mmrope__case1_image.npz")
  seg = segments(g)
  for opt, o in options(g).items():
    kw = {"temporal_stride": o["temporal_stride"]}
    if "position_scale" in o:
      kw["position_scale"] = tuple(o["position_scale"])
    pos, nxt = rope.multimodal_positions(seg, "mmrope", **kw)
    check_positions(g, f".{opt}", pos, nxt)
    for d in (64, 128):
      freqs = rope.freqs_mmrope(d, THETA)             # mrope_section is ignored upstream
      check_table(g, f".{opt}.d{d}", freqs)
      check_rotation(g, f".{opt}.d{d}", pos, freqs, qk_suffix=f".d{d}")
  # docs/spec/multimodal_ext.md §3: with (4, 8, 8) text after the image resumes at 46.
  pos, nxt = rope.multimodal_positions(seg, "mmrope", position_scale=(4, 8, 8))
  assert pos[29, 0] == 46 and nxt == 49
  g.done()


# ----------------------------------------------------------------------------- GRAPE


def grape_params(g, opt, d, mode):
  pre = f"param.{opt}.d{d}."
  if mode == "axis":
    return {b: (g[pre + f"{b}_grape.a"], g[pre + f"{b}_grape.b"]) for b in "thw"}
  return {k: g[pre + k] for k in ("a", "b", "axis_weight")}


def test_golden_grape():
  g = Golden("grape__case1_image.npz")
  seg = segments(g)
  for opt, o in options(g).items():
    assert o["temporal_stride"] == 1.0
    pos, nxt = rope.multimodal_positions(seg, "mrope")   # GRAPE uses M-RoPE ids
    check_positions(g, f".{opt}", pos, nxt)
    mode = o.get("grape_mode", "canonical")
    s = o.get("log_freq_scale", 1.0)
    for d in (64, 128):
      suffix = f".{opt}.d{d}"
      if mode == "canonical":
        build = (rope.freqs_cyclic if o.get("frequency_allocation") == "interleaved"
                 else lambda d_, t_: rope.freqs_mrope(d_, t_, CHUNKED[d_]))
        assert tuple(o["mrope_section"][str(d)]) == CHUNKED[d]
        freqs = build(d, THETA ** (1.0 / s))              # API.md clarification 2
        np.testing.assert_array_equal(np.argmax(np.asarray(freqs) != 0, -1),
                                      g["axis_of_pair" + suffix])
        np.testing.assert_allclose(g["inv_freq" + suffix], rope.inv_freq(d, THETA),
                                   rtol=FREQ_RTOL)
        if s != 1.0:
          warped = rope.inv_freq(d, THETA, log_scale=s)
          np.testing.assert_allclose(warped, g["inv_freq_effective" + suffix], rtol=FREQ_RTOL)
          np.testing.assert_allclose(np.asarray(freqs).sum(-1), warped, rtol=FREQ_RTOL)
        np.testing.assert_allclose(freqs, g["freqs" + suffix], rtol=FREQ_RTOL, atol=0)
        check_rotation(g, suffix, pos, freqs, qk_suffix=f".d{d}")
        continue
      kw = {}
      if "num_planes" in o:
        kw["num_planes"] = o["num_planes"][str(d)]
      if "planes_per_block" in o:
        kw["planes_per_block"] = o["planes_per_block"]
      if mode == "block_mixed":
        kw["block_size"] = o["block_size"]
      np.testing.assert_allclose(g["inv_freq" + suffix], rope.inv_freq(d, THETA), rtol=FREQ_RTOL)
      pf = rope.grape_plane_freqs(d, THETA, mode, log_scale=s, **kw)
      for key in g.keys(f"plane_inv_freq{suffix}."):     # axis: one array for t, h, w banks
        np.testing.assert_allclose(pf, g[key], rtol=FREQ_RTOL, atol=0)
      params = grape_params(g, opt, d, mode)
      if o.get("rope_init", True):                       # the file's parameters are our init
        init = rope.init_grape(None, d, mode, **kw)
        jax.tree_util.tree_map(np.testing.assert_array_equal, init, params)
      for name in ("q", "k"):
        out = rope.grape_rotate(blhd(g[f"{name}.d{d}"]), pos, params, pf, mode=mode)
        np.testing.assert_allclose(out, blhd(g[f"{name}_rot{suffix}"]), atol=ROT_TOL, rtol=0)
  g.done()


# ----------------------------------------------------------------------------- Qwen3.5


def test_golden_qwen35_partial():
  g = Golden("qwen35_partial__case1_image.npz")
  seg = segments(g)
  pos, nxt = rope.multimodal_positions(seg, "mrope")      # Qwen3-VL rule
  check_positions(g, "", pos, nxt)
  for s, o in g.meta["settings"].items():
    hd, theta = o["head_dim"], o["theta"]
    r = rope.partial_rotary_dim(hd, o["partial_rotary_factor"])
    assert r == o["rotary_dim"] == int(g[f"rotary_dim.{s}"]) == 64
    freqs = rope.freqs_mrope_interleaved(r, theta, tuple(o["mrope_section"]))
    check_table(g, f".{s}", freqs)
    np.testing.assert_allclose(g[f"inv_freq.{s}"], rope.inv_freq(r, theta), rtol=FREQ_RTOL)
    check_rotation(g, f".{s}", pos, freqs, qk_suffix=f".{s}")
    # The repo's mrope-interleave module on the same config: the same tables.
    a = rope.angles(pos, freqs)
    full = np.concatenate([a, a], -1)[:, 0]
    assert full.shape == (len(pos), r)
    np.testing.assert_allclose(np.cos(full), g[f"cos_repo.{s}"], atol=COS_SIN_TOL, rtol=0)
    np.testing.assert_allclose(np.sin(full), g[f"sin_repo.{s}"], atol=COS_SIN_TOL, rtol=0)
    # Explicit rotary_dim: same result; the tail channels pass through untouched.
    q = blhd(g[f"q.{s}"])
    out = np.asarray(rope.apply(q, a, layout="half", rotary_dim=r))
    np.testing.assert_allclose(out, blhd(g[f"q_rot.{s}"]), atol=ROT_TOL, rtol=0)
    np.testing.assert_array_equal(out[..., r:], q[..., r:])
  g.done()


# ----------------------------------------------------------------------------- Qwen2.5-VL time

SPG = {"none": None, "0p25": 0.25, "0p5": 0.5, "1p0": 1.0, "1p5": 1.5, "2p0": 2.0,
       "2over3": 2.0 / 3.0}


def parse_setting(setting):
  tps, spg = setting.split("_")
  return int(tps[len("tps"):]), SPG[spg[len("spg"):]]


def test_golden_qwen25vl_time():
  g = Golden("qwen25vl_time__case2_video_qwen2layout.npz")
  seg = segments(g)
  assert [type(s) for s in seg] == [rope.Text, rope.Video, rope.Text]
  assert g.meta["errors"] == {}
  start, video = seg[0].n, seg[1]
  end = start + video.num_tokens
  ours = {}
  for key in g.keys("pos."):
    _, ver, setting = key.split(".")
    tps, spg = parse_setting(setting)
    o = g.meta["settings"][setting]
    assert o["tokens_per_second"] == tps
    assert (spg is None and o["second_per_grid_ts"] is None) or \
        spg == o["second_per_grid_ts"][0]
    spg_hf = 1.0 if spg is None else spg                  # API.md clarification 3
    if ver in ("hf4490", "hf4571"):                       # the contract's two rules
      pos, nxt = rope.multimodal_positions(
          seg, "mrope", seconds_per_grid=spg_hf, tokens_per_second=tps,
          time_rounding="float" if ver == "hf4490" else "int_seconds")
      check_positions(g, f".{ver}.{setting}", pos, nxt)
      ours[ver, setting] = pos
  # Recorded upstream behaviour outside the contract (docs/spec/multimodal_ext.md §6), checked
  # against its documented relation to the 4.49 rule.
  for key in g.keys("pos.hf5"):
    _, ver, setting = key.split(".")
    tps, spg = parse_setting(setting)
    ref = g[key].T.astype(np.float32)
    exp = ours["hf4490", setting].copy()
    if ver == "hf530":      # every frame at t = start * tps * int(spg); h = start + k // (W T)
      k = np.arange(video.num_tokens)
      exp[start:end, 0] = start * tps * int(1.0 if spg is None else spg)
      exp[start:end, 1] = start + k // (video.w * video.t)
    # 5.x resumes text at start + max(H, W), ignoring T.
    exp[end:] = start + max(video.h, video.w) + np.arange(len(exp) - end)[:, None]
    np.testing.assert_array_equal(ref, exp)
    delta = g[f"rope_delta.{ver}.{setting}"]
    assert delta == exp.max() + 1 - len(exp)
    assert g[f"next_pos.{ver}.{setting}"] == delta + len(exp)
  # Rotations (hf4490 / hf4571 at the settings the file holds), chunked M-RoPE tables.
  for d in (64, 128):
    freqs = rope.freqs_mrope(d, THETA, CHUNKED[d])
    check_table(g, f".d{d}", freqs)
    for key in g.keys("cos."):
      _, ver, setting, dd = key.split(".")
      if dd == f"d{d}":
        check_rotation(g, f".{ver}.{setting}.d{d}", ours[ver, setting], freqs,
                       qk_suffix=f".d{d}")
  g.done()


def test_qwen25vl_time_per_video_values_and_images_unscaled():
  seg = [rope.Text(2), rope.Image(2, 3), rope.Text(1), rope.Video(3, 2, 2), rope.Text(1),
         rope.Video(2, 1, 1), rope.Text(2)]
  pos, nxt = rope.multimodal_positions(seg, "mrope", seconds_per_grid=[0.5, 2.0],
                                       tokens_per_second=2)
  plain, _ = rope.multimodal_positions(seg, "mrope")
  np.testing.assert_array_equal(pos[:9], plain[:9])     # text and the image unaffected
  t = pos[9:21, 0].reshape(3, 4)[:, 0] - pos[9, 0]
  np.testing.assert_array_equal(t, [0, 1, 2])            # floor(tau * 0.5 * 2)
  v2 = pos[22:24, 0] - pos[22, 0]
  np.testing.assert_array_equal(v2, [0, 4])              # floor(tau * 2.0 * 2)
  assert nxt == pos[-1, 0] + 1
  # None keeps Qwen2-VL's tau * temporal_stride.
  np.testing.assert_array_equal(
      rope.multimodal_positions(seg, "mrope", seconds_per_grid=None)[0], plain)
