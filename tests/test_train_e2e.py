"""End to end: train.py / eval.py on the command line, every encoding through the loop.

Command-line runs are subprocesses on 4 fake CPU devices; they share a persistent compilation
cache (a cached executable is the same program, so results do not change, only start-up time).
"""
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

import conftest

import tasks
from configs import vit_common
from trainer import loop
from trainer import mesh as mesh_lib
from trainer import metrics as metrics_lib


def _build(config, devices=None):
  """loop.build with the config's task (the caller picks it; the trainer imports no task)."""
  return loop.build(config, devices, task=tasks.get_task(config))

REPO = pathlib.Path(__file__).resolve().parents[1]
# A smaller smoke run: one layer, a few steps, extrapolation to smaller and larger grids.
TINY = ["--config.model.depth=1", "--config.eval.image_sizes=(4, 12)",
        "--config.optim.warmup_steps=2"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  e = dict(os.environ)
  # The fast-compile options of conftest.py: these runs are dominated by compile time.
  e.update(XLA_FLAGS="--xla_force_host_platform_device_count=4 "
           + conftest.FAST_COMPILE_XLA_FLAGS, JAX_PLATFORMS="cpu",
           JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
           JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  return e


def run(script, args, env, check=True):
  proc = subprocess.run([sys.executable, script] + args, cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)
  if check and proc.returncode:
    raise AssertionError(f"{script} exited with {proc.returncode}:\n{proc.stderr[-4000:]}")
  return proc


def _load_eval():
  """eval.py as a module (in-process calls skip a second interpreter start-up). Imported under
  its own name, as the other tests do: a second copy would define its absl flags again."""
  import eval as eval_script  # pylint: disable=g-import-not-at-top
  return eval_script


def test_train_cli_then_eval_writes_table_and_plot(tmp_path, env):
  # axial_ape: rope-vit's RoPE + APE (the APE is resized at other grids; the axial ladder
  # takes eval.py's test-time options, checked at the end).
  runs = {"spherical": tmp_path / "spherical", "axial_ape": tmp_path / "axial_ape"}
  for encoding, workdir in runs.items():
    proc = run("train.py", [f"--config=configs/vit_{encoding}.py:smoke",
                            f"--workdir={workdir}", "--config.training.total_steps=12",
                            "--config.eval.every_steps=6"] + TINY, env)
    assert "finished at step 12" in proc.stdout
  out = tmp_path / "cmp" / "resolution"
  proc = run("eval.py", [f"--workdirs={runs['spherical']},{runs['axial_ape']}",
                         "--resolutions=4,8,12", f"--output={out}", "--labels=sph,ape"], env)
  assert "sph" in proc.stdout and "ape" in proc.stdout  # The printed table.
  result = json.loads(pathlib.Path(f"{out}.json").read_text())
  assert [r["label"] for r in result["runs"]] == ["sph", "ape"]
  for r, workdir in zip(result["runs"], runs.values()):
    assert r["resolutions"] == [4, 8, 12] and r["train_image_size"] == 8
    assert all(0.0 <= a <= 1.0 for a in r["accuracy"].values())
    # eval.py restores the best checkpoint and must reproduce the training loop's own
    # evaluation of it, at the training resolution and at the extrapolated ones.
    records = metrics_lib.read_jsonl(str(workdir / "metrics.jsonl"))
    logged = next(x for x in records if x["step"] == r["step"] and "eval/accuracy" in x)
    assert r["accuracy"]["8"] == pytest.approx(logged["eval/accuracy"], abs=1e-6)
    assert r["accuracy"]["12"] == pytest.approx(logged["eval_12px/accuracy"], abs=1e-6)
    assert r["loss"]["4"] == pytest.approx(logged["eval_4px/loss"], rel=1e-5)
  png = pathlib.Path(f"{out}.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
  assert result["options"] == {"rope_scaling": "none", "positions": None, "protocol": "resize",
                               "num_examples": None}
  assert all((r["rope_scaling"], r["positions"], r["protocol"]) == ("none", None, "resize")
             for r in result["runs"])

  # Test-time options, in-process: an encoding without an integer ladder is refused before
  # anything is evaluated; YaRN on the axial run (canvas protocol) is recorded in the JSON
  # and the label.
  ev = _load_eval()
  with pytest.raises(ValueError, match=r"spherical.*model\.rope_scaling='yarn'.*accept"):
    ev.prepare_run(str(runs["spherical"]), [8], "best", None, rope_scaling="yarn")
  with pytest.raises(ValueError, match=r"--positions=index_interp: encoding='spherical'"):
    ev.prepare_run(str(runs["spherical"]), [8], "best", None, positions="index_interp")
  with pytest.raises(ValueError, match=r"eval\.image_sizes contains 4 .*'canvas'"):
    ev.prepare_run(str(runs["axial_ape"]), [4, 12], "best", None, protocol="canvas")
  with pytest.raises(ValueError, match=r"--num_examples=0"):
    ev.prepare_run(str(runs["axial_ape"]), [8], "best", None, num_examples=0)
  yarn = ev.evaluate_run(ev.prepare_run(str(runs["axial_ape"]), [12], "best", None,
                                        rope_scaling="yarn", positions="index",
                                        protocol="canvas", num_examples=50))
  yarn["label"] = "axial+ape" + ev.test_time_suffix("yarn", "index")
  options = {"rope_scaling": "yarn", "positions": "index", "protocol": "canvas"}
  ev.write_report([yarn], str(tmp_path / "yarn"), options)
  report = json.loads((tmp_path / "yarn.json").read_text())
  assert report["options"] == options
  (got,) = report["runs"]
  assert (got["label"], got["rope_scaling"], got["positions"], got["protocol"]) == (
      "axial+ape+index+yarn", "yarn", "index", "canvas")
  assert got["num_examples"] == 50          # --num_examples: the first 50 test images
  assert [r["num_examples"] for r in result["runs"]] == [359, 359]  # digits' whole test split


# One config per position-encoding family (vit_common.FAMILIES); every config is exported for
# TPU / GPU in tests/test_export_models.py and built and run at several grids in tests/test_vit.py.
@pytest.mark.parametrize("encoding", vit_common.FAMILIES)
def test_each_family_lowers_train_and_eval_steps(encoding):
  # Compiling a model per family would take minutes on CI's CPUs; lowering runs everything up
  # to XLA (config validation, init shapes, the loss, its gradient, the optimizer, the
  # shardings of the 4-device mesh, eval at a larger grid). Full runs: the test above
  # (Spherical, APE), tests/test_trainer_processes.py (Spherical) and the model's own tests.
  config = vit_common.load(encoding, "smoke")
  with config.unlocked():
    config.eval.image_sizes = (4, 12)
  setup = _build(config)
  state = loop.abstract_state(setup, config.seed)
  local = setup.task.init_inputs()
  b = config.training.batch_size
  batch = {k: jax.ShapeDtypeStruct((b,) + v.shape[1:], v.dtype,
                                   sharding=mesh_lib.batch_sharding(setup.mesh))
           for k, v in local.items()}
  lowered = loop.jit_train_step(setup).lower(state, batch)
  out_state, metrics = lowered.out_info
  assert jax.tree.structure(out_state) == jax.tree.structure(state)
  assert {"loss", "accuracy", "grad_norm", "lr"} <= set(metrics)
  # Eval at a grid other than training's (the model at every grid: tests/test_vit.py).
  eval_step = loop.make_eval_step(setup.task, setup.mesh)
  shape = (config.eval.batch_size, 12, 12, 1)
  eval_batch = {"image": jax.ShapeDtypeStruct(shape, np.float32),
                "label": jax.ShapeDtypeStruct(shape[:1], np.int32),
                "mask": jax.ShapeDtypeStruct(shape[:1], np.bool_)}
  sums = eval_step.lower(state["params"], eval_batch).out_info
  assert set(sums) == {"accuracy", "loss", "count"}


def test_bad_options_fail_at_startup_on_the_command_line(tmp_path, env):
  # (More bad options, in-process: tests/test_trainer_configs.py.)
  cases = [("--config.model.encoding=hyperbolic", "model.encoding"),
           ("--config.data.image_size=9", "data.image_size=9")]
  for flag, option in cases:
    proc = run("train.py", ["--config=configs/vit_axial.py:smoke", f"--workdir={tmp_path}",
                            flag], env, check=False)
    assert proc.returncode == 1 and option in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "checkpoints").exists()
  proc = run("train.py", ["--config=configs/vit_axial.py:turbo", f"--workdir={tmp_path}"],
             env, check=False)
  assert proc.returncode != 0 and "'turbo' is unknown" in proc.stderr



@pytest.mark.parametrize("flag", ["--num_examples=0", "--batch_size=-4"])
def test_eval_refuses_a_bad_count_once_naming_the_flag(tmp_path, env, flag):
  # A flag's value is checked once, before any workdir is looked at (not "2 of 2 workdirs are
  # not usable").
  proc = run("eval.py", [f"--workdirs={tmp_path / 'a'},{tmp_path / 'b'}",
                         f"--output={tmp_path / 'r'}", flag], env, check=False)
  assert proc.returncode != 0 and f"flag {flag}" in proc.stderr, proc.stderr[-2000:]
  assert "workdirs are not usable" not in proc.stderr


def test_vlm_eval_refuses_a_bad_count_naming_the_flag(capsys):
  from tasks import vlm_eval  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit):
    vlm_eval.main(["vlm_eval", "--workdirs=/nowhere", "--num_examples=0"])
  assert "argument --num_examples: 0 must be >= 1" in capsys.readouterr().err
