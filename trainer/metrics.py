"""Scalar metrics: one JSON object per line in `<workdir>/metrics.jsonl`, plus TensorBoard.

The workdir may be local or gs:// (trainer/files.py): both files go through etils.epath.

Only process 0 writes (the writer is a no-op elsewhere). Each record is
`{"step": int, "time": unix seconds, "<name>": float, ...}` with names like "train/loss",
"test/accuracy", "perf/images_per_sec". On resume, records of steps after the restored
checkpoint (written by the interrupted run, about to be recomputed) are dropped, so the file
reads like one uninterrupted run.
"""
import io
import json
import math
import os
import time
from typing import Mapping

from etils import epath

from trainer import files

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def read_jsonl(path: str) -> list[dict]:
  """All records of a metrics file, local or gs:// (an empty list if there is none)."""
  text = files.read_text(path)
  return [json.loads(line) for line in (text or "").splitlines() if line.strip()]


class _ObjectEventFile:
  """A TensorBoard event file on an object store: kept in memory, uploaded whole on flush.

  tensorboardX's own gs:// writer does the same through google-cloud-storage's client; this
  one goes through epath like every other workdir file. Scalar events are ~50 bytes, so even
  a long run's file stays small enough to re-upload at every flush.
  """

  def __init__(self, path: str):
    self.path = epath.Path(path)
    self.buffer = io.BytesIO()

  def write(self, data: bytes) -> None:
    self.buffer.write(data)

  def flush(self) -> None:
    self.path.write_bytes(self.buffer.getvalue())

  def close(self) -> None:
    self.flush()


class _ObjectEventFileFactory:
  """tensorboardX's writer-factory protocol (tensorboardX/record_writer.py)."""

  def open(self, path: str) -> _ObjectEventFile:
    return _ObjectEventFile(path)

  def directory_check(self, path: str) -> None:
    epath.Path(path).mkdir(parents=True, exist_ok=True)


class MetricWriter:
  """Writes scalars to JSONL and TensorBoard; disabled writers do nothing."""

  def __init__(self, workdir: str, *, enabled: bool, tensorboard: bool = True):
    self.enabled = enabled
    self.path = os.fspath(epath.Path(workdir) / METRICS_FILE)
    self._tb = None
    if not enabled:
      return
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    if tensorboard:
      import tensorboardX  # Imported lazily: only process 0 writes.
      if files.is_remote(workdir):
        tensorboardX.record_writer.register_writer_factory(files.scheme(workdir),
                                                           _ObjectEventFileFactory())
      self._tb = tensorboardX.SummaryWriter(os.fspath(epath.Path(workdir) / TENSORBOARD_DIR))

  def drop_after(self, step: int) -> None:
    """Removes JSONL records with a step > `step` (used when resuming from `step`)."""
    if not self.enabled or not epath.Path(self.path).exists():
      return
    kept = [r for r in read_jsonl(self.path) if r["step"] <= step]
    # Atomic: a kill here leaves the old or the new file.
    files.write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled or not scalars:
      return
    record = {"step": int(step), "time": time.time()}
    record.update({k: _jsonable(v) for k, v in scalars.items()})
    files.append_text(self.path, json.dumps(record) + "\n")
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
