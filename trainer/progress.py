"""Progress: a tqdm bar (on a terminal) and throughput measurements for the logs.

`Progress.measure` is called right after the host has synchronised with the devices (fetching
the step metrics), so the time it measures is the true device time of the steps since the last
measurement. Time spent in evaluation and checkpointing is excluded by `restart_clock`.
"""
import sys
import time

import tqdm

from trainer import cost


def format_duration(seconds: float) -> str:
  """E.g. 3725 -> '1h02m05s', 65 -> '1m05s'."""
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  if h:
    return f"{h}h{m:02d}m{s:02d}s"
  return f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
  """Counts steps, measures throughput and estimates the remaining time."""

  def __init__(self, *, total_steps: int, start_step: int, examples_per_step: int,
               unit: str, flops_per_device: float | None, enabled: bool,
               peak_tflops_per_device: float | None = None):
    """Sets up the bar.

    Args:
      total_steps: the last step of the run.
      start_step: the step training starts from (0, or the restored checkpoint's).
      examples_per_step: global units (images, tokens) processed per step.
      unit: what is counted, e.g. "images".
      flops_per_device: FLOPs per step per device (cost analysis), or None.
      peak_tflops_per_device: the device's peak TFLOP/s (trainer/cost.py), or None: MFU is
        logged when both are known.
      enabled: whether to draw a bar at all (process 0 only; tqdm itself also stays silent
        when stderr is not a terminal).
    """
    self.total_steps = total_steps
    self.examples_per_step = examples_per_step
    self.unit = unit
    self.flops_per_device = flops_per_device
    self.peak_tflops_per_device = peak_tflops_per_device
    self._bar = None
    if enabled:
      self._bar = tqdm.tqdm(total=total_steps, initial=start_step, unit="step",
                            dynamic_ncols=True, disable=not sys.stderr.isatty())
    self._last_step = start_step
    self._last_time = time.perf_counter()

  def update(self, step: int) -> None:
    """Advances the bar to `step` (cheap; no device synchronisation)."""
    if self._bar is not None:
      self._bar.update(step - self._bar.n)

  def restart_clock(self, step: int) -> None:
    """Starts a new measurement interval at `step` (after evals / checkpoints / compiles)."""
    self._last_step = step
    self._last_time = time.perf_counter()

  def measure(self, step: int) -> dict[str, float]:
    """Throughput since the last measurement; call right after a device synchronisation.

    Returns:
      {"perf/steps_per_sec", "perf/<unit>_per_sec", "perf/tflops_per_device" (if the FLOPs
      are known), "perf/mfu" (if the peak is known too; a fraction), "perf/eta_sec"}; empty if
      no step ran since the last measurement.
    """
    now = time.perf_counter()
    steps, elapsed = step - self._last_step, now - self._last_time
    self._last_step, self._last_time = step, now
    if steps <= 0 or elapsed <= 0:
      return {}
    rate = steps / elapsed
    out = {"perf/steps_per_sec": rate,
           f"perf/{self.unit}_per_sec": rate * self.examples_per_step,
           "perf/eta_sec": (self.total_steps - step) / rate}
    if self.flops_per_device:
      out["perf/tflops_per_device"] = rate * self.flops_per_device / 1e12
      if self.peak_tflops_per_device:
        out["perf/mfu"] = cost.mfu(out["perf/tflops_per_device"], self.peak_tflops_per_device)
    return out

  def set_postfix(self, **values) -> None:
    if self._bar is not None:
      self._bar.set_postfix(values, refresh=False)

  def line(self, step: int, scalars: dict[str, float]) -> str:
    """A one-line log summary, e.g. 'step 200/1000 (20.0%) loss 2.31 | 512 images/s ...'."""
    parts = [f"step {step}/{self.total_steps} ({100 * step / self.total_steps:.1f}%)"]
    parts += [f"{k.split('/', 1)[-1]} {v:.4g}" for k, v in scalars.items()
              if k.startswith("train/")]
    if f"perf/{self.unit}_per_sec" in scalars:
      parts.append(f"| {scalars[f'perf/{self.unit}_per_sec']:.1f} {self.unit}/s")
    if "perf/tflops_per_device" in scalars:
      parts.append(f"{scalars['perf/tflops_per_device']:.3f} TFLOP/s/device")
    if "perf/mfu" in scalars:
      parts.append(f"MFU {100 * scalars['perf/mfu']:.1f}%")
    if "perf/eta_sec" in scalars:
      parts.append(f"ETA {format_duration(scalars['perf/eta_sec'])}")
    return " ".join(parts)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None
