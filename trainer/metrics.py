"""Scalar metrics: one JSON object per line in `<workdir>/metrics.jsonl`, plus TensorBoard.

Only process 0 writes (the writer is a no-op elsewhere). Each record is
`{"step": int, "time": unix seconds, "<name>": float, ...}` with names like "train/loss",
"test/accuracy", "perf/images_per_sec". On resume, records of steps after the restored
checkpoint (written by the interrupted run, about to be recomputed) are dropped, so the file
reads like one uninterrupted run.
"""
import json
import math
import os
import time
from typing import Mapping

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def read_jsonl(path: str) -> list[dict]:
  """All records of a metrics file (an empty list if there is none)."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class MetricWriter:
  """Writes scalars to JSONL and TensorBoard; disabled writers do nothing."""

  def __init__(self, workdir: str, *, enabled: bool, tensorboard: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, METRICS_FILE)
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    if tensorboard:
      import tensorboardX  # Imported lazily: only process 0 writes.
      self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR))

  def drop_after(self, step: int) -> None:
    """Removes JSONL records with a step > `step` (used when resuming from `step`)."""
    if not self.enabled or not os.path.exists(self.path):
      return
    kept = [r for r in read_jsonl(self.path) if r["step"] <= step]
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in kept)
    os.replace(tmp, self.path)  # Atomic: a kill here leaves the old or the new file.

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled or not scalars:
      return
    record = {"step": int(step), "time": time.time()}
    record.update({k: _jsonable(v) for k, v in scalars.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, float(v), int(step))

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def _jsonable(value) -> float | str:
  value = float(value)
  return value if math.isfinite(value) else str(value)  # JSON has no nan/inf.
