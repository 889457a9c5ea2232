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


def header() -> str:
  dev = jax.devices()[0]
  return (f"jax {jax.__version__} | {dev.platform} ({dev.device_kind}) x{jax.device_count()} | "
          f"{platform.processor() or platform.machine()} | {os.cpu_count()} cores | "
          f"allocator: {allocator()}")


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
