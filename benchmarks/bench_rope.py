"""Cost of every rope variant (rotation from positions + application to q) vs a plain pass.

  python -m benchmarks.bench_rope                       # [8, 1024, 6, 64] and [32, 196, 6, 64]
  python -m benchmarks.bench_rope --shape 32,196,6,64 --backward
  python -m benchmarks.bench_rope --shape 8,1024,6,64 --rounds 40 --only "1d,hope"   # round-robin
  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 python -m benchmarks.bench_rope

For each variant it prints the median time of one jitted call that builds the rotation from the
positions (and the learned parameters, where the variant has them) and applies it to q, the
effective bandwidth 2 * q.nbytes / time (q read once, written once), and the ratio to two
baselines measured in the same process: a jitted copy of q and a jitted elementwise pass
`q * c`. Positions are those of a square grid with as many tokens as the shape's L (1-D variants
use 0..L-1; multimodal ones a text prefix + one image). Rows marked "(grid)" build the tables
with `rope.grid_cos_sin` from the grid's row and column coordinates (trig per axis, as the ViT
does) instead of `rope.angles` on all L positions. The second-round multimodal schemes
(docs/spec/multimodal_ext.md; the VLM's hope, ilrope, omnirope, mmrope, grape, qwen35) use their
own position designs and tables: GRAPE rotates with its learned planes (`rope.grape_rotate`,
mode "mixed", rope init; the planes are the parameters), Qwen3.5 only the first
`partial_rotary_dim(D, 0.25)` channels.

`--rounds N` replaces the per-variant medians by a round-robin in one process: `x * c` and the
selected variants are timed in turn for N rounds (`common.paired_rounds`), and "vs x*c" is the
median over rounds of (x*c time / variant time) in the same round, with its quartiles. On a
shared VM the separate medians move together by up to 2x between processes; the per-round
ratio is what the issue-13 goals are read from (RESULTS.md).
"""
import argparse
import math
import statistics

import jax
import jax.numpy as jnp

import rope
from benchmarks import common


def _grid(l):
  side = int(math.isqrt(l))
  if side * side != l:
    raise ValueError(f"--shape: L={l} must be a square number of patch tokens for the 2-D "
                     f"variants.")
  return side


