"""Training-step cost of every ViT position encoding, and the PyTorch reference (issue 5).

  python -m benchmarks.bench_vit_step                   # ViT-S/16, batch 32, 112 and 224 px
  python -m benchmarks.bench_vit_step --image_size 112 --repeats 2 --encodings none,mixed
  python -m benchmarks.bench_vit_step --dtype bfloat16 --torch
  python -m benchmarks.bench_vit_step --encodings none,mixed --torch --breakdown 2   # by op kind
  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 python -m benchmarks.bench_vit_step

What is timed: the repository's own training step, `trainer.step.make_train_step` (forward,
backward, optax AdamW from `trainer.optim.make_optimizer` with its weight-decay mask, constant
learning rate, no gradient clipping as in the torch reference, plus the step's norm metrics),
jitted with the state donated as `trainer/loop.py` does, on one fixed synthetic batch
(`batch_size` random images, one-hot labels over 1000 classes, softmax cross-entropy as
`tasks.classification`). The model is `models.vit` at `--variant` with `--dtype` compute
(parameters stay float32), no dropout, class-token pooling, and the model options the
encoding's configs/vit_<name>.py trains with (`CONFIG_OPTIONS`: DINOv3's rescale augmentation,
ComRoPE's block size). Every registered encoding but the absolute tables (ape, sincos) is a
default row.

Per encoding it prints the median ms/step, images/s, the overhead over `none` measured in the
same process, and GFLOP/step and achieved GFLOP/s from XLA's cost analysis of the compiled step
(`trainer.cost`; transcendentals are not counted). Spherical variants need head_dim % 3 == 0:
they run at head_dim 63 (width 378, mlp 1512) as in the Spherical-RoPE paper, and their
overhead is against a `none` row at the same head_dim 63, which is added automatically; every
other row (head_dim 64) is against `none` at 64 (always timed, added if not listed).

Noise: all steps of one image size are compiled first, then timed round-robin: repeat r runs
one step of every encoding in turn before repeat r+1, so a load spike from another process
hits all encodings alike rather than one of them; each encoding first gets `--warmup` untimed
steps. Medians over `--repeats`.

`--torch` also runs `benchmarks.torch_vit` (rope-vit's ViT RoPE-Mixed, eager, AdamW) for
mixed and none, in a subprocess with this process's environment (so the same LD_PRELOAD
allocator), after the JAX rows of each image size, and prints its images/s and the JAX/torch
ratio next to the JAX row of the same encoding (head_dim 64). Torch runs at the same precision
as ours unless `--torch_dtype` says otherwise: float32, or with `--dtype bfloat16` under
`torch.autocast("cpu", dtype=torch.bfloat16)`. Before timing it checks, once,
that the two are the same model: Flax params are copied into the torch model
(`torch_vit.flax_to_torch_state`) and the logits compared at 32 px, depth 2, float32.

`--breakdown N` profiles N more steps of every row (and of each torch run) and prints the time
by op kind, dots, attention, normalisation, elementwise, rope and optimizer, for both sides
(`benchmarks/op_breakdown.py`, `torch_vit.op_kind_seconds`): "rope" there is the encoding's
share of the step, measured inside it.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from benchmarks import common
from benchmarks import op_breakdown
from configs import vit_common
from models import vit
from models.vit_encodings import ENCODINGS
from trainer import cost
from trainer import optim as optim_lib
from trainer import step as step_lib

DEFAULT_ENCODINGS = ("none", "mixed", "axial", "uniform", "axial_pi", "mixed_pi",
                     "axial_learned", "spherical", "spherical_learned", "liere",
                     # issue 14's encodings (docs/spec/vision_ext.md)
                     "comrope_ap", "comrope_ld", "string_cayley", "string_circulant",
                     "dinov3", "eva02", "prope", "lookhere", "fire")
# Model options an encoding trains with (its configs/vit_<name>.py), applied to its row so the
# step timed is the one trained: DINOv3's released rescale augmentation (drawn every step),
# ComRoPE's block size. Options of the model's size (variant, head_dim) are the benchmark's.
CONFIG_OPTIONS = ("block_size", "position_augment", "ape")
NUM_CLASSES = 1000
TORCH_ENCODINGS = ("none", "mixed")


class SyntheticClassification:
  """The two `tasks.base.Task` methods `trainer.step` calls, for a synthetic batch.

  The loss is `tasks.classification`'s (softmax cross-entropy of one-hot labels, accuracy).
  """

  def __init__(self, model, image_size: int):
    self.model = model
    self.image_size = image_size

  def init_params(self, rng: jax.Array) -> Any:
    images = jnp.zeros((1, self.image_size, self.image_size, 3), jnp.float32)
    return nn.unbox(self.model.init({"params": rng}, images, train=False)["params"])

  def loss_fn(self, params, batch, rng):
    logits = self.model.apply({"params": params}, batch["image"], train=True,
                              rngs={"dropout": rng})
    loss = optax.softmax_cross_entropy(logits, batch["label"]).mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(batch["label"], -1))
    return loss, {"accuracy": accuracy}


def adamw_config() -> ml_collections.ConfigDict:
  """`config.optim` for AdamW at a constant learning rate, no clipping (torch reference)."""
  c = ml_collections.ConfigDict()
  c.name, c.lr, c.b1, c.b2, c.eps = "adamw", 1e-3, 0.9, 0.999, 1e-8
  c.weight_decay, c.grad_clip_norm = 0.05, 0.0
  c.schedule, c.warmup_init_lr, c.end_lr = "constant", 1e-6, 1e-5
  return c


def config_options(encoding: str) -> dict:
  """`CONFIG_OPTIONS` of configs/vit_<encoding>.py (its ImageNet ViT-S/16 recipe), or {} for an
  encoding without a config file."""
  if encoding not in vit_common.config_names():
    return {}
  model = vit_common.load(encoding, "imagenet").model
  return {k: model[k].to_dict() if hasattr(model[k], "to_dict") else model[k]
          for k in CONFIG_OPTIONS}


def model_config(encoding: str, *, variant: str, head_dim, image_size: int, dtype: str,
                 layerscale, depth=None, block_size=None) -> ml_collections.ConfigDict:
  c = vit.default_config()
  c.update(config_options(encoding))
  if block_size is not None and ENCODINGS.get(encoding).uses_block_size:
    c.block_size = block_size
  c.variant, c.encoding, c.head_dim, c.dtype = variant, encoding, head_dim, dtype
  c.train_image_size = image_size
  c.layerscale_init = layerscale
  c.depth = depth
  return c


def rows(encodings: list[str], variant: str, block_size=None) -> list[tuple[str, str, Any]]:
  """(label, encoding, head_dim or None) to time; adds the `none` baselines the overheads need."""
  needs_63 = [p for p in encodings if ENCODINGS.get(p).multiple == 3]
  size, _ = vit.parse_variant(variant)
  width, _, heads, _ = vit.VARIANTS[size]
  base_head_dim = width // heads
  out = [("none", "none", None)]
  if needs_63 and base_head_dim % 3:
    out.append(("none@63", "none", 63))
  for p in encodings:
    if p == "none":
      continue
    label = p + (f" b{block_size}" if block_size and ENCODINGS.get(p).uses_block_size else "")
    if p in needs_63 and base_head_dim % 3:
      out.append((f"{label}@63", p, 63))
    else:
      out.append((label, p, None))
  return out


def build(label_encoding_hd, args, image_size: int, batch) -> dict:
  """Compiles one encoding's donated train step and creates its state."""
  label, encoding, head_dim = label_encoding_hd
  config = model_config(encoding, variant=args.variant, head_dim=head_dim, image_size=image_size,
                        dtype=args.dtype, layerscale=args.layerscale, depth=args.depth,
                        block_size=args.block_size)
  model = vit.model_from_config(config, NUM_CLASSES)
  task = SyntheticClassification(model, image_size)
  tx, schedule = optim_lib.make_optimizer(adamw_config(), total_steps=10**9, warmup_steps=0)
  state = jax.jit(step_lib.make_init_fn(task, tx))(jax.random.key(0))
  t0 = time.perf_counter()
  compiled = jax.jit(step_lib.make_train_step(task, tx, schedule), donate_argnums=0).lower(
      state, batch).compile()
  compile_s = time.perf_counter() - t0
  return {"label": label, "encoding": encoding, "head_dim": vit.model_dims(config)["head_dim"],
          "step": compiled, "state": state, "flops": cost.flops_per_device(compiled),
          "compile_s": compile_s, "times": []}


