"""FLOPs of a compiled step (XLA's cost analysis) and the peak FLOP/s of a device, for MFU.

For an SPMD program XLA analyses the per-device (partitioned) module, so the count is already
per device: a batch-sharded matmul on 4 devices reports a quarter of the 1-device FLOPs.

Model FLOPs utilisation (MFU) = achieved FLOP/s per device / the device's peak FLOP/s. The
peak comes from, in this order: `training.peak_tflops_per_device` if set; a measured float32
matmul rate for CPU devices (no table can know a CPU's cores, clock and vector units); the
table `PEAK_TFLOPS` of dense bfloat16 peaks by `jax.Device.device_kind`.
"""
import functools
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

# Dense (no 2:4 sparsity) bfloat16 matrix-unit peak per jax device, in TFLOP/s, by the exact
# `device_kind` JAX reports for TPUs (one device = one chip from v4 on) and by a product-name
# fragment for NVIDIA GPUs (first match wins, so the specific names come first). Sources:
#   TPU v4 275, v5e 197, v5p 459, v6e (Trillium) 918: cloud.google.com/tpu/docs/v4, .../v5e,
#     .../v5p, .../v6e ("peak compute per chip, bf16"). JAX calls v5e "TPU v5 lite", v5p
#     "TPU v5" and v6e "TPU v6 lite" (jax tests/pallas/tpu_info_test.py).
#   A100 (SXM and PCIe) 312: NVIDIA A100 datasheet, "BF16 Tensor Core 312 TFLOPS | 624*"
#     (* = with sparsity).
#   H100 SXM 989, PCIe 756, NVL 835: NVIDIA H100 datasheet, BF16 Tensor Core 1,979 / 1,513 /
#     1,671 TFLOPS "with sparsity", halved for dense.
#   H200 SXM 989, NVL 835: NVIDIA H200 datasheet, BF16 Tensor Core 1,979 / 1,671 TFLOPS with
#     sparsity, halved.
# float32 steps on these devices cannot reach the bf16 peak (TF32 is half of it on GPUs), so
# their MFU reads low: it is relative to what the chip can do, not to what float32 can do.
TPU_PEAK_TFLOPS = {
    "TPU v4": 275.0,
    "TPU v5 lite": 197.0, "TPU v5e": 197.0,
    "TPU v5": 459.0, "TPU v5p": 459.0,
    "TPU v6 lite": 918.0, "TPU v6e": 918.0,
}
GPU_PEAK_TFLOPS = (  # (fragment of the lower-cased device_kind, TFLOP/s), first match wins.
    ("h200 nvl", 835.0), ("h200", 989.0),
    ("h100 nvl", 835.0), ("h100 pcie", 756.0), ("h100", 989.0),
    ("a100", 312.0),
)


def flops_per_device(compiled: Any) -> float | None:
  """FLOPs one device executes per call of `compiled` (a `jax.stages.Compiled`).

  Returns None when the backend gives no estimate. The count covers the forward pass, the
  backward pass and the optimizer update, as compiled (fused ops count once; transcendental
  functions are reported separately by XLA and not included).
  """
  try:
    analysis = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except  # Some backends do not implement it.
    return None
  if isinstance(analysis, (list, tuple)):  # Older jax: one dict per module.
    analysis = analysis[0] if analysis else None
  if not analysis or "flops" not in analysis:
    return None
  flops = float(analysis["flops"])
  return flops if flops > 0 else None


def table_peak_tflops(device_kind: str) -> float | None:
  """The bf16 dense peak (TFLOP/s) of a TPU / GPU `device_kind`; None if not in the table."""
  if device_kind in TPU_PEAK_TFLOPS:
    return TPU_PEAK_TFLOPS[device_kind]
  kind = device_kind.lower()
  for fragment, tflops in GPU_PEAK_TFLOPS:
    if fragment in kind:
      return tflops
  return None


@functools.lru_cache(maxsize=8)
def measured_peak_tflops(devices: tuple[jax.Device, ...], size: int = 512,
                         repeats: int = 5) -> float:
  """Measured float32 matmul TFLOP/s per device with every device of `devices` busy at once.

  Each device multiplies its own [size, size] matrices in one jit-ted call (batch-sharded), so
  devices that share cores (several fake CPU devices of one host) share them here as in a
  training step. Best of `repeats` timed calls after a warm-up; cached per device set, so a
  process measures once (~0.1 s on 2 cores).
  """
  mesh = jax.sharding.Mesh(np.array(devices), ("d",))
  a = jax.device_put(np.full((len(devices), size, size), 0.5, np.float32),
                     NamedSharding(mesh, P("d")))
  matmul = jax.jit(lambda x: jnp.einsum("nij,njk->nik", x, x,
                                        precision=jax.lax.Precision.HIGHEST))
  matmul(a).block_until_ready()  # Compile and warm up.
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    matmul(a).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2 * size ** 3 / best / 1e12


def check_override(override: float | None) -> None:
  """ValueError naming training.peak_tflops_per_device unless it is None or positive."""
  if override is not None and not override > 0:
    raise ValueError(f"training.peak_tflops_per_device={override} must be positive (or None "
                     "to use the table / the CPU measurement).")


def peak_tflops_per_device(devices: Sequence[jax.Device],
                           override: float | None = None) -> tuple[float | None, str]:
  """(peak TFLOP/s of one of `devices`, where it comes from) for MFU; (None, why) if unknown.

  Args:
    devices: this process's devices of the run (all of one kind).
    override: `training.peak_tflops_per_device` (None: look up or measure).
  """
  check_override(override)
  if override is not None:
    return float(override), "training.peak_tflops_per_device"
  device = devices[0]
  if device.platform == "cpu":
    return measured_peak_tflops(tuple(devices)), "measured float32 matmul"
  peak = table_peak_tflops(device.device_kind)
  if peak is None:
    return None, (f"device kind {device.device_kind!r} is not in trainer/cost.py's table; set "
                  "training.peak_tflops_per_device for MFU")
  return peak, f"bf16 dense peak of {device.device_kind}"


def mfu(tflops_per_device: float, peak_tflops: float) -> float:
  """Model FLOPs utilisation: achieved / peak FLOP/s (a fraction, 1.0 = the peak)."""
  return tflops_per_device / peak_tflops
