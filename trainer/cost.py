"""FLOPs of a compiled step from XLA's cost analysis.

For an SPMD program XLA analyses the per-device (partitioned) module, so the count is already
per device: a batch-sharded matmul on 4 devices reports a quarter of the 1-device FLOPs.
"""
from typing import Any


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