def time_round_robin(entries: list[dict], batch, *, repeats: int, warmup: int) -> None:
  """Fills entry["times"] with `repeats` step times, interleaved across entries."""
  def one(e):
    t0 = time.perf_counter()
    e["state"], metrics = e["step"](e["state"], batch)
    jax.block_until_ready((e["state"], metrics))
    return time.perf_counter() - t0

  for e in entries:
    # Named on stderr: a step that never returns (an XLA:CPU runtime hang) shows which one.
    print(f"  warm-up {e['label']}", file=sys.stderr, flush=True)
    for _ in range(warmup):
      one(e)
  for r in range(repeats):
    for e in entries:
      e["times"].append(one(e))
    print(f"  repeat {r + 1}/{repeats} done", file=sys.stderr, flush=True)


def run_torch(args, encoding: str, image_size: int) -> dict | None:
  """benchmarks.torch_vit in a subprocess with this environment; its JSON or None on failure."""
  cmd = [sys.executable, "-m", "benchmarks.torch_vit", "--json", "--encoding", encoding,
         "--variant", args.variant, "--image_size", str(image_size),
         "--batch_size", str(args.batch_size), "--repeats", str(args.repeats),
         "--warmup", str(args.warmup), "--dtype", args.torch_dtype, "--adamw", args.torch_adamw,
         "--breakdown", str(args.breakdown)]
  if args.layerscale is not None:
    cmd += ["--layerscale", str(args.layerscale)]
  return _json_subprocess(cmd)


