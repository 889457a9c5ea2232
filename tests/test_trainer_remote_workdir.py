"""Workdirs on gs://: config.json, metrics.jsonl, TensorBoard and checkpoints through epath.

No bucket is reachable here, so `fake_gcs` stands in for Cloud Storage at the two points where
the real thing would leave the machine, and nowhere else:
* fsspec's "gs" / "gcs" protocols (what gcsfs registers, and what etils.epath uses for gs://
  paths) become a local directory (fsspec's DirFileSystem), so every epath call of our code
  and of orbax runs its gs:// branch;
* orbax's TensorStore spec for gs:// (`gcs_utils.get_kvstore_for_gcs`: the "gcs" driver) becomes
  the "file" driver on the same directory, and its question to Cloud Storage's API whether the
  bucket has a hierarchical namespace is answered "no".
The test then reads the directory back: everything must be under <root>/bucket/run, nothing in
a local folder called "gs:".
"""
import importlib
import json

import fsspec
import jax
import numpy as np
import pytest
from etils import epath
from etils.epath import backend as epath_backend
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem
from orbax.checkpoint._src.path import gcs_utils

import test_trainer_loop as toy  # The toy task and config of the loop's tests.
from trainer import checkpoint as ckpt_lib
from trainer import files
from trainer import loop
from trainer import metrics as metrics_lib
from trainer import workdir as workdir_lib

RUN = "gs://bucket/run"


@pytest.fixture
def fake_gcs(tmp_path, monkeypatch):
  """The local directory that plays the Cloud Storage root (bucket "bucket")."""
  root = tmp_path / "gcs"
  root.mkdir()

  class FakeGCS(DirFileSystem):
    protocol = ("gs", "gcs")
    cachable = False

    def __init__(self, *args, **kwargs):
      del args, kwargs
      super().__init__(path=str(root), fs=LocalFileSystem())

    @classmethod
    def _strip_protocol(cls, path):
      path = fsspec.utils.stringify_path(path)
      for prefix in ("gs://", "gcs://"):
        path = path.removeprefix(prefix)
      return path.rstrip("/")

  def kvstore(path):  # gs://bucket/a/b -> the file driver on <root>/bucket/a/b.
    bucket, key = gcs_utils.parse_gcs_path(path, add_trailing_slash=False)
    return {"driver": "file", "path": str(root / bucket / key)}

  # fsspec's registry of protocols (private; monkeypatch restores it after the test; the
  # module, since `fsspec.registry` is its read-only view).
  registry = importlib.import_module("fsspec.registry")._registry  # pylint: disable=protected-access
  for protocol in FakeGCS.protocol:
    monkeypatch.setitem(registry, protocol, FakeGCS)
  monkeypatch.setenv("EPATH_USE_TF", "false")  # Else epath uses TensorFlow's gfile if installed.
  monkeypatch.setattr(files, "missing_packages", lambda url: [])  # gcsfs: the fake stands in.
  monkeypatch.setattr(gcs_utils, "get_kvstore_for_gcs", kvstore)
  monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
  cached = epath_backend._FileSystemSpecBackend._get_filesystem  # pylint: disable=protected-access
  cached.cache_clear()  # epath caches one filesystem per protocol: drop other tests' fakes.
  monkeypatch.chdir(tmp_path)  # A path mistaken for a local one would land in ./gs:.
  yield root / "bucket" / "run"
  cached.cache_clear()
  assert not (tmp_path / "gs:").exists()


def test_epath_goes_to_the_fake_bucket(fake_gcs):
  files.write_atomic(f"{RUN}/a.txt", "x")
  assert (fake_gcs / "a.txt").read_text() == "x"
  assert not (fake_gcs / "a.txt.tmp").exists()  # One upload, no rename on object stores.


