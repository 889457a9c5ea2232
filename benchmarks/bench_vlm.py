"""Cost of the VLM's rotary schemes: position ids on the host and the jitted training step.

  python -m benchmarks.bench_vlm                          # configs/vlm_*.py:cpu, every scheme
  python -m benchmarks.bench_vlm --config_arg=smoke --repeats=3 --only=vanilla,circle_age
  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 python -m benchmarks.bench_vlm

Issue 5 asks that building position ids happens in the input pipeline, vectorised, at < 5% of
a step, and that every scheme's step is within 3% of vanilla 1-D RoPE's. For each scheme of
configs/vlm_common.py (same config mode for all), on the first training batch (samples 0..B-1
of the "train" split, as the trainer's step 1 sees them) this measures, in one process:

  * pos cold / warm: the host time of the collator's positions part (data/vlm_pipeline.py:
    group the rows by layout, one `PositionTable` lookup per distinct layout, one broadcast
    copy into [2, B, L, 3]). Cold = a fresh table (every layout computed by the scheme's
    position function), warm = the table already holds the batch's layouts (steady state).
  * collate cold / warm: the whole `Collator.__call__` (tokens, images, masks, positions).
  * step: the median wall time of one training step built exactly as train.py builds it
    (`trainer.loop.build` + `jit_train_step`: forward, backward and AdamW, state donated), on
    that batch already on device. Repeats are interleaved across schemes (round-robin, each
    round starting at the next scheme) so load spikes hit every scheme alike; "vs 1-D" =
    median step / vanilla's median step and "paired" = median over rounds of (step /
    vanilla's step in the same round), the steadier of the two on a shared machine.
  * flops, transc., bytes: XLA's cost analysis of the compiled step relative to vanilla's
    (exact, noise-free: a scheme doing more work per step shows up here first).
  * rotary: the rotary part alone, forward + backward, at the model's shapes:
    the scheme entry's `tables` from the batch's ids and its `rotate` on a distinct
    q [B, L, Hq, D] and k [B, L, Hkv, D] per decoder layer, as the model does it (inside Flax
    modules, one per layer, so schemes with parameters, GRAPE's planes, create them per layer
    and get their gradient too); with its share of the scheme's step.

The samples are made directly (no Prefetch thread), so nothing runs in the background while
timing. In training the collator runs in the Prefetch thread, overlapped with the step, so the
%-of-step columns are an upper bound on what the ids can cost.
"""
import argparse
import statistics
import time

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from configs import vlm_common
from data import spatial_scenes
from data import vlm_pipeline
from models import vlm_schemes
import tasks
from trainer import loop
from trainer import mesh as mesh_lib
from trainer import step as step_lib

BASELINE = "vanilla"  # 1-D RoPE over the flattened sequence.


def positions_part(table: vlm_pipeline.PositionTable, samples, length: int) -> np.ndarray:
  """The positions part of `vlm_pipeline.Collator.__call__`: float32 [2, B, L, 3].

  Kept line-for-line equal to the collator's code (checked against the collator's output in
  `measure_host`), so that this part can be timed on its own.
  """
  by_layout = {}
  for b, s in enumerate(samples):
    by_layout.setdefault(table.key(s.layout, s.seconds_per_frame), []).append(b)
  pos = np.zeros((2, len(samples), length, 3), np.float32)
  for key, rows in by_layout.items():
    p = np.stack(table(*key))
    pos[:, np.asarray(rows), :p.shape[1]] = p[:, None]
  return pos


