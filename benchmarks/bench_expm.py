"""LieRE's matrix exponential against its FLOP bound, at a ViT step's shapes (issue 18 item 4).

  python -m benchmarks.bench_expm --torch                  # dense (g=64) and LieRE-8, 112 px
  python -m benchmarks.bench_expm --block_sizes 64 --image_size 224

For one layer of a ViT-S/16 LieRE step (`configs/vit_liere.py`: `unit` positions, the class
token at position 0, generators drawn as `rope.init_liere`), it builds the generators
`A = sum_a p_a S_a` of every token, head and block (`rope.skew_rotations`' input) and times
`rope._expm.expm` on them: forward, and forward + backward (a `value_and_grad` against a fixed
random cotangent, as the step differentiates it).

The bound: the exponential runs `POLYNOMIAL_PRODUCTS + max(s)` batched `g x g` products
forward (`rope._expm.squarings`: the batch runs as many squarings as its largest matrix needs)
and two per product backward, so `3 x that x 2 g^3` FLOPs per matrix. It prints the time that
costs at two rates measured in the same process:
* the **GEMM rate**: the step's own fc1 forward dot (`[batch x tokens, width] x [width, mlp]`),
  the best float32 rate XLA:CPU reaches in the step; the issue's "FLOP bound";
* the **batched-dot rate**: a jitted `[n, g, g] @ [n, g, g]` of exactly the exponential's
  batch, the rate its products can reach in XLA:CPU.
With `--torch` it also times `torch.linalg.matrix_exp` forward and forward + backward (what the
LieRE reference runs) and `torch.bmm` on the same matrices, at the same thread count.
"""
import argparse

import jax
import jax.numpy as jnp
import numpy as np

import rope
from benchmarks import bench_dots
from benchmarks import common
from models import vit
from rope import _expm

NUM_AXES = 2      # images: row, column


