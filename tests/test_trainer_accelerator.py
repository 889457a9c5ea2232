"""A run that asks for a TPU / GPU and finds only CPUs stops at start-up naming the package."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from configs import common
from trainer import accelerator

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("platform, multihost, want", [
    ("any", False, ()), ("any", True, ("tpu", "gpu")), ("tpu", False, ("tpu",)),
    ("gpu", True, ("gpu",)),
])
def test_wanted_platforms(platform, multihost, want):
  assert accelerator.wanted(platform, multihost) == want


def test_bad_platform_names_the_key_and_allowed_values():
  with pytest.raises(ValueError, match=r"config.platform='cuda'; allowed: any, tpu, gpu"):
    accelerator.wanted("cuda", False)


def test_default_config_wants_nothing():
  assert common.training_defaults().platform == "any"
  assert accelerator.check_installed("any", False, installed=()) is None
  assert accelerator.check_devices("any", False, {"cpu"}, {}) is None


def test_installed_check_names_the_missing_package():
  assert accelerator.check_installed("tpu", False, installed={"tpu"}) is None
  assert accelerator.check_installed("any", True, installed={"gpu"}) is None
  msg = accelerator.check_installed("gpu", False, installed={"tpu"})
  assert "config.platform='gpu'" in msg and "jax[cuda12]" in msg and "jax[tpu]" not in msg
  msg = accelerator.check_installed("any", True, installed=())
  assert msg.startswith("--multihost") and "jax[tpu]" in msg and "jax[cuda12]" in msg


def test_device_check_after_initialisation():
  assert accelerator.check_devices("tpu", False, {"tpu"}, {}) is None
  assert accelerator.check_devices("any", True, {"gpu"}, {}) is None
  msg = accelerator.check_devices("tpu", False, {"cpu"}, {"JAX_PLATFORMS": "cpu"})
  assert "found only cpu devices" in msg and "jax[tpu]" in msg and "JAX_PLATFORMS=cpu" in msg
  msg = accelerator.check_devices("gpu", False, {"cpu"}, {})
  assert "jax[cuda12]" in msg and "nvidia-smi" in msg and "\n" not in msg


def test_installed_platforms_matches_importable_packages():
  import importlib.util  # pylint: disable=g-import-not-at-top
  tpu = importlib.util.find_spec("libtpu") is not None
  assert ("tpu" in accelerator.installed_platforms()) == tpu


@pytest.mark.skipif(accelerator.installed_platforms() != set(),
                    reason="needs a machine without jax[tpu] / jax[cuda12] (CI, this repo's)")
def test_train_py_multihost_without_accelerator_stops_at_start_up(tmp_path):
  # One subprocess (~8 s of imports); config.platform takes the same path (the checks above).
  extra = ["--multihost"]
  expected = ["--multihost asks for a TPU pod or GPU cluster", "jax[tpu]", "jax[cuda12]"]
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}  # As a user's shell.
  workdir = tmp_path / "run"
  proc = subprocess.run(
      [sys.executable, "train.py", "--config=configs/vit_axial.py:smoke",
       f"--workdir={workdir}"] + extra,
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith("train.py:")]
  assert len(lines) == 1 and all(e in lines[0] for e in expected), proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert not workdir.exists()  # Stopped before anything was written.


def test_a_config_json_from_before_the_new_keys_resumes(tmp_path):
  # platform and training.peak_tflops_per_device came with issue 15: a workdir written before
  # them has neither, and resuming it with today's config is not a config change.
  from trainer import loop  # pylint: disable=g-import-not-at-top
  config = common.training_defaults()
  old = json.loads(config.to_json_best_effort())
  del old["platform"], old["training"]["peak_tflops_per_device"]
  (tmp_path / "config.json").write_text(json.dumps(old))
  assert loop.check_config(config, str(tmp_path)).changes == {}
  config.platform = "tpu"  # Where a run executes may change on a re-run.
  assert loop.check_config(config, str(tmp_path)).changes == {}
