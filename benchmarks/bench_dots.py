"""The dot bound of the ViT step: every matrix product of a ViT-S/16 training step, standalone,
in XLA:CPU and (with --torch) in PyTorch, on this machine (issue 18 item 3).

  python -m benchmarks.bench_dots --torch                  # 112 and 224 px, float32
  python -m benchmarks.bench_dots --image_size 112 --dtype bfloat16 --torch

The ViT step is mostly dots (`bench_vit_step --breakdown`), so how fast each library runs the
step's dot shapes bounds how much faster one step can be than the other. For each shape of one
encoder block (q/k/v, output projection, MLP in and out; attention's batched logits and
weighted sum) in the three forms a training step runs (forward `x W`; the backward's
`dy W^T` and `x^T dy`), it times a jitted `lax.dot_general` on operands in those layouts (as
autodiff hands them to XLA) and torch's `mm` / `bmm` on the same layouts (transposes as views,
as torch's autograd does), at `--threads` threads for both. Per shape it prints GFLOP/s of
both and their ratio; then the step's total: `count x time` summed over the shapes of
`depth` blocks plus the patch embedding (the head is negligible).

The ceiling: a step runs at least its dots, so with every other op free ours would be
`torch step / our dot total` times as fast as torch's. Given torch's step times with
`--torch_step_ms` (e.g. from `bench_vit_step --torch` on the same machine), it prints that
ratio per image size. It is an estimate, not a strict bound: inside a step XLA runs the same
dots with other fusions and layouts (attention heads-first, `models/matmul.py`), which
`bench_vit_step --breakdown` measures in place.
"""
import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from models import vit

NUM_PATCH_CHANNELS = 3