def _median_host(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def measure_host(config, positions_fn, samples, repeats: int) -> dict:
  """Host seconds of the positions part and of the whole collate, cold and warm."""
  d = config.data
  collate = vlm_pipeline.Collator(d, positions_fn)
  batch = collate(samples)
  table = vlm_pipeline.PositionTable(positions_fn)
  pos = positions_part(table, samples, d.max_len)
  for i, key in enumerate(("positions", "positions_alt")):
    if not np.array_equal(pos[i], batch[key]):
      raise AssertionError(f"positions_part differs from Collator's {key}: update this "
                           f"benchmark to follow data/vlm_pipeline.py.")
  warm = vlm_pipeline.Collator(d, positions_fn)
  warm(samples)
  return {
      "layouts": len(table),
      "pos_cold": _median_host(
          lambda: positions_part(vlm_pipeline.PositionTable(positions_fn), samples, d.max_len),
          repeats),
      "pos_warm": _median_host(lambda: positions_part(table, samples, d.max_len), repeats),
      "collate_cold": _median_host(
          lambda: vlm_pipeline.Collator(d, positions_fn)(samples), repeats),
      "collate_warm": _median_host(lambda: warm(samples), repeats),
      "batch": batch,
  }


class _LayerRotary(nn.Module):
  """One decoder layer's rotation (`Scheme.rotate` with this module: per-layer parameters)."""
  scheme: Any

  @nn.compact
  def __call__(self, q, k, table):
    return self.scheme.rotate(self, q, k, table)


class _Rotary(nn.Module):
  """The decoder's rotary work: `Scheme.tables` once, then every layer's rotation."""
  scheme: Any
  settings: Any

  @nn.compact
  def __call__(self, q, k, positions, positions_alt):
    per_layer = self.scheme.tables(self, self.settings, positions, positions_alt)
    total = 0.0
    for i, (qi, ki, a) in enumerate(zip(q, k, per_layer)):
      rq, rk = _LayerRotary(self.scheme, name=f"layer_{i}")(qi, ki, a)
      total += jnp.sum(rq * qi) + jnp.sum(rk * ki)
    return total


def rotary_fwd_bwd(scheme: vlm_schemes.Scheme, settings: vlm_schemes.RotarySettings,
                   batch: dict, key) -> tuple:
  """(jitted fn, args): the decoder's rotary work, forward and backward, alone.

  One table per id set (`Scheme.tables`), then each layer rotates its own q and k (distinct
  arrays, so XLA cannot merge the layers' applications); the gradient w.r.t. q and k (and the
  scheme's own parameters, if any: GRAPE's planes) goes back through the rotations, as in the
  training step.
  """
  b, l = batch["tokens"].shape
  depth, d = settings.num_layers, settings.head_dim
  keys = jax.random.split(key, 2 * depth)
  # Separate arrays per layer, not slices of one stacked array: the gradient of a stacked
  # array would be a pad-and-add of the layers' pieces, a fusion the model does not have.
  q = tuple(jax.random.normal(keys[i], (b, l, settings.num_heads, d)) for i in range(depth))
  k = tuple(jax.random.normal(keys[depth + i], (b, l, settings.num_kv_heads, d))
            for i in range(depth))

  module = _Rotary(scheme, settings)
  params = module.init(key, q, k, batch["positions"], batch["positions_alt"])

  def loss(params, q, k, positions, positions_alt):
    return module.apply(params, q, k, positions, positions_alt)

  fn = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
  return fn, (params, q, k, batch["positions"], batch["positions_alt"])


def _cost(compiled) -> dict:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per module
    analysis = analysis[0] if analysis else {}
  return {k: float(analysis.get(k, float("nan"))) for k in ("flops", "transcendentals",
                                                             "bytes accessed")}


class SchemeStep:
  """One scheme's compiled training step, its (donated) state and its first batch on device."""

  def __init__(self, scheme: str, config_arg: str, host_repeats: int):
    self.scheme = scheme
    config = vlm_common.get_config(scheme, config_arg)
    setup = loop.build(config, jax.devices()[:1], task=tasks.get_task(config))
    task = setup.task
    spec = spatial_scenes.GenSpec.from_config(config.data)
    samples = [spatial_scenes.make_sample(spec, seed=config.seed, split="train", index=i)
               for i in range(config.training.batch_size)]
    self.host = measure_host(config, task.positions_fn, samples, host_repeats)
    batch = mesh_lib.global_batch(self.host.pop("batch"), setup.mesh)
    self.state = jax.jit(step_lib.make_init_fn(task, setup.tx),
                         out_shardings=mesh_lib.replicated(setup.mesh))(
                             jax.random.key(config.seed))
    self.batch = batch
    self.step = loop.jit_train_step(setup).lower(self.state, batch).compile()
    self.cost = _cost(self.step)
    self.rotary = rotary_fwd_bwd(task.model.scheme, task.model.rotary, batch,
                                 jax.random.key(1))
    self.rotary_seconds = None
    self.times = []

  def run(self, record: bool) -> None:
    t0 = time.perf_counter()
    self.state, metrics = self.step(self.state, self.batch)
    jax.block_until_ready((self.state, metrics))
    if record:
      self.times.append(time.perf_counter() - t0)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config_arg", default="cpu", choices=["smoke", "cpu"],
                      help="configs/vlm_*.py mode (default cpu, the README results' config)")
  parser.add_argument("--repeats", type=int, default=10, help="timed steps per scheme")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps per scheme")
  parser.add_argument("--host_repeats", type=int, default=20,
                      help="timed repeats of the host-side positions / collate measurements")
  parser.add_argument("--only", default="", help="comma-separated schemes (vanilla is added)")
  args = parser.parse_args(argv)
  only = [s for s in args.only.split(",") if s]
  unknown = [s for s in only if s not in vlm_common.SCHEMES]
  if unknown:
    raise ValueError(f"--only: unknown schemes {unknown}; allowed: "
                     f"{', '.join(vlm_common.SCHEMES)}.")
  schemes = [s for s in vlm_common.SCHEMES if not only or s in only or s == BASELINE]
  for flag, low in (("repeats", 1), ("host_repeats", 1), ("warmup", 0)):
    if getattr(args, flag) < low:
      raise ValueError(f"--{flag}={getattr(args, flag)} must be >= {low}.")

  print(common.header())
  runs = []
  for s in schemes:
    t0 = time.perf_counter()
    runs.append(SchemeStep(s, args.config_arg, args.host_repeats))
    print(f"  {s}: built and compiled in {time.perf_counter() - t0:.1f} s", flush=True)
  for r in range(args.warmup + args.repeats):   # round-robin: one step of each scheme in turn
    shift = r % len(runs)   # a different scheme first each round (no fixed-position bias)
    for run in runs[shift:] + runs[:shift]:
      run.run(record=r >= args.warmup)
  for run in runs:   # small (< 1% of a step): its own medians, after the steps
    run.rotary_seconds = common.median_seconds(run.rotary[0], run.rotary[1],
                                               repeats=args.host_repeats)

  cfg = vlm_common.get_config(BASELINE, args.config_arg)
  m = cfg.model
  print(f"\nconfigs/vlm_*.py:{args.config_arg}: batch {cfg.training.batch_size} x "
        f"{cfg.data.max_len} tokens, decoder width {m.width}, depth {m.depth}, "
        f"{m.num_heads}x{m.head_dim} heads ({m.num_kv_heads} KV); {args.repeats} steps per "
        f"scheme, round-robin; medians")
  ref = next(r for r in runs if r.scheme == BASELINE)
  base = statistics.median(ref.times)
  print(f"{'scheme':<18}{'step ms':>9}{'min ms':>8}{'vs 1-D':>8}{'paired':>8}{'flops':>8}"
        f"{'transc.':>9}{'bytes':>8}{'rotary ms':>11}{'rotary %':>10}")
  slow = []
  for run in runs:
    t = statistics.median(run.times)
    paired = statistics.median(a / b for a, b in zip(run.times, ref.times))
    rel = {k: run.cost[k] / ref.cost[k] if ref.cost[k] else float("nan") for k in run.cost}
    print(f"{run.scheme:<18}{t * 1e3:9.1f}{min(run.times) * 1e3:8.1f}{t / base:8.3f}"
          f"{paired:8.3f}{rel['flops']:8.3f}{rel['transcendentals']:9.3f}"
          f"{rel['bytes accessed']:8.3f}"
          f"{run.rotary_seconds * 1e3:11.3f}{100 * run.rotary_seconds / t:9.2f}%", flush=True)
    if min(t / base, paired) > 1.03:
      slow.append(run.scheme)
  print("\nhost: position ids and batch (ms; % = share of the scheme's median step)")
  print(f"{'scheme':<18}{'layouts':>8}{'pos cold':>10}{'pos warm':>10}{'collate c':>11}"
        f"{'collate w':>11}{'pos c %':>9}{'pos w %':>9}{'coll c %':>9}{'coll w %':>9}")
  for run in runs:
    t = statistics.median(run.times)
    h = run.host
    pct = lambda x: 100 * x / t  # pylint: disable=cell-var-from-loop
    print(f"{run.scheme:<18}{h['layouts']:8d}{h['pos_cold'] * 1e3:10.2f}"
          f"{h['pos_warm'] * 1e3:10.3f}{h['collate_cold'] * 1e3:11.2f}"
          f"{h['collate_warm'] * 1e3:11.2f}{pct(h['pos_cold']):8.2f}%{pct(h['pos_warm']):8.3f}%"
          f"{pct(h['collate_cold']):8.2f}%{pct(h['collate_warm']):8.2f}%")
  print("\n'vs 1-D' = median step / vanilla's; 'paired' = median over rounds of step / vanilla's "
        "step in the same round; flops, transc., bytes = XLA cost analysis of the step / "
        "vanilla's. "
        "rotary = angles + q/k rotation of every layer, forward+backward, alone. "
        "layouts = distinct layouts in the batch; pos = the collator's position ids (cold: "
        "empty layout cache, warm: steady state); collate = the whole batch.")
  if slow:
    print(f"more than 3% slower than {BASELINE} (median and paired): {', '.join(slow)} "
          f"(re-run with more --repeats on a quiet machine before reading much into it)")


if __name__ == "__main__":
  main()
