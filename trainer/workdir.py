"""Keeps a workdir to one run: a lock, a config that cannot silently change, checked paths.

* `check_path(workdir)`: a usable directory (or one that can be created), else ValueError
  naming the path - before anything is written or compiled.
* `Lock(workdir)`: one live run per local workdir. `<workdir>/train.lock` is held with `fcntl.flock`
  for the life of the run and names its holder (host, pid, start time). The kernel releases the
  flock when the process dies however it dies, so a lock left by a killed run is detected (the
  file still names a holder but nobody holds it) and taken over. A second run on a workdir in
  use gets `WorkdirInUseError` naming the other process. The file is emptied, not deleted, on
  release (deleting it would let two runs lock two different files of the same name).
* A gs:// workdir (trainer/files.py) has no lock: object stores offer no lock that a killed
  run releases, so `Lock` there only logs that a second run on it would not be stopped.
* `config_changes(old, new)`: the keys in which two configs differ, ignoring `RUN_KEYS` (run
  length, logging and checkpoint periods, the mesh), which a re-run may change freely.
"""
import datetime
import errno
import json
import os
import socket
from typing import Any, Mapping

try:
  import fcntl
except ImportError:  # Not POSIX: no locking (the lock file still names the holder).
  fcntl = None

LOCK_FILE = "train.lock"

# Keys a re-run may change without --allow_config_change: how long the run is, how often it
# logs, evaluates and saves, and how many checkpoints it keeps. Everything else (model, data,
# optimizer, seed, ...) changes what is trained and is refused.
RUN_KEYS = frozenset({
    "training.total_steps", "training.total_epochs", "training.log_every_steps",
    "training.tensorboard", "training.peak_tflops_per_device", "platform",
    "eval.every_steps", "eval.every_epochs",
    "checkpoint.every_steps", "checkpoint.every_epochs", "checkpoint.keep",
    "checkpoint.async_save",
    # The mesh only places the same computation on the devices (results equal up to the
    # reduction order), and checkpoints restore under any mesh: a run may resume on another
    # slice or with another FSDP split.
    "mesh.data", "mesh.fsdp",
    # How many processes / threads compute the input batches: the batches are the same.
    "data.worker_processes", "data.num_workers", "data.prefetch",
    # Read only when a run starts (step 0): resuming ignores it, so it may change or be absent
    # from the config.json of runs written before it existed.
    "init_from",
})
# Keys that set the run's length: changing them also changes the learning-rate schedule.
LENGTH_KEYS = frozenset({"training.total_steps", "training.total_epochs"})


class WorkdirInUseError(RuntimeError):
  """Another live process holds the workdir's lock."""


class ConfigChangedError(ValueError):
  """The config differs from the one the workdir was started with."""

  def __init__(self, message: str, keys: list[str]):
    super().__init__(message)
    self.keys = keys


def _is_remote(path: str) -> bool:
  return "://" in path  # As trainer/files.py's is_remote (not imported: it imports epath).


def check_path(workdir: str, flag: str = "--workdir") -> None:
  """ValueError naming `workdir` if it is a file, or cannot be written or created.

  A URL: its scheme must be supported and its packages installed (`files.check_remote`);
  access rights are checked by the first write.
  """
  if _is_remote(workdir):
    from trainer import files  # pylint: disable=g-import-not-at-top  # Keeps this module jax-free.
    files.check_remote(workdir, flag)
    return
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise ValueError(f"{flag}={workdir}: is a file, not a directory.")
  existing = path
  while not os.path.exists(existing):  # The nearest existing ancestor must be writable.
    parent = os.path.dirname(existing)
    if parent == existing:
      break
    existing = parent
  if not os.path.isdir(existing):
    raise ValueError(f"{flag}={workdir}: {existing} is a file, not a directory.")
  if not os.access(existing, os.W_OK | os.X_OK):
    what = "is not writable" if existing == path else f"cannot be created ({existing} is not " \
        "writable)"
    raise ValueError(f"{flag}={workdir}: {what}.")


def _describe(holder: Mapping[str, Any]) -> str:
  return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
          f"(started {holder.get('started', '?')}; command: {holder.get('command', '?')})")


