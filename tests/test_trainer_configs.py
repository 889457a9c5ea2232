"""Configs: every encoding x mode builds and validates; recipes carry the chosen numbers;
bad options fail at start-up naming the option; the sweep and its launcher."""
import importlib
import os
import subprocess
import sys

import conftest
import pytest

import tasks
from configs import sweep_vit
from configs import vit_common
from models import vit
from models.vit_encodings import ENCODINGS as REGISTRY
from trainer import loop


def _build(config, devices=None):
  """loop.build with the config's task (the caller picks it; the trainer imports no task)."""
  return loop.build(config, devices, task=tasks.get_task(config))


ENCODINGS = vit_common.config_names()
MODES = (None,) + vit_common.MODES


def _config(encoding, mode=None, **overrides):
  config = vit_common.get_config(encoding, mode)
  with config.unlocked():
    for key, value in overrides.items():
      section, _, name = key.rpartition(".")
      (config[section] if section else config)[name] = value
  return config


def test_every_encoding_has_a_config_file():
  for encoding in ENCODINGS:
    module = importlib.import_module(f"configs.vit_{encoding}")
    config = module.get_config("smoke")
    assert config.model.encoding in REGISTRY.names()   # The registry name, no renaming.
    assert config.model.encoding == encoding.removesuffix("_ape")
    assert config.model.ape == encoding.endswith("_ape")
    assert f"configs/vit_{encoding}.py:smoke" in module.__doc__  # The command is documented.
  # Every registered encoding has its config file, under its registry name.
  assert set(REGISTRY.names()) <= set(ENCODINGS)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_config_builds_and_validates(encoding, mode):
  config = vit_common.load(encoding, mode)
  assert config.is_locked
  setup = _build(config)  # Task (model + data validation), mesh, optimizer.
  lengths = setup.lengths
  assert 0 < lengths["warmup"] < lengths["total"]
  assert config.model.train_image_size == config.data.image_size


def test_cifar100_recipe_numbers():
  config = vit_common.get_config("spherical")
  dims = vit.model_dims(config.model)
  assert (dims["width"], dims["num_heads"], dims["head_dim"], dims["depth"],
          dims["patch_size"]) == (360, 6, 60, 12, 4)
  assert config.data.name == "cifar100" and config.data.image_size == 32
  assert (config.data.mixup, config.data.cutmix, config.data.three_augment) == (0.8, 1.0, True)
  assert (config.optim.name, config.optim.lr, config.optim.weight_decay) == ("lamb", 4e-3, 0.05)
  assert (config.training.batch_size, config.training.total_epochs) == (1024, 400.0)
  assert (config.model.dropout, config.model.drop_path) == (0.1, 0.1)
  lengths = _build(config).lengths
  # 50000 images / 1024 per step: 400 epochs = 19532 steps, 5 warm-up epochs = 245 steps.
  assert (lengths["total"], lengths["warmup"]) == (19532, 245)


def test_imagenet_recipe_numbers():
  config = vit_common.get_config("spherical_learned", "imagenet")
  assert vit.model_dims(config.model)["head_dim"] == 63  # Triplets (Table 5).
  assert vit.model_dims(vit_common.get_config("axial", "imagenet").model)["head_dim"] == 64
  assert (config.data.name, config.data.image_size, config.data.mixup) == (
      "imagenet2012", 224, 0.0)
  assert (config.training.batch_size, config.training.total_epochs, config.optim.lr) == (
      512, 200.0, 4e-3)


def test_liere_is_dense_and_follows_head_dim():
  config = vit_common.get_config("liere", "smoke")
  assert config.model.block_size == config.model.head_dim == 12
  config.model.head_dim = 24  # As --config.model.head_dim=24 would.
  assert config.model.block_size == 24
  # Only LieRE is dense: ComRoPE keeps None, its entry's default block size (2).
  comrope = vit_common.get_config("comrope_ld", "smoke").model
  assert comrope.block_size is None
  assert vit.encoding_options(comrope, REGISTRY.get("comrope_ld")).block_size == 2


