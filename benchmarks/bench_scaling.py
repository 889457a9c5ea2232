"""How every rope variant's cost grows with the token grid, next to attention's.

  python -m benchmarks.bench_scaling                     # grids 8, 16, 32, 64; batch 1
  python -m benchmarks.bench_scaling --grids 8,16,32 --batch 2 --repeats 5 --only 1d,mixed
  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 python -m benchmarks.bench_scaling

For a g x g grid of L = g*g tokens, q and k of shape [B, L, H, D] (default H = 6, D = 64, the
ViT-S head layout), it times in one process, per grid:

  * each variant of `benchmarks/bench_rope.variants` (same functions, same positions): one
    jitted call that builds the rotation from the positions (and the learned parameters) and
    applies it to q and to k;
  * "dispatch": a jitted call doing almost nothing (the fixed cost of any call, which
    dominates the smallest grids' per-token numbers);
  * "qk * c": a jitted elementwise pass over q and k (a linear-cost reference);
  * "attention": the attention core softmax(q k^T / sqrt(D)) v, heads first, float32.

It prints three tables with a column per grid: ms per call, us per token (flat for a cost
linear in L: the rope variants; growing ~L for attention), and the ratio of each variant's
time to attention's at the same grid. The last two columns of the per-token table are growth
factors of the per-token cost, from the previous grid and from the smallest grid to the
largest (~1 = linear in tokens; 4x per doubling of the grid side = quadratic).
"""
import argparse
import math

import jax
import jax.numpy as jnp

from benchmarks import bench_rope
from benchmarks import common


def attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """softmax(q k^T / sqrt(D)) v; q, k, v `[B, L, H, D]` -> `[B, L, H, D]`, no mask."""
  logits = jnp.einsum("blhd,bmhd->bhlm", q, k) * (1.0 / math.sqrt(q.shape[-1]))
  return jnp.einsum("bhlm,bmhd->blhd", jax.nn.softmax(logits, axis=-1), v)


def rotate_qk(fn):
  """The variant applied to q and to k in one jitted call (the rotation is built once)."""
  return jax.jit(lambda q, k, p: (fn(q, p), fn(k, p)))


def _head_dim_for(name: str, d: int) -> int:
  # bench_rope runs Spherical RoPE at D - D % 3 (63 for D = 64), as in the paper.
  return d - d % 3 if name.startswith("spherical") else d


def measure_grid(g: int, args, key) -> dict:
  """{row name: seconds} of one grid (None where bench_rope cannot build a variant)."""
  shape = (args.batch, g * g, args.heads, args.head_dim)
  kq, kk, kv = jax.random.split(key, 3)
  q = jax.random.normal(kq, shape, jnp.float32)
  k = jax.random.normal(kk, shape, jnp.float32)
  v = jax.random.normal(kv, shape, jnp.float32)
  out = {}
  # What a jitted call costs with (almost) no work: it dominates the smallest grids.
  out["dispatch"] = common.median_seconds(jax.jit(lambda x: x + 1), (jnp.zeros((8,)),),
                                          repeats=args.repeats)
  out["qk * c"] = common.median_seconds(
      jax.jit(lambda q, k, c: (q * c, k * c)), (q, k, jnp.float32(1.5)), repeats=args.repeats)
  out["attention"] = common.median_seconds(jax.jit(attention), (q, k, v),
                                           repeats=args.repeats)
  try:
    variants = bench_rope.variants(shape, key)
  except ValueError as e:
    print(f"  grid {g}: bench_rope.variants{shape} failed: {e}", flush=True)
    return out
  for name, (fn, params) in variants.items():
    if args.only and name not in args.only:
      continue
    d = _head_dim_for(name, args.head_dim)
    out[name] = common.median_seconds(rotate_qk(fn), (q[..., :d], k[..., :d], params),
                                      repeats=args.repeats)
  return out


