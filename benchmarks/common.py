"""Timing helpers shared by the benchmarks: medians of jitted calls, allocator and device info."""
import os
import platform
import statistics
import time
from typing import Callable, Sequence

import jax


def allocator() -> str:
  """Which malloc this process uses: it decides most memory-bound numbers on CPU."""
  preload = os.environ.get("LD_PRELOAD", "")
  if "tcmalloc" in preload:
    return "tcmalloc (LD_PRELOAD)"
  if "jemalloc" in preload:
    return "jemalloc (LD_PRELOAD)"
  return "glibc malloc"


def cpu() -> str:
  """CPU model and the vector / matrix extensions that decide XLA:CPU's kernels (Linux; else
  the platform string). Benchmarks land on different machines: bf16 only pays with
  AVX-512-BF16 or AMX."""
  try:
    with open("/proc/cpuinfo") as f:
      info = f.read()
  except OSError:
    return platform.processor() or platform.machine()
  field = lambda key: next((line.split(":", 1)[1].strip() for line in info.splitlines()
                            if line.startswith(key)), "")
  flags = set(field("flags").split())
  isa = [name for flag, name in (("avx2", "AVX2"), ("avx512f", "AVX-512"),
                                 ("avx512_bf16", "AVX-512-BF16"), ("amx_bf16", "AMX-BF16"))
         if flag in flags]
  family, model = field("cpu family"), field("model")
  return f"{field('model name') or platform.machine()} (family {family} model {model}; " \
         f"{', '.join(isa) or 'no AVX2'})"


def header() -> str:
  dev = jax.devices()[0]
  flags = os.environ.get("XLA_FLAGS")
  return (f"jax {jax.__version__} | {dev.platform} ({dev.device_kind}) x{jax.device_count()} | "
          f"{cpu()} | {os.cpu_count()} cores | allocator: {allocator()}"
          + (f" | XLA_FLAGS={flags}" if flags else ""))


def median_seconds(fn: Callable, args: Sequence, *, repeats: int = 20, warmup: int = 2) -> float:
  """Median wall time of `fn(*args)` (already jitted), after compiling and `warmup` calls."""
  for _ in range(warmup + 1):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def paired_rounds(fns: dict, *, rounds: int, inner: int = 5, warmup: int = 2) -> dict:
  """Round-robin timing of several jitted calls in one process.

  `fns` maps a name to `(fn, args)`. Each round times every entry once (the median of `inner`
  calls), starting at a different entry each round, so load spikes and allocator states hit
  every entry alike. Returns name -> list of per-round seconds; divide two lists elementwise
  and take the median for a ratio that holds within one process on a shared machine.
  """
  names = list(fns)
  for name in names:
    fn, args = fns[name]
    for _ in range(warmup + 1):
      jax.block_until_ready(fn(*args))
  times = {name: [] for name in names}
  for r in range(rounds):
    shift = r % len(names)
    for name in names[shift:] + names[:shift]:
      fn, args = fns[name]
      samples = []
      for _ in range(inner):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        samples.append(time.perf_counter() - t0)
      times[name].append(statistics.median(samples))
  return times
