"""Graceful stop on SIGTERM (preemption) and SIGINT (Ctrl-C): finish the step, save, exit.

The signal handler only sets a flag; the training loop polls `should_stop(step)` after each
step. With several processes, all of them must stop after the same step (checkpointing is a
collective), so the flag is OR-ed across processes every `sync_every` steps; a single process
stops right after the step in which the signal arrived.
"""
import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils


class StopOnSignal:
  """Context manager that turns SIGTERM / SIGINT into a stop request polled by the loop."""

  def __init__(self, *, sync_every: int = 1,
               signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)):
    self.sync_every = max(1, int(sync_every))
    self.signals = signals
    self.received: int | None = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    self.received = signum

  def __enter__(self) -> "StopOnSignal":
    # Python runs signal handlers only in the main thread; elsewhere (e.g. a test runner's
    # worker thread) there is no handler and the run simply cannot be stopped by a signal.
    if threading.current_thread() is threading.main_thread():
      for s in self.signals:
        if signal.getsignal(s) is signal.SIG_IGN:
          continue  # Ignored on purpose (nohup, a shell's background job): leave it so.
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}
    return False

  def should_stop(self, step: int) -> bool:
    """Whether every process should stop after `step` (a collective when multi-process)."""
    if jax.process_count() == 1:
      return self.received is not None
    if step % self.sync_every:
      return False
    flags = multihost_utils.process_allgather(np.int32(self.received is not None))
    return bool(np.any(flags))

  @property
  def signal_name(self) -> str:
    return signal.Signals(self.received).name if self.received else "stop request"
