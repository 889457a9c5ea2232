"""MFU: the peak-FLOP/s table, the CPU measurement, the override, and the logged arithmetic."""
import types

import jax
import pytest

from trainer import cost
from trainer import progress as progress_lib


def _device(kind, platform):
  return types.SimpleNamespace(device_kind=kind, platform=platform)


@pytest.mark.parametrize("kind, tflops", [
    # device_kind strings as JAX reports them (v5e = "TPU v5 lite", v5p = "TPU v5", ...).
    ("TPU v4", 275.0), ("TPU v5 lite", 197.0), ("TPU v5", 459.0), ("TPU v5p", 459.0),
    ("TPU v6 lite", 918.0),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A100 80GB PCIe", 312.0),
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA H200", 989.0), ("NVIDIA H200 NVL", 835.0),
    # Not in the table: v4i is not a v4, other GPUs are not guessed.
    ("TPU v4 lite", None), ("TPU v3", None), ("NVIDIA L4", None),
])
def test_table_lookup_by_device_kind(kind, tflops):
  assert cost.table_peak_tflops(kind) == tflops


def test_peak_sources_override_table_measurement():
  assert cost.peak_tflops_per_device([_device("TPU v5 lite", "tpu")]) == \
      (197.0, "bf16 dense peak of TPU v5 lite")
  assert cost.peak_tflops_per_device([_device("TPU v5 lite", "tpu")], override=150.0) == \
      (150.0, "training.peak_tflops_per_device")
  peak, why = cost.peak_tflops_per_device([_device("NVIDIA L4", "gpu")])
  assert peak is None and "training.peak_tflops_per_device" in why
  with pytest.raises(ValueError, match=r"training.peak_tflops_per_device=0.0 must be positive"):
    cost.peak_tflops_per_device([_device("TPU v4", "tpu")], override=0.0)


def test_cpu_peak_is_measured_once():
  devices = jax.devices()
  cost.measured_peak_tflops.cache_clear()  # Another test's run may have measured already.
  peak, why = cost.peak_tflops_per_device(devices)
  assert why == "measured float32 matmul" and 1e-4 < peak < 100  # TFLOP/s of 1/4 of a CPU.
  again, _ = cost.peak_tflops_per_device(devices)
  info = cost.measured_peak_tflops.cache_info()
  assert again == peak and (info.misses, info.hits) == (1, 1)  # Measured once.


def test_progress_logs_mfu_next_to_tflops(monkeypatch):
  clock = iter([0.0, 10.0])
  monkeypatch.setattr(progress_lib.time, "perf_counter", lambda: next(clock))
  p = progress_lib.Progress(total_steps=1000, start_step=0, examples_per_step=64, unit="images",
                            flops_per_device=2e12, enabled=False, peak_tflops_per_device=275.0)
  out = p.measure(100)  # 100 steps of 2 TFLOP each in 10 s: 20 TFLOP/s of 275.
  assert out["perf/tflops_per_device"] == pytest.approx(20.0)
  assert out["perf/mfu"] == pytest.approx(20.0 / 275.0)
  assert "20.000 TFLOP/s/device MFU 7.3%" in p.line(100, out)