def test_one_key_sets_train_and_model_resolution():
  config = vit_common.get_config("ape", "smoke")
  config.data.image_size = 12  # As --config.data.image_size=12 would.
  assert config.model.train_image_size == 12


@pytest.mark.parametrize("overrides, option", [
    ({"model.encoding": "rope_hyperbolic"}, "model.encoding"),
    ({"data.name": "mnist3d"}, "mnist3d"),
    ({"data.image_size": 9}, "data.image_size=9"),
    ({"eval.image_sizes": (4, 7)}, "eval.image_sizes=7"),
    ({"model.head_dim": 10}, "model.head_dim"),
    ({"model.variant": "XL/2"}, "model.variant"),
    ({"training.batch_size": 30}, "training.batch_size"),
    ({"optim.warmup_steps": 600}, "warm-up"),
    ({"loss": "hinge"}, "loss"),
    ({"data.eval_protocol": "canvas"}, "eval.image_sizes contains 4 with data.eval_protocol"),
    ({"model.rope_scaling": "yarn"}, "model.rope_scaling='yarn'"),
])
def test_bad_options_fail_at_startup_naming_the_option(overrides, option):
  with pytest.raises(ValueError, match=option.replace(".", r"\.")):
    _build(_config("spherical", "smoke", **overrides))


def test_bad_config_arguments():
  with pytest.raises(ValueError, match="encoding='hyperbolic'"):
    vit_common.get_config("hyperbolic")
  with pytest.raises(ValueError, match="'tpu' is unknown"):
    vit_common.get_config("axial", "tpu")
  with pytest.raises(ValueError, match="exclude each other"):
    vit_common.get_config("axial", "smoke,imagenet")


def test_sweep_lists_every_encoding_and_seed():
  runs = sweep_vit.get_sweep("smoke")
  assert len(runs) == 3 * len(ENCODINGS)
  assert {(r["config"], r["overrides"]["seed"]) for r in runs} == {
      (f"configs/vit_{e}.py:smoke", s) for e in ENCODINGS for s in range(3)}
  assert len({r["name"] for r in runs}) == len(runs)
  assert [r["config"] for r in sweep_vit.get_sweep("seeds=1,encodings=axial+liere")] == [
      "configs/vit_axial.py", "configs/vit_liere.py"]
  with pytest.raises(ValueError, match="encodings: unknown"):
    sweep_vit.get_sweep("encodings=foo")


def test_launcher_commands_of_a_sweep(tmp_path):
  # In-process (tests/test_launch.py runs the launcher and its shells end to end).
  launch_sweep = conftest.load_script("launch_sweep")
  runs = sweep_vit.get_sweep("smoke,seeds=2,encodings=spherical+ape")
  assert [r["name"] for r in runs] == ["spherical/seed0", "spherical/seed1", "ape/seed0",
                                       "ape/seed1"]
  assert launch_sweep.train_args(runs[3], str(tmp_path)) == [
      "--config=configs/vit_ape.py:smoke", f"--workdir={tmp_path}/ape/seed1", "--config.seed=1"]
  args = launch_sweep.local_sweep_args("configs/sweep_vit.py:smoke", "gs://b/s", "", False,
                                       None, [], [])
  copy, scp, ssh = launch_sweep.pod_commands(tpu_name="v4-32", zone="z", project=None,
                                             repo_dir="rope", sweep_args=args)
  assert copy[:2] == ["bash", "-c"] and "git ls-files" in copy[2]
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and "--worker=all" in scp
  assert ssh[4:8] == ["ssh", "v4-32", "--zone=z", "--worker=all"]
  assert not any(tmp_path.iterdir())  # Nothing ran.