def variants(shape, key):
  """name -> (fn(x, params) -> x', params)."""
  b, l, h, d = shape
  side = _grid(l)
  pos_idx = rope.grid_positions(side, side)
  pos_unit = rope.grid_positions(side, side, scale="unit")
  pos_pi = rope.grid_positions(side, side, scale="pi")
  pos_1d = jnp.arange(l, dtype=jnp.float32)[:, None]
  text = side // 2   # L = text + side * (side - 1) + (side - text) tokens.
  segs = [rope.Text(text), rope.Image(side, side - 1), rope.Text(side - text)]
  mm = {s: jnp.asarray(rope.multimodal_positions(segs, s)[0])
        for s in ("mrope", "spatial_reset", "videorope", "circle")}
  half = d // 2
  sections = (half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8)
  inter = (half - 2 * (half * 5 // 16), half * 5 // 16, half * 5 // 16)

  def commuting(pos, layout):
    return lambda x, f: rope.apply(x, rope.angles(pos, f), layout=layout)

  axes_idx = rope.grid_axes(side, side)

  def grid(layout):  # the grid fast path: trig per axis (rope.grid_cos_sin), then apply.
    # Rotate-half forms the cheap grid tables inside the rotation; the strided interleaved
    # rotation is faster reading written tables (measured: 1.9 vs 2.4 ms on [8, 1024, 6, 64]).
    return lambda x, f: rope.apply_cos_sin(x, *rope.grid_cos_sin(axes_idx, f), layout=layout,
                                           materialize=layout == "interleaved")

  out = {
      "1d": (commuting(pos_1d, "half"), rope.freqs_1d(d)),
      "axial": (commuting(pos_idx, "interleaved"), rope.freqs_axial(d)),
      "axial (grid)": (grid("interleaved"), rope.freqs_axial(d)),
      "mixed": (commuting(pos_idx, "interleaved"), rope.init_mixed_freqs(key, h, d)),
      "mixed (grid)": (grid("interleaved"), rope.init_mixed_freqs(key, h, d)),
      # The ViT's layout: its q / k projection emits rope-vit's pairs (2j, 2j+1) as (j, j+D/2)
      # (`models.vit.to_strided`, a reordering of weights), so it rotates these.
      "axial (grid) half": (grid("half"), rope.freqs_axial(d)),
      "mixed (grid) half": (grid("half"), rope.init_mixed_freqs(key, h, d)),
      "mrope": (commuting(mm["mrope"], "half"), rope.freqs_mrope(d, sections=sections)),
      "mrope_interleave": (commuting(mm["spatial_reset"], "half"),
                           rope.freqs_mrope_interleaved(d, sections=inter)),
      "videorope": (commuting(mm["videorope"], "half"),
                    rope.freqs_videorope(d, sections=sections)),
      "circle": (commuting(mm["circle"], "half"), rope.freqs_mrope(d, sections=sections)),
  }
  if h >= 3:
    hs = (h // 3, h // 3, h - 2 * (h // 3))
    out["mhrope"] = (commuting(mm["spatial_reset"], "half"),
                     rope.freqs_multi_head(h, d, head_sections=hs))
  # Spherical RoPE needs D % 3 == 0: with D = 64 it runs at D = 63 as in the paper (row marked).
  d3 = d - d % 3
  sph = lambda x, f: rope.apply_blocks(x[..., :d3], rope.spherical_rotations(pos_pi, f))
  out["spherical"] = (sph, rope.spherical_freqs(d3))
  out["spherical_learned"] = (sph, jax.random.uniform(key, (h, d3 // 3, 2)))
  # The ViT's form (rope.apply_spherical): two rounds of plane rotations from per-axis trig, on
  # channels emitted triplet-major by its q / k projection (`models.vit.to_strided`).
  axes_pi = rope.grid_axes(side, side, scale="pi")
  sph_grid = lambda x, f: rope.apply_spherical(x[..., :d3], rope.spherical_grid_cos_sin(axes_pi, f),
                                               layout="thirds", materialize=False)
  out["spherical (grid) thirds"] = (sph_grid, rope.spherical_freqs(d3))
  out["spherical_learned (grid) thirds"] = (sph_grid, jax.random.uniform(key, (h, d3 // 3, 2)))
  for g in (2, 8):
    if d % g == 0:
      out[f"liere{g}"] = (
          lambda x, p: rope.apply_blocks(x, rope.liere_rotations(pos_unit, p)),
          rope.init_liere(key, 2, h, d, block_size=g))
  out.update(_vision_ext_variants(shape, key, side))
  out.update(_multimodal_ext_variants(shape, key, segs))
  return out


def _multimodal_ext_variants(shape, key, segs):
  """The second-round multimodal schemes (docs/spec/multimodal_ext.md), same protocol."""
  _, _, _, d = shape
  half = d // 2
  sections = (half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8)
  inter = (half - 2 * (half * 5 // 16), half * 5 // 16, half * 5 // 16)
  mm = {s: jnp.asarray(rope.multimodal_positions(segs, s)[0])
        for s in ("hope", "ilrope", "omnirope", "mmrope", "mrope")}

  def commuting(pos):
    return lambda x, f: rope.apply(x, rope.angles(pos, f), layout="half")

  # Qwen3.5: MRoPE-I (11, 11, 10) of 32 pairs scaled to the rotary pairs, on the first
  # partial_rotary_dim(D, 0.25) channels (apply's rotary_dim = 2 * the table's pairs).
  r = rope.partial_rotary_dim(d, 0.25)
  n = r // 2
  q35 = (n - int(round(11 * n / 32)) - int(round(10 * n / 32)), int(round(11 * n / 32)),
         int(round(10 * n / 32)))
  plane_freqs = rope.grape_plane_freqs(d, 1e4, "mixed")
  return {
      "hope": (commuting(mm["hope"]), rope.freqs_hope(d, sections=sections)),
      "ilrope": (commuting(mm["ilrope"]), rope.freqs_mrope_interleaved(d, sections=inter)),
      "omnirope": (commuting(mm["omnirope"]), rope.freqs_mrope(d, sections=sections)),
      "mmrope": (commuting(mm["mmrope"]), rope.freqs_mmrope(d)),
      "qwen35 (partial)": (commuting(mm["mrope"]),
                           rope.freqs_mrope_interleaved(r, 1e7, sections=q35)),
      "grape (learned planes)": (
          lambda x, p: rope.grape_rotate(x, mm["mrope"], p, plane_freqs, mode="mixed"),
          rope.init_grape(key, d, "mixed")),
  }


def _vision_ext_variants(shape, key, side):
  """The second-round vision variants (docs/spec/vision_ext.md), same protocol."""
  _, _, h, d = shape
  pos_center = rope.grid_positions(side, side, scale="center")   # ComRoPE (no cls row here)
  pos_centered = rope.grid_positions(side, side, scale="centered")
  pos_idx = rope.grid_positions(side, side)
  out = {
      "dinov3": (lambda x, f: rope.apply(x, rope.angles(pos_centered, f), layout="half"),
                 rope.freqs_dinov3(d)),
      "eva02": (lambda x, f: rope.apply(x, rope.angles(pos_idx, f), layout="interleaved"),
                rope.freqs_eva(d)),
      "fit_yarn": (lambda x, s: rope.apply(
          x, rope.angles(pos_idx, rope.scale_freqs(rope.freqs_eva(d), s, method="yarn",
                                                   train_len=max(side // 2, 1))),
          layout="interleaved", amplitude=rope.attention_scale("yarn", (side, side),
                                                               max(side // 2, 1))),
                   jnp.full((2,), 2.0)),
      "p_rope_0.5": (lambda x, f: rope.apply(x, rope.angles(pos_idx, rope.truncate_freqs(f, 0.5)),
                                             layout="interleaved"), rope.freqs_axial(d)),
      "string_cayley": (lambda x, w: rope.string_cayley(
          x, rope.angles(pos_idx, rope.freqs_axial(d)), rope.cayley(w - jnp.swapaxes(w, -1, -2))),
                        0.1 * jax.random.normal(key, (h, d, d))),
      "string_cayley left=False": (lambda x, w: rope.string_cayley(
          x, rope.angles(pos_idx, rope.freqs_axial(d)), rope.cayley(w - jnp.swapaxes(w, -1, -2)),
          left=False), 0.1 * jax.random.normal(key, (h, d, d))),
      "string_circulant": (lambda x, c: rope.circulant_string(x, pos_idx, c),
                           0.02 * jax.random.normal(key, (2, h, d))),
  }
  if d % 16 == 0:
    out["string_circulant b16"] = (lambda x, c: rope.circulant_string(x, pos_idx, c),
                                   0.02 * jax.random.normal(key, (2, h, d // 16, 16)))
  for variant in ("ap", "ld"):
    if d % 16 == 0:
      out[f"comrope_{variant}8"] = (
          lambda x, p, v=variant: rope.apply_blocks(x, rope.skew_rotations(
              pos_center, rope.comrope_generators(p, variant=v))),
          rope.init_comrope(key, h, d, variant=variant, block_size=8))
  return out


def _variant_input(x, name):
  """q for a variant: Spherical rows run on the first D - D % 3 channels (see `variants`)."""
  return x[..., :x.shape[-1] - x.shape[-1] % 3] if name.startswith("spherical") else x


def _paired(x, table, rounds):
  """The forward of each variant against x * c, timed round-robin in one process."""
  fns = {"x * c": (jax.jit(lambda x, c: x * c), (x, jnp.asarray(1.5, x.dtype)))}
  for name, (fn, params) in table.items():
    xv = _variant_input(x, name)
    fns[name] = (jax.jit(fn), (xv, params))
  times = common.paired_rounds(fns, rounds=rounds)
  base = times["x * c"]
  print(f"{'variant':<34}{'fwd ms':>9}{'vs x*c':>8}{'q25':>7}{'q75':>7}   ({rounds} rounds, "
        f"round-robin; vs x*c = median over rounds of x*c time / variant time)")
  for name, ts in times.items():
    ratios = sorted(b / t for b, t in zip(base, ts))
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    print(f"{name:<34}{statistics.median(ts) * 1e3:9.3f}{statistics.median(ratios):8.2f}"
          f"{q[0]:7.2f}{q[2]:7.2f}", flush=True)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--shape", action="append",
                      help="B,L,H,D of q (repeatable); default 8,1024,6,64 and 32,196,6,64 (ViT-S/16 at 224)")
  parser.add_argument("--only", default="", help="comma-separated variant names")
  parser.add_argument("--backward", action="store_true",
                      help="also time forward+backward (grad w.r.t. q and the parameters)")
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--rounds", type=int, default=0,
                      help="instead of one median per variant, time x * c and the variants "
                           "round-robin for this many rounds and report the median over rounds "
                           "of (x*c time / variant time) in the same round (forward only)")
  args = parser.parse_args(argv)
  if args.rounds < 0 or args.repeats < 1:
    raise ValueError(f"--rounds={args.rounds} must be >= 0 and --repeats={args.repeats} >= 1.")
  if args.rounds and args.backward:
    raise ValueError("--rounds times the forward only; drop --backward (or --rounds).")
  shapes = [tuple(int(v) for v in s.split(",")) for s in (args.shape or
                                                          ["8,1024,6,64", "32,196,6,64"])]
  print(common.header())
  key = jax.random.PRNGKey(0)
  only = set(filter(None, args.only.split(",")))
  for shape in shapes:
    table = variants(shape, key)   # checked before anything compiles
    unknown = only - set(table)
    if unknown:
      raise ValueError(f"--only: unknown variants {sorted(unknown)} for shape {shape}; "
                       f"allowed: {', '.join(table)}.")
    x = jax.random.normal(key, shape, jnp.float32).astype(args.dtype)
    nbytes = 2 * x.nbytes
    copy = common.median_seconds(jax.jit(jnp.copy), (x,), repeats=args.repeats)
    scale = common.median_seconds(jax.jit(lambda x, c: x * c), (x, jnp.asarray(1.5, x.dtype)),
                                  repeats=args.repeats)
    loss_grad = lambda f: jax.jit(jax.grad(
        lambda x, p: jnp.sum(f(x, p).astype(jnp.float32) * x), argnums=(0, 1)))
    c15 = jnp.asarray(1.5, jnp.float32)
    if args.backward:   # the baseline's fwd+bwd: the same loss through x * c (grad w.r.t. x, c)
      scale_bwd = common.median_seconds(loss_grad(lambda x, c: x * c.astype(x.dtype)), (x, c15),
                                        repeats=args.repeats)
    print(f"\nq {shape} {args.dtype} ({x.nbytes / 2**20:.0f} MiB)")
    print(f"{'variant':<34}{'fwd ms':>9}{'GB/s':>8}{'vs copy':>9}{'vs x*c':>8}"
          + (f"{'fwd+bwd ms':>12}{'vs x*c':>8}" if args.backward else ""))
    print(f"{'copy':<34}{copy * 1e3:9.2f}{nbytes / copy / 1e9:8.1f}{1.0:9.2f}{scale / copy:8.2f}")
    print(f"{'x * c':<34}{scale * 1e3:9.2f}{nbytes / scale / 1e9:8.1f}{copy / scale:9.2f}"
          f"{1.0:8.2f}" + (f"{scale_bwd * 1e3:12.2f}{1.0:8.2f}" if args.backward else ""))
    if args.rounds:
      _paired(x, {n: v for n, v in table.items() if not only or n in only}, args.rounds)
      continue
    for name, (fn, params) in table.items():
      if only and name not in only:
        continue
      xv = _variant_input(x, name)
      vbytes = 2 * xv.nbytes
      if xv.shape != x.shape:
        name = f"{name} (D={xv.shape[-1]})"
      t = common.median_seconds(jax.jit(fn), (xv, params), repeats=args.repeats)
      row = (f"{name:<34}{t * 1e3:9.2f}{vbytes / t / 1e9:8.1f}{copy / t:9.2f}{scale / t:8.2f}")
      if args.backward:
        tb = common.median_seconds(loss_grad(fn), (xv, params), repeats=max(3, args.repeats // 2))
        row += f"{tb * 1e3:12.2f}{scale_bwd / tb:8.2f}"
      print(row, flush=True)
  print("\n'vs copy' / 'vs x*c' = baseline time / variant time (1.0 = as fast as the baseline);"
        "\nfwd+bwd: grad of sum(f(q) * q) w.r.t. q and the parameters, against the same loss "
        "through q * c.")


if __name__ == "__main__":
  main()