def _table(title, rows, labels, grids, cell, extra=()):
  print(f"\n{title}")
  print(f"{'':<26}" + "".join(f"{f'{g}x{g}':>11}" for g in grids)
        + "".join(f"{head:>11}" for head, _ in extra))
  for name in rows:
    print(f"{labels[name]:<26}" + "".join(cell(name, g) for g in grids)
          + "".join(fn(name) for _, fn in extra))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--grids", default="8,16,32,64", help="comma-separated grid sides g")
  parser.add_argument("--batch", type=int, default=1,
                      help="B (attention logits take B*H*L^2*4 bytes: 0.4 GB at 64x64, B=1)")
  parser.add_argument("--heads", type=int, default=6)
  parser.add_argument("--head_dim", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--only", default="", help="comma-separated rope variant names")
  args = parser.parse_args(argv)
  try:
    grids = [int(s) for s in args.grids.split(",") if s]
  except ValueError:
    raise ValueError(f"--grids={args.grids!r} must be comma-separated integers.") from None
  if not grids or min(grids) < 2:
    raise ValueError(f"--grids={args.grids!r}: every grid side must be >= 2.")
  for flag in ("batch", "heads", "head_dim", "repeats"):
    if getattr(args, flag) < 1:
      raise ValueError(f"--{flag}={getattr(args, flag)} must be >= 1.")
  if args.head_dim % 2:
    raise ValueError(f"--head_dim={args.head_dim} must be even (channels rotate in pairs).")
  args.only = set(filter(None, args.only.split(",")))
  known = bench_rope.variants((1, 32 * 32, args.heads, args.head_dim), jax.random.PRNGKey(0))
  if args.only - set(known):
    raise ValueError(f"--only: unknown variants {sorted(args.only - set(known))}; allowed: "
                     f"{', '.join(known)}.")

  print(common.header())
  print(f"q, k, v [B={args.batch}, L=g*g, H={args.heads}, D={args.head_dim}] float32; "
        f"median of {args.repeats}")
  key = jax.random.PRNGKey(0)
  times = {}
  for g in grids:
    times[g] = measure_grid(g, args, key)
    print(f"  grid {g}x{g} ({g * g} tokens) done", flush=True)

  names = list(dict.fromkeys(n for g in grids for n in times[g]))
  refs = ("dispatch", "qk * c", "attention")
  rope_names = [n for n in names if n not in refs]
  labels = {n: n for n in names}
  for n in rope_names:
    d = _head_dim_for(n, args.head_dim)
    if d != args.head_dim:
      labels[n] = f"{n} (D={d})"
  na = f"{'n/a':>11}"

  def get(name, g):
    return times[g].get(name)

  def per_token(name, g):
    t = get(name, g)
    return None if t is None else t / (args.batch * g * g)

  def growth(g0, g1):
    def cell(name):
      a, b = per_token(name, g0), per_token(name, g1)
      return na if a is None or b is None else f"{b / a:10.2f}x"
    return cell

  _table("ms per call (variants: rotation from positions + application to q and k)",
         list(refs) + rope_names, labels, grids,
         lambda n, g: na if get(n, g) is None else f"{get(n, g) * 1e3:11.3f}")
  extra = [(f"{grids[-1]}/{grids[0]}", growth(grids[0], grids[-1]))]
  if len(grids) > 2:
    extra.insert(0, (f"{grids[-1]}/{grids[-2]}", growth(grids[-2], grids[-1])))
  _table("us per token (flat = linear in tokens); last columns: per-token cost at the largest "
         "grid / at the previous and at the smallest grid",
         list(refs) + rope_names, labels, grids,
         lambda n, g: na if per_token(n, g) is None else f"{per_token(n, g) * 1e6:11.4f}",
         extra=extra)
  _table("posenc / attention (time ratio at the same grid)", ["qk * c"] + rope_names, labels,
         grids, lambda n, g: (na if get(n, g) is None
                              else f"{get(n, g) / get('attention', g):11.4f}"))
  missing = [g for g in grids if not set(rope_names) <= set(times[g])]
  if missing:
    print(f"\nn/a: bench_rope.variants could not build grids {missing} (message above).")


if __name__ == "__main__":
  main()