def test_config_and_metrics_round_trip(fake_gcs):
  config = toy.toy_config()
  workdir_lib.check_path(RUN)
  check = loop.check_config(config, RUN)
  assert check.old is None
  loop.write_config(config, RUN, check, 0)
  assert loop.read_config(RUN).to_dict() == json.loads(config.to_json_best_effort())
  assert json.loads((fake_gcs / "config.json").read_text())["task"] == "toy"

  writer = metrics_lib.MetricWriter(RUN, enabled=True, tensorboard=True)
  for step in (1, 2, 3):
    writer.write(step, {"train/loss": 1.0 / step})
  writer.drop_after(2)  # Resuming at step 2: step 3's record goes.
  writer.write(3, {"train/loss": 0.25})
  writer.close()
  records = metrics_lib.read_jsonl(f"{RUN}/metrics.jsonl")
  assert [(r["step"], r["train/loss"]) for r in records] == [(1, 1.0), (2, 0.5), (3, 0.25)]
  assert records == metrics_lib.read_jsonl(str(fake_gcs / "metrics.jsonl"))
  (events,) = (fake_gcs / "tensorboard").iterdir()
  assert events.name.startswith("events.out.tfevents") and b"train/loss" in events.read_bytes()

  changed = toy.toy_config(seed=1)
  with pytest.raises(workdir_lib.ConfigChangedError, match="seed"):
    loop.check_config(changed, RUN)


def test_checkpoints_round_trip_keep_and_move_aside(fake_gcs):
  state = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "step": np.int32(0)}
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = ckpt_lib.abstract_like(state, sharding)
  ckpts = ckpt_lib.Checkpoints(f"{RUN}/checkpoints", keep=1, async_save=False)
  for step in (1, 2):
    ckpts.save(step, {"w": state["w"] * step, "step": np.int32(step)})
  ckpts.wait()
  assert ckpts.all_steps() == [2]  # keep=1 deleted step 1 through orbax's gs:// deleter.
  restored = ckpts.restore_checked(2, abstract)
  np.testing.assert_array_equal(restored["w"], state["w"] * 2)
  ckpts.close()
  assert sorted(p.name for p in (fake_gcs / "checkpoints").iterdir()) == ["2"]

  dest = ckpt_lib.move_aside(f"{RUN}/checkpoints", 2)
  assert dest == f"{RUN}/damaged_checkpoints/2"
  assert (fake_gcs / "damaged_checkpoints" / "2").is_dir()
  assert not (fake_gcs / "checkpoints" / "2").exists()


def test_train_in_a_gs_workdir(fake_gcs):
  # The loop's own paths (config, metrics, checkpoints, lock); 2 steps, one eval and save.
  config = toy.toy_config(**{"training.total_steps": 2, "eval.every_steps": 2,
                             "checkpoint.every_steps": 2, "training.log_every_steps": 1})
  result = toy._train(config, RUN)  # pylint: disable=protected-access
  assert (result.status, result.step) == ("finished", 2)
  assert [p.name for p in (fake_gcs / "checkpoints").iterdir()] == ["2"]
  assert not (fake_gcs / "train.lock").exists()  # No lock on an object store.
  records = metrics_lib.read_jsonl(f"{RUN}/metrics.jsonl")
  assert [r["step"] for r in records if "train/loss" in r] == [1, 2]
  assert loop.read_config(RUN).training.total_steps == 2


def test_unsupported_or_uninstalled_remote_workdirs_are_refused(monkeypatch):
  for url in ("s3://bucket/run", "memory://run"):
    with pytest.raises(ValueError, match=r"--workdir=.*:// is not supported.*gs://"):
      workdir_lib.check_path(url)
  monkeypatch.setattr(files, "_importable", lambda module: False)
  with pytest.raises(ValueError, match=r"gcsfs\|tensorflow, google.cloud.storage.*\.\[gcs\]"):
    workdir_lib.check_path(RUN)


def test_lock_is_skipped_on_gs_and_says_so():
  lock = workdir_lib.Lock(RUN).acquire()
  assert lock.remote_message and "no locks" in lock.remote_message
  lock.release()
  assert workdir_lib.Lock("/tmp/x").remote_message is None