def _json_subprocess(cmd: list[str]) -> dict | None:
  proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ),
                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
  if proc.returncode or not lines:
    print(f"torch run failed ({' '.join(cmd[2:])}):\n{proc.stdout}{proc.stderr}",
          file=sys.stderr)
    return None
  return json.loads(lines[-1])


def print_parity() -> bool:
  """Runs the Flax -> torch logits comparison once; False if torch is unusable."""
  result = _json_subprocess([sys.executable, "-m", "benchmarks.torch_vit", "--parity", "--json"])
  if result is None:
    return False
  for encoding in TORCH_ENCODINGS:
    print(f"parity Flax vs torch ({encoding}, 32 px, depth 2, float32): max |dlogits| = "
          f"{result[encoding]:.2e} (max |logit| {result[encoding + '_max_abs_logit']:.2f})")
  return True


def print_table(entries: list[dict], image_size: int, batch_size: int, torch_results: dict):
  base = {e["head_dim"]: statistics.median(e["times"]) for e in entries if e["encoding"] == "none"}
  header = (f"{'encoding':<22}{'ms/step':>10}{'img/s':>8}{'vs none':>9}{'GFLOP':>8}"
            f"{'GFLOP/s':>9}{'compile s':>10}")
  if torch_results:
    header += f"{'torch ms':>10}{'torch img/s':>12}{'torch GF/s':>11}{'JAX/torch':>10}"
  print(header)
  for e in entries:
    t = statistics.median(e["times"])
    over = f"{100 * (t / base[e['head_dim']] - 1):+8.1f}%"
    flops = e["flops"]
    line = (f"{e['label']:<22}{t * 1e3:10.1f}{batch_size / t:8.2f}{over:>9}"
            f"{flops / 1e9 if flops else float('nan'):8.1f}"
            f"{flops / t / 1e9 if flops else float('nan'):9.1f}{e['compile_s']:10.1f}")
    tr = torch_results.get(e["label"])
    if tr:
      # torch's GFLOP/s: the same model's step (logits parity-checked), so XLA's FLOP count
      # of our step over torch's time.
      tflops = flops / (tr["ms_per_step"] / 1e3) / 1e9 if flops else float("nan")
      line += (f"{tr['ms_per_step']:10.1f}{tr['images_per_s']:12.2f}{tflops:11.1f}"
               f"{tr['ms_per_step'] / 1e3 / t:10.2f}")
    print(line, flush=True)


def print_breakdown(entries: list[dict], torch_results: dict):
  """Seconds per step by op kind (benchmarks/op_breakdown.py; torch_vit.op_kind_seconds)."""
  kinds = op_breakdown.KINDS
  print(f"\nby op kind, ms per step (% of the row's op time): {', '.join(kinds)}")
  print(f"{'row':<22}" + "".join(f"{k[:13]:>16}" for k in kinds) + f"{'total':>9}")
  rows = [(e["label"], e["op_kinds"]) for e in entries if e.get("op_kinds")]
  rows += [(f"torch {k}", r["op_kind_seconds"]) for k, r in torch_results.items()
           if r.get("op_kind_seconds")]
  for label, sec in rows:
    total = sum(sec.values())
    print(f"{label:<22}" + "".join(f"{sec.get(k, 0) * 1e3:9.1f} ({100 * sec.get(k, 0) / total:4.1f}%)"
                                   for k in kinds) + f"{total * 1e3:9.1f}", flush=True)