class Lock:
  """`with Lock(workdir):` holds the workdir's lock (see the module docstring)."""

  def __init__(self, workdir: str, command: str = ""):
    self.path = os.path.join(workdir, LOCK_FILE)
    self.command = command
    self.taken_over: dict | None = None  # The holder named by a stale lock file, if any.
    self.remote = _is_remote(workdir)  # gs://: not locked (module docstring).
    self._fd: int | None = None

  def _read(self) -> dict:
    try:
      os.lseek(self._fd, 0, os.SEEK_SET)
      text = os.read(self._fd, 1 << 16).decode(errors="replace")
      return json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
      return {"pid": "?", "host": "?", "started": "?", "command": "unreadable lock file"}

  def acquire(self) -> "Lock":
    """Takes the lock; WorkdirInUseError naming the holder if a live process has it."""
    if self.remote:
      return self
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    if fcntl is not None:
      try:
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError as e:
        if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
          raise
        holder = self._read()
        os.close(self._fd)
        self._fd = None
        raise WorkdirInUseError(
            f"workdir {os.path.dirname(self.path)} is in use by another run: {_describe(holder)}."
            " Stop it first, or use another --workdir.") from None
    previous = self._read()
    if previous:
      self.taken_over = previous
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "command": self.command}
    os.ftruncate(self._fd, 0)
    os.lseek(self._fd, 0, os.SEEK_SET)
    os.write(self._fd, json.dumps(me).encode())
    os.fsync(self._fd)
    return self

  @property
  def remote_message(self) -> str | None:
    """What to log for a workdir that cannot be locked (None for a local one)."""
    if not self.remote:
      return None
    return (f"Workdir {os.path.dirname(self.path)} is on an object store, which has no locks: "
            "nothing stops a second run on it, so start one run per workdir (or use a local / "
            "Cloud Storage FUSE path to get the lock).")

  @property
  def stale_message(self) -> str | None:
    """What to log when a lock left by a killed run was taken over (None otherwise)."""
    if not self.taken_over:
      return None
    return (f"Took over the lock of {os.path.dirname(self.path)} left by a run that is gone: "
            f"{_describe(self.taken_over)}.")

  def release(self) -> None:
    if self._fd is None:
      return
    try:
      os.ftruncate(self._fd, 0)  # Empty = released cleanly (see the module docstring).
    finally:
      os.close(self._fd)  # Closing releases the flock.
      self._fd = None

  def __enter__(self) -> "Lock":
    return self.acquire()

  def __exit__(self, *exc) -> bool:
    self.release()
    return False


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """{"a.b.c": leaf} of a nested mapping."""
  out = {}
  for k, v in d.items():
    if isinstance(v, Mapping):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
  """{key: (old value, new value)} for every differing key outside `RUN_KEYS`.

  Both are nested dicts as read from JSON (`new` should go through a JSON round trip too, so
  that tuples and lists compare equal). A key missing on one side shows as `<absent>`.
  """
  old, new = flatten(old), flatten(new)
  absent = "<absent>"
  return {k: (old.get(k, absent), new.get(k, absent))
          for k in sorted(old.keys() | new.keys())
          if k not in RUN_KEYS and old.get(k, absent) != new.get(k, absent)}


def length_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
  """{key: (old, new)} for the run-length keys that differ."""
  old, new = flatten(old), flatten(new)
  return {k: (old.get(k), new.get(k)) for k in sorted(LENGTH_KEYS) if old.get(k) != new.get(k)}


def run_label(config: Mapping[str, Any]) -> str:
  """What a run trains, from its config: the ViT encoding or the VLM scheme (+ "+ape").

  Reads `model.encoding` (ViT, config-file names: "axial", "mixed", ...), else the older
  `model.posenc`, else `model.scheme` (VLM); adds "+ape" when `model.ape` is true (unless
  the name already says so). The seed is not part of it (see `run_seed`).
  """
  model = config.get("model") or {}
  name = None
  for key in ("encoding", "posenc", "scheme"):
    if model.get(key) not in (None, ""):
      name = str(model.get(key))
      break
  name = name or str(config.get("task") or "run")
  if model.get("ape") and "ape" not in name.split("_") and not name.endswith("+ape"):
    name += "+ape"
  return name


def run_seed(config: Mapping[str, Any]) -> int | None:
  seed = config.get("seed")
  return None if seed is None else int(seed)
