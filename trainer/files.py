"""Workdir files on local disks and on Cloud Storage (gs://), through one path API: etils.epath.

epath is what orbax (our checkpoints) and big_vision use: `epath.Path("gs://b/run")` reads and
writes through gcsfs (fsspec) or TensorFlow's gfile, `epath.Path("/tmp/run")` through `os`.
Everything the trainer writes into a workdir (config.json, metrics.jsonl, TensorBoard events,
the moved-aside damaged checkpoints) goes through this module or epath; checkpoints go to
orbax, which takes the same path strings.

Which workdirs work:
* local paths, including Cloud Storage FUSE mounts (/gcs/bucket/...): everything, with a
  `flock` lock (trainer/workdir.py);
* gs://bucket/...: everything but the lock (object stores have no locks: a second run on the
  same gs:// workdir is not stopped). Needs the `gcs` extra: gcsfs for epath, and
  google-cloud-storage, which orbax asks whether the bucket has a hierarchical namespace
  before deleting old checkpoints;
* other URL schemes are refused by `check_remote`: orbax writes checkpoint arrays with
  TensorStore, whose spec orbax builds for local paths and gs:// only (an s3:// or memory://
  path would become a local directory named "s3:").

Object stores cannot append to or rename a file atomically, but a whole-object write is
atomic; so `write_atomic` writes a temporary file and renames it only on local disks, and
`append_text` on gs:// rewrites the object.
"""
import importlib.util
import os

from etils import epath

REMOTE_SCHEMES = ("gs",)
# Importable modules each remote scheme needs: epath's gs:// backend (gcsfs, or TensorFlow's
# gfile when TensorFlow is installed) and orbax's bucket query (google-cloud-storage).
_NEEDS = {"gs": (("gcsfs", "tensorflow"), ("google.cloud.storage",))}
INSTALL_GCS = 'pip install -e ".[gcs]" (gcsfs, google-cloud-storage)'


def is_remote(path: os.PathLike | str) -> bool:
  """Whether `path` is a URL (gs://...) rather than a local path."""
  return "://" in os.fspath(path)


def scheme(path: os.PathLike | str) -> str:
  return os.fspath(path).split("://", 1)[0] if is_remote(path) else ""


def absolute(path: os.PathLike | str) -> str:
  """A local path made absolute (orbax needs that); a URL unchanged."""
  path = os.fspath(path)
  return path if is_remote(path) else os.path.abspath(path)


def _importable(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except (ImportError, ValueError):  # A parent package is missing.
    return False


def missing_packages(url: str) -> list[str]:
  """The modules `url`'s scheme needs that are not importable here (alternatives joined by |)."""
  return ["|".join(alternatives) for alternatives in _NEEDS.get(scheme(url), ())
          if not any(_importable(m) for m in alternatives)]


def check_remote(url: str, flag: str = "--workdir") -> None:
  """ValueError naming `flag` if `url`'s scheme is unsupported or its packages are missing."""
  s = scheme(url)
  if s not in REMOTE_SCHEMES:
    raise ValueError(
        f"{flag}={url}: {s}:// is not supported; use a local path (a Cloud Storage FUSE "
        f"mount works too) or {', '.join(f'{r}://' for r in REMOTE_SCHEMES)} (orbax writes "
        "checkpoints with TensorStore only there).")
  missing = missing_packages(url)
  if missing:
    raise ValueError(f"{flag}={url}: {s}:// needs {', '.join(missing)}: {INSTALL_GCS}.")


def path(p: os.PathLike | str) -> epath.Path:
  return epath.Path(p)


def read_text(p: os.PathLike | str) -> str | None:
  """The file's text, or None if it does not exist."""
  p = epath.Path(p)
  return p.read_text() if p.exists() else None


def write_atomic(p: os.PathLike | str, text: str) -> None:
  """Replaces the file's content; a kill leaves the old or the new content, never a part."""
  p = epath.Path(p)
  p.parent.mkdir(parents=True, exist_ok=True)
  if is_remote(p):  # One object upload: atomic by itself (a rename would be copy + delete).
    p.write_text(text)
    return
  tmp = p.parent / (p.name + ".tmp")
  tmp.write_text(text)
  tmp.replace(p)


def append_text(p: os.PathLike | str, text: str) -> None:
  """Appends `text` (object stores cannot append: the object is rewritten)."""
  p = epath.Path(p)
  if is_remote(p):
    write_atomic(p, (read_text(p) or "") + text)
    return
  with p.open("a") as f:
    f.write(text)