def generators(variant: str, image_size: int, block_size: int, seed: int = 0):
  """`A [L, H, D/g, g, g]` of one layer: `unit` grid positions (class token at 0) times the
  skew generators of `rope.init_liere(g)`, as `rope.skew_rotations` forms them."""
  size, patch = vit.parse_variant(variant)
  width, _, heads, _ = vit.VARIANTS[size]
  side = image_size // patch
  pos = np.concatenate([np.zeros((1, 2), np.float32),
                        np.asarray(rope.grid_positions(side, side, scale="unit"), np.float32)])
  params = rope.init_liere(jax.random.key(seed), NUM_AXES, heads, width // heads, block_size)
  return jnp.einsum("la,ahgij->lhgij", pos, rope.liere_generators(params),
                    precision=jax.lax.Precision.HIGHEST)


def expm_flops(a) -> tuple[int, float]:
  """(batched products forward, forward + backward FLOPs) of `_expm.expm(a)`."""
  g = a.shape[-1]
  products = _expm.POLYNOMIAL_PRODUCTS + int(jnp.max(_expm.squarings(a)))
  matrices = int(np.prod(a.shape[:-2]))
  return products, 3.0 * products * matrices * 2.0 * g ** 3


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--block_sizes", default="64,8", help="g, comma-separated")
  parser.add_argument("--image_size", type=int, default=112)
  parser.add_argument("--variant", default="S/16")
  parser.add_argument("--batch_size", type=int, default=32, help="for the GEMM-rate dot")
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--torch", action="store_true", help="also time torch (same threads)")
  args = parser.parse_args(argv)
  size, patch = vit.parse_variant(args.variant)     # ValueError naming the allowed variants
  width, depth, heads, _ = vit.VARIANTS[size]
  try:
    blocks = [int(b) for b in args.block_sizes.split(",")]
  except ValueError:
    raise ValueError(f"--block_sizes={args.block_sizes!r} must be integers, e.g. 64,8.") from None
  for b in blocks:
    if b < 2 or (width // heads) % b:
      raise ValueError(f"--block_sizes: {b} must be >= 2 and divide head_dim={width // heads}.")
  for name in ("repeats", "batch_size", "image_size"):
    if getattr(args, name) < 1:
      raise ValueError(f"--{name}={getattr(args, name)} must be >= 1.")
  if args.image_size % patch:
    raise ValueError(f"--image_size={args.image_size} must be a multiple of the patch {patch}.")
  torch = None
  if args.torch:
    from benchmarks import torch_vit  # pylint: disable=g-import-not-at-top
    torch = torch_vit.import_torch()
  print(common.header())
  if torch is not None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
  rng = np.random.default_rng(0)
  seconds = lambda fn, *xs: common.median_seconds(fn, xs, repeats=args.repeats)

  _, kind, dims, _ = next(row for row in bench_dots.shapes(args.variant, args.image_size,
                                                           args.batch_size)
                          if row[0] == "fc1 fwd")
  x, w, gemm_flops = bench_dots.operands(kind, dims, rng)
  gemm_rate = gemm_flops / seconds(bench_dots.jax_dot(kind, dims[0]), jnp.asarray(x),
                                   jnp.asarray(w))
  print(f"\nViT {args.variant}, {args.image_size} px, one layer of {depth}; GEMM rate (the "
        f"step's fc1 forward {list(x.shape)} x {list(w.shape)}): {gemm_rate / 1e9:.1f} GFLOP/s")

  for g in blocks:
    a = generators(args.variant, args.image_size, g)
    products, flops = expm_flops(a)
    matrices = int(np.prod(a.shape[:-2]))
    norms = np.sqrt(np.sum(np.square(np.asarray(a)), axis=(-2, -1)))
    cot = jnp.asarray(rng.standard_normal(a.shape), jnp.float32)
    fwd_s = seconds(jax.jit(_expm.expm), a)
    grad_s = seconds(jax.jit(jax.value_and_grad(lambda a: jnp.sum(_expm.expm(a) * cot))), a)
    flat = a.reshape(matrices, g, g)
    bmm_s = seconds(jax.jit(lambda p, q: jnp.matmul(p, q, precision=jax.lax.Precision.HIGHEST)),
                 flat, flat)
    bmm_rate = 2.0 * matrices * g ** 3 / bmm_s
    print(f"\ng={g}: {matrices} matrices {g}x{g} (tokens {a.shape[0]} x heads {a.shape[1]} x "
          f"blocks {a.shape[2]}), |A|_F median {np.median(norms):.1f} max {norms.max():.1f}; "
          f"{products} products forward, {flops / 1e9:.3f} GFLOP fwd+bwd")
    print(f"  ours   expm fwd {fwd_s * 1e3:8.2f} ms   fwd+bwd {grad_s * 1e3:8.2f} ms "
          f"({flops / grad_s / 1e9:.1f} GFLOP/s)   batched dot {bmm_rate / 1e9:.1f} GFLOP/s")
    gemm_bound, bmm_bound = flops / gemm_rate, flops / bmm_rate
    print(f"  bound fwd+bwd at the GEMM rate {gemm_bound * 1e3:.2f} ms: ours at "
          f"{grad_s / gemm_bound:.2f}x it (goal 2x); at our batched-dot rate "
          f"{bmm_bound * 1e3:.2f} ms: ours at {grad_s / bmm_bound:.2f}x it")
    if torch is not None:
      ta = torch.from_numpy(np.array(flat))
      tc = torch.from_numpy(np.array(cot).reshape(matrices, g, g))

      def torch_fwd():
        with torch.no_grad():
          return torch.linalg.matrix_exp(ta)

      def torch_grad():
        leaf = ta.detach().requires_grad_(True)
        (torch.linalg.matrix_exp(leaf) * tc).sum().backward()
        return leaf.grad

      # median_seconds' block_until_ready passes torch tensors through (eager, synchronous).
      tf, tg = seconds(torch_fwd), seconds(torch_grad)
      with torch.no_grad():
        tb = seconds(torch.bmm, ta, ta)
      print(f"  torch matrix_exp fwd {tf * 1e3:8.2f} ms   fwd+bwd {tg * 1e3:8.2f} ms   "
            f"bmm {2.0 * matrices * g ** 3 / tb / 1e9:.1f} GFLOP/s;  ours/torch speed: fwd "
            f"{tf / fwd_s:.2f}, fwd+bwd {tg / grad_s:.2f}")
    print(f"  per step ({depth} layers): ours fwd+bwd {depth * grad_s * 1e3:.0f} ms, "
          f"bound at the GEMM rate {depth * gemm_bound * 1e3:.0f} ms")


if __name__ == "__main__":
  main()