def test_resolution_study_runs_and_evaluations():
  runs = sweep_vit.get_sweep("fmnist,resolution")
  assert len(runs) == 3 * len(sweep_vit.STUDY) == 39
  budget = {"training.total_epochs": 1.0, "eval.every_epochs": 1.0, "eval.image_sizes": "()"}
  assert {"name": "dinov3_noaug/seed2", "config": "configs/vit_dinov3.py:fmnist,augment=False",
          "overrides": {"seed": 2, **budget}} in runs
  assert sweep_vit.get_sweep("fmnist,resolution,epochs=3")[0]["overrides"][
      "training.total_epochs"] == 3.0
  for run in runs[::3]:   # every study config builds (no augmentation for dinov3_noaug)
    path, _, arg = run["config"].partition(":")
    config = importlib.import_module(path[:-3].replace("/", ".")).get_config(arg)
    assert config.data.name == "fashion_mnist"
    assert (config.model.position_augment.rescale is None) == (run["name"] != "dinov3/seed0")
  evals = {e["name"]: e for e in sweep_vit.get_evals("fmnist,resolution,seeds=2")}
  assert len(evals) == 2 * (len(sweep_vit.STUDY) + len(sweep_vit.TEST_TIME))
  assert evals["canvas/eva02+index+yarn"] == {
      "name": "canvas/eva02+index+yarn", "runs": ["eva02/seed0", "eva02/seed1"],
      "labels": ["eva02", "eva02"],   # eval.py appends +index+yarn
      "flags": {"positions": "index", "rope_scaling": "yarn", "protocol": "canvas",
                "num_examples": 2000, "resolutions": "28,36,40,48,56"}}
  assert evals["resize/dinov3_noaug"]["flags"] == {"protocol": "resize", "num_examples": 2000,
                                                   "resolutions": "16,20,28,36,40,48,56"}
  for bad in ("resolution", "smoke,resolution", "fmnist,resolution,encodings=axial",
              "fmnist,epochs=2", "fmnist,resolution,epochs=0"):
    with pytest.raises(ValueError, match="resolution"):
      sweep_vit.get_sweep(bad)
  with pytest.raises(ValueError, match="get_evals"):
    sweep_vit.get_evals("fmnist")


def test_launcher_stage_eval_runs_the_sweeps_evaluations(tmp_path):
  # --stage=eval: the sweep's eval.py commands; an existing JSON is not evaluated again.
  (tmp_path / "eval" / "resize").mkdir(parents=True)
  (tmp_path / "eval" / "resize" / "axial+yarn.json").write_text("{}")
  study = [sys.executable, "scripts/launch_sweep.py", "--stage=eval", "--dry_run",
           "--sweep=configs/sweep_vit.py:fmnist,resolution,seeds=2", "--only=axial+yarn",
           f"--workdir_root={tmp_path}"]
  lines = subprocess.run(study, capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
                         ).stdout.strip().splitlines()
  assert lines[0] == "[1/2] resize/axial+yarn: evaluated already."
  assert lines[1].startswith("[2/2] canvas/axial+yarn: ") and lines[1].endswith(
      f"eval.py --workdirs={tmp_path}/axial/seed0,{tmp_path}/axial/seed1 "
      f"--labels=axial,axial --output={tmp_path}/eval/canvas/axial+yarn --num_examples=2000 "
      "--protocol=canvas --resolutions=28,36,40,48,56 --rope_scaling=yarn")


def test_launcher_shards_split_the_sweep(tmp_path):
  # --shard=I/N: disjoint runs whose union is the sweep, for launchers pinned to one core each.
  def names(*extra):
    cmd = [sys.executable, "scripts/launch_sweep.py", "--dry_run", f"--workdir_root={tmp_path}",
           "--sweep=configs/sweep_vit.py:fmnist,resolution", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout
    return [line.split()[1].rstrip(":") for line in out.strip().splitlines()]
  every, first, second = names(), names("--shard=0/2"), names("--shard=1/2")
  assert len(every) == 39 and first == every[0::2] and second == every[1::2]
  launch_sweep = conftest.load_script("launch_sweep")
  assert launch_sweep.parse_shard("") == (0, 1) and launch_sweep.parse_shard("1/3") == (1, 3)
  for bad in ("2/2", "1", "a/b"):
    with pytest.raises(launch_sweep.app.UsageError, match="--shard"):
      launch_sweep.parse_shard(bad)