def parse_args(argv=None) -> argparse.Namespace:
  """The command line, with `--torch_dtype same` resolved to `--dtype`."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--image_size", type=int, action="append",
                      help="repeatable; default 112 and 224")
  parser.add_argument("--encodings", default=",".join(DEFAULT_ENCODINGS),
                      help=f"comma-separated, from {ENCODINGS.names()}")
  parser.add_argument("--posencs", dest="encodings",
                      help="the old name of --encodings (old names such as rope_mixed work)")
  parser.add_argument("--variant", default="S/16")
  parser.add_argument("--depth", type=int, default=None,
                      help="layers (default: the variant's; a small value for a quick check)")
  parser.add_argument("--block_size", type=int, default=None,
                      help="LieRE / ComRoPE block size for every row that has one (default: "
                           "each config's; e.g. 8 for LieRE-8); such rows are labelled b<N>")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--dtype", default="float32", choices=sorted(vit.DTYPES),
                      help="compute dtype (bfloat16: parameters stay float32)")
  parser.add_argument("--layerscale", type=float, default=None,
                      help="LayerScale init for every model (rope-vit _LS: 1e-4); default none")
  parser.add_argument("--torch", action="store_true",
                      help="also time benchmarks.torch_vit (mixed, none) and check parity")
  parser.add_argument("--breakdown", type=int, default=0,
                      help="also profile this many steps per row (and per torch run) and "
                           "print the time by op kind: dots, attention, normalisation, "
                           "elementwise, rope, optimizer")
  parser.add_argument("--torch_dtype", default="same", choices=["same", "float32", "bfloat16"],
                      help="torch's precision; `same` (default): --dtype, i.e. like for like "
                           "(bfloat16 = torch.autocast('cpu', bfloat16))")
  parser.add_argument("--torch_adamw", default="default", choices=["default", "foreach", "fused"])
  args = parser.parse_args(argv)
  if args.torch_dtype == "same":
    args.torch_dtype = args.dtype
  return args


def main(argv=None):
  args = parse_args(argv)

  # Bad input -> ValueError before any compilation.
  sizes = args.image_size or [112, 224]
  encodings = [p for p in args.encodings.split(",") if p]
  for p in encodings:
    if p not in ENCODINGS:
      raise ValueError(f"--encodings: {p!r} is unknown; allowed: {ENCODINGS.names()}.")
  encodings = [ENCODINGS.canonical(p) for p in encodings]   # old names (rope_mixed) too
  for name in ("batch_size", "repeats"):
    if getattr(args, name) < 1:
      raise ValueError(f"--{name}={getattr(args, name)} must be >= 1.")
  for name in ("warmup", "breakdown"):
    if getattr(args, name) < 0:
      raise ValueError(f"--{name}={getattr(args, name)} must be >= 0.")
  plan = rows(encodings, args.variant, args.block_size)
  for size in sizes:
    for _, encoding, head_dim in plan:
      try:
        vit.validate_config(model_config(encoding, variant=args.variant, head_dim=head_dim,
                                         image_size=size, dtype=args.dtype,
                                         layerscale=args.layerscale, depth=args.depth,
                                         block_size=args.block_size), size)
      except ValueError as e:
        raise ValueError(f"--image_size={size} / --variant / --encodings={encoding}: {e}") from e

  print(common.header())
  print(f"ViT {args.variant}, batch {args.batch_size}, {args.dtype} compute, AdamW, state "
        f"donated; medians of {args.repeats} round-robin repeats after {args.warmup} warm-up")
  use_torch = args.torch and print_parity()
  for size in sizes:
    rng = np.random.default_rng(0)
    batch = {
        "image": jnp.asarray(rng.standard_normal((args.batch_size, size, size, 3), np.float32)),
        "label": jax.nn.one_hot(rng.integers(0, NUM_CLASSES, args.batch_size), NUM_CLASSES),
    }
    entries = []
    for row in plan:
      print(f"  compiling {row[0]} @ {size}px", file=sys.stderr, flush=True)
      entries.append(build(row, args, size, batch))
    time_round_robin(entries, batch, repeats=args.repeats, warmup=args.warmup)
    if args.breakdown:
      for e in entries:
        print(f"  profiling {e['label']} @ {size}px", file=sys.stderr, flush=True)
        e["op_kinds"], e["state"] = op_breakdown.profile(e["step"], (e["state"], batch),
                                                         steps=args.breakdown)
    torch_results = {}
    if use_torch:
      for encoding in TORCH_ENCODINGS:
        if any(e["label"] == encoding for e in entries):
          print(f"  torch {encoding} @ {size}px", file=sys.stderr, flush=True)
          result = run_torch(args, encoding, size)
          if result:
            torch_results[encoding] = result
    print(f"\n{size}x{size} px ({(size // vit.parse_variant(args.variant)[1]) ** 2} patches)")
    print_table(entries, size, args.batch_size, torch_results)
    if args.breakdown:
      print_breakdown(entries, torch_results)
    for e in entries:  # Free this size's states and executables before the next size.
      e.clear()
  print("\n'vs none': step time over the `none` row of the same head_dim (none@63 for @63 "
        "rows), same process. GFLOP/s: XLA cost-analysis FLOPs / median time (torch GF/s: the "
        "same FLOPs / torch's time).")
  if use_torch:
    print("JAX/torch = torch ms/step / JAX ms/step (> 1: JAX faster); torch: "
          f"{args.torch_dtype}, AdamW {args.torch_adamw}, run after the JAX rows.")


if __name__ == "__main__":
  main()