def shapes(variant: str, image_size: int, batch: int):
  """[(name, kind, dims, count)]: kind "mm" dims (M, K, N) in form NN / NT / TN, or "bmm" dims
  (batch, M, K, N) with its form; count = occurrences per training step."""
  size, patch = vit.parse_variant(variant)
  width, depth, heads, mlp = vit.VARIANTS[size]
  hd = width // heads
  tokens = (image_size // patch) ** 2 + 1
  m = batch * tokens
  out = []
  for name, k, n in (("qkv", width, 3 * width), ("out", width, width), ("fc1", width, mlp),
                     ("fc2", mlp, width)):
    # forward x W; backward dx = dy W^T (NT) and dW = x^T dy (TN)
    out += [(f"{name} fwd", "mm", ("NN", m, k, n), depth),
            (f"{name} dx", "mm", ("NT", m, n, k), depth),
            (f"{name} dW", "mm", ("TN", k, m, n), depth)]
  bh = batch * heads
  # logits q k^T, weighted sum p v; backward dp = do v^T, dv = p^T do, dq = ds k, dk = ds^T q
  out += [("attn qk^T", "bmm", ("NT", bh, tokens, hd, tokens), depth),
          ("attn pv", "bmm", ("NN", bh, tokens, tokens, hd), depth),
          ("attn do v^T", "bmm", ("NT", bh, tokens, hd, tokens), depth),
          ("attn p^T do", "bmm", ("TN", bh, tokens, tokens, hd), depth),
          ("attn ds k", "bmm", ("NN", bh, tokens, tokens, hd), depth),
          ("attn ds^T q", "bmm", ("TN", bh, tokens, tokens, hd), depth)]
  pk = NUM_PATCH_CHANNELS * patch * patch
  mp = batch * (image_size // patch) ** 2
  out += [("patch fwd", "mm", ("NN", mp, pk, width), 1),
          ("patch dW", "mm", ("TN", pk, mp, width), 1)]
  return out


def operands(kind, dims, rng):
  """Operands in the layout the form reads: NN a[M,K] b[K,N]; NT a[M,K] b[N,K];
  TN a[K,M] b[K,N] (contracting the leading dim of both), with a leading batch for bmm."""
  form, *rest = dims
  lead = (rest.pop(0),) if kind == "bmm" else ()
  mm, kk, nn = rest
  a_shape = lead + ((kk, mm) if form == "TN" else (mm, kk))
  b_shape = lead + ((nn, kk) if form == "NT" else (kk, nn))
  a = rng.standard_normal(a_shape).astype(np.float32)
  b = rng.standard_normal(b_shape).astype(np.float32)
  return a, b, 2.0 * float(np.prod(lead or (1,))) * mm * kk * nn


def jax_dot(kind, form):
  nb = 1 if kind == "bmm" else 0
  batch = ((0,), (0,)) if nb else ((), ())
  ca = nb if form == "TN" else nb + 1
  cb = nb + 1 if form == "NT" else nb
  acc = jnp.float32
  return jax.jit(lambda a, b: jax.lax.dot_general(
      a, b, (((ca,), (cb,)), batch), preferred_element_type=acc))


def torch_dot(torch, kind, form):
  mm = torch.bmm if kind == "bmm" else torch.mm
  t = lambda x: x.transpose(-1, -2)
  return {"NN": lambda a, b: mm(a, b), "NT": lambda a, b: mm(a, t(b)),
          "TN": lambda a, b: mm(t(a), b)}[form]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--image_size", type=int, action="append", help="default 112 and 224")
  parser.add_argument("--variant", default="S/16")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                      help="operand dtype (float32 accumulation); torch: bf16 operands")
  parser.add_argument("--torch", action="store_true", help="also time torch (same threads)")
  parser.add_argument("--torch_step_ms", default="",
                      help="size=ms,... torch step times for the bound, e.g. 112=1446,224=6015")
  args = parser.parse_args(argv)
  sizes = args.image_size or [112, 224]
  vit.parse_variant(args.variant)     # ValueError naming the allowed variants
  for name in ("batch_size", "repeats"):
    if getattr(args, name) < 1:
      raise ValueError(f"--{name}={getattr(args, name)} must be >= 1.")
  step_ms = {}
  for item in filter(None, args.torch_step_ms.split(",")):
    try:
      k, v = item.split("=")
      step_ms[int(k)] = float(v)
    except ValueError:
      raise ValueError(f"--torch_step_ms: {item!r} is not size=ms (e.g. 112=1446).") from None
  torch = None
  if args.torch:
    from benchmarks import torch_vit  # pylint: disable=g-import-not-at-top
    torch = torch_vit.import_torch()
  dtype = jnp.dtype(args.dtype)
  print(common.header())
  if torch is not None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
  rng = np.random.default_rng(0)
  for size in sizes:
    print(f"\nViT {args.variant}, {size} px, batch {args.batch_size}, {args.dtype} operands "
          f"(float32 accumulation); medians of {args.repeats}")
    print(f"{'dot':<14}{'form':>5}{'dims':>24}{'count':>6}{'ours GF/s':>11}"
          + (f"{'torch GF/s':>11}{'ours/torch':>11}" if torch else ""))
    total_ours = total_torch = 0.0
    for name, kind, dims, count in shapes(args.variant, size, args.batch_size):
      a, b, flops = operands(kind, dims, rng)
      t = common.median_seconds(jax_dot(kind, dims[0]),
                                (jnp.asarray(a, dtype), jnp.asarray(b, dtype)),
                                repeats=args.repeats)
      total_ours += count * t
      line = f"{name:<14}{dims[0]:>5}{str(dims[1:]):>24}{count:6d}{flops / t / 1e9:11.1f}"
      if torch is not None:
        tdt = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
        ta, tb = torch.from_numpy(a).to(tdt), torch.from_numpy(b).to(tdt)
        with torch.no_grad():
          # median_seconds' block_until_ready passes torch tensors through (eager, synchronous).
          tt = common.median_seconds(torch_dot(torch, kind, dims[0]), (ta, tb),
                                     repeats=args.repeats)
        total_torch += count * tt
        line += f"{flops / tt / 1e9:11.1f}{tt / t:11.2f}"
      print(line, flush=True)
    print(f"all dots of one step: ours {total_ours * 1e3:.1f} ms"
          + (f", torch {total_torch * 1e3:.1f} ms (ours/torch speed {total_torch / total_ours:.2f})"
             if torch else ""))
    if torch is not None and size in step_ms:
      s = step_ms[size] / 1e3
      print(f"ceiling: against torch's step of {step_ms[size]:.0f} ms, our dots alone "
            f"({total_ours * 1e3:.0f} ms standalone) would be {s / total_ours:.2f}x as fast "
            f"(goal 1.15x)")


if __name__ == "__main__":
  main()
