"""A workdir is never silently mixed, overwritten or lost: train.py / eval.py / the sweep
launcher as real processes (locks and signals), on the tiny digits smoke config.

* one live run per workdir, a second one refused naming the first; SIGINT saves (exit 130);
* a lock left by a SIGKILL-ed holder is taken over;
* a changed config is refused (config.json unchanged); a damaged newest checkpoint is moved
  aside and the run resumes from the newest intact one; extending the run says what happens to
  the learning-rate schedule; eval.py skips a damaged checkpoint, labels runs from their
  config, groups seeds and flags unfinished runs, and validates every workdir first;
* bad options and paths end in one line, no traceback;
* the sweep launcher forwards SIGTERM to its run and exits with its status.
"""
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

import conftest

REPO = pathlib.Path(__file__).resolve().parents[1]
SMOKE = ["--config=configs/vit_none.py:smoke", "--config.model.depth=1",
         "--config.optim.warmup_steps=2", "--config.eval.image_sizes=()",
         "--config.data.max_eval_examples=64"]
LONG = ["--config.training.total_steps=100000", "--config.training.log_every_steps=1",
        "--config.checkpoint.every_steps=100000", "--config.eval.every_steps=100000"]
LOG_LINE = re.compile(r"^[IWEF]\d{4} ")  # absl's log lines.


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  e = dict(os.environ)
  # The fast-compile options of conftest.py: these runs are dominated by compile time.
  e.update(XLA_FLAGS="--xla_force_host_platform_device_count=2 "
           + conftest.FAST_COMPILE_XLA_FLAGS, JAX_PLATFORMS="cpu",
           JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
           JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  return e


def start(script, args, env, logs):
  """Starts a script of the repository; output to files (a full pipe would block it)."""
  logs = pathlib.Path(f"{logs}_{time.time_ns()}")
  proc = subprocess.Popen([sys.executable, script] + args, cwd=REPO, env=env,
                          stdout=open(f"{logs}.out", "w"), stderr=open(f"{logs}.err", "w"))
  proc.logs = logs
  return proc


def finish(proc, code, timeout=300):
  proc.wait(timeout=timeout)
  out = pathlib.Path(f"{proc.logs}.out").read_text()
  err = pathlib.Path(f"{proc.logs}.err").read_text()
  assert proc.returncode == code, f"exit {proc.returncode}, expected {code}:\n{err[-4000:]}"
  return out, err


def run(script, args, env, tmp_path, code=0):
  return finish(start(script, args, env, tmp_path / "log"), code)


def message_lines(err):
  """stderr without absl's log lines: what the user is told."""
  return [l for l in err.splitlines() if l.strip() and not LOG_LINE.match(l)]


def wait_until(condition, proc, what, timeout=300):
  deadline = time.time() + timeout
  while not condition():
    if proc.poll() is not None:
      raise AssertionError(f"ended before {what}:\n"
                           f"{pathlib.Path(f'{proc.logs}.err').read_text()[-4000:]}")
    assert time.time() < deadline, f"timed out waiting for {what}"
    time.sleep(0.05)


def training(workdir):
  metrics = workdir / "metrics.jsonl"
  return lambda: metrics.exists() and "train/loss" in metrics.read_text()


def steps(workdir):
  d = workdir / "checkpoints"
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def test_second_run_refused_then_sigint_saves(tmp_path, env):
  workdir = tmp_path / "run"
  first = start("train.py", SMOKE + LONG + [f"--workdir={workdir}"], env, tmp_path / "first")
  try:
    wait_until(training(workdir), first, "the first run trains")
    config = (workdir / "config.json").read_bytes()
    _, err = run("train.py", SMOKE + [f"--workdir={workdir}"], env, tmp_path, code=1)
    assert (workdir / "config.json").read_bytes() == config
    lines = message_lines(err)
    assert len(lines) == 1 and "in use" in lines[0] and f"pid {first.pid}" in lines[0], err
    assert first.poll() is None  # The first run goes on.
    first.send_signal(signal.SIGINT)
    _, err = finish(first, 130)
  finally:
    if first.poll() is None:
      first.kill()
  lines = message_lines(err)
  assert "Traceback" not in err and len(lines) == 1, err
  step = int(re.search(r"stopped by SIGINT after step (\d+); checkpoint saved", lines[0])[1])
  assert steps(workdir) == [step]
  assert (workdir / "train.lock").read_text() == ""  # Released.


def test_lock_of_a_killed_holder_is_taken_over(tmp_path, env):
  workdir = tmp_path / "run"
  # A process holding the lock like a run does (trainer/workdir.py alone: no jax import).
  holder = subprocess.Popen(
      [sys.executable, "-c",
       "import importlib.util, sys, time\n"
       "spec = importlib.util.spec_from_file_location('w', 'trainer/workdir.py')\n"
       "w = importlib.util.module_from_spec(spec); spec.loader.exec_module(w)\n"
       f"w.Lock({str(workdir)!r}, command='holder').acquire(); print('locked', flush=True)\n"
       "time.sleep(600)\n"], cwd=REPO, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  finally:
    if holder.poll() is None:
      holder.kill()
  assert f'"pid": {holder.pid}' in (workdir / "train.lock").read_text()  # Left behind.
  _, err = run("train.py", SMOKE + [f"--workdir={workdir}", "--config.training.total_steps=4"],
               env, tmp_path)
  assert re.search(rf"Took over the lock .* left by a run that is gone: pid {holder.pid}\b", err)


def _damage(step_dir, how):
  if how == "metadata":
    (step_dir / "default" / "_METADATA").unlink()
  else:  # Empty every data file.
    for f in (step_dir / "default").rglob("d/*"):
      f.write_bytes(b"")


def test_changed_config_damaged_checkpoint_extension_and_eval(tmp_path, env):
  workdir = tmp_path / "run"
  base = SMOKE + [f"--workdir={workdir}", "--config.checkpoint.every_steps=5"]
  run("train.py", base + ["--config.training.total_steps=10"], env, tmp_path)
  assert steps(workdir) == [5, 10]
  config = (workdir / "config.json").read_bytes()

  # Another learning rate and seed: refused before the workdir is touched.
  _, err = run("train.py", base + ["--config.training.total_steps=10", "--config.optim.lr=0.005",
                                   "--config.seed=3"], env, tmp_path, code=1)
  lines = message_lines(err)
  assert len(lines) == 1 and "optim.lr: 0.01 -> 0.005" in lines[0] and "seed: 0 -> 3" in lines[0]
  assert "--allow_config_change" in lines[0]
  assert (workdir / "config.json").read_bytes() == config

  # A config.json of an older version (model.posenc, no model.attention_impl, no porting
  # options, no init_from): the task's upgrade_config fills in what was added since (and
  # init_from is read only at step 0), so resuming below is not a config change.
  old = json.loads(config)
  old["model"]["posenc"] = old["model"].pop("encoding")
  del old["model"]["attention_impl"], old["model"]["rope_scaling"]
  for key in ("num_registers", "qkv_bias", "ape_resize", "rope_grid"):   # porting options
    del old["model"][key]
  del old["init_from"]
  del old["data"]["eval_protocol"]
  (workdir / "config.json").write_text(json.dumps(old))

  # The newest checkpoint damaged: moved aside, resumed from step 5; the run is also extended.
  _damage(workdir / "checkpoints" / "10", "metadata")
  _, err = run("train.py", base + ["--config.training.total_steps=15"], env, tmp_path)
  assert "The checkpoint of step 10 is damaged" in err and "Newest older checkpoint: step 5" in err
  assert (workdir / "damaged_checkpoints" / "10").is_dir()
  assert "Resumed from checkpoint at step 5." in err
  assert re.search(r"The run length changed from 10 to 15 steps .* the learning rate jumps from "
                   r"\S+ \(step 5, old schedule\) to \S+ \(step 6\)", err), err
  assert steps(workdir) == [5, 10, 15]
  assert (workdir / "config.json").read_bytes() != config  # Only the run length changed.

  # eval.py: step 15 damaged too -> latest intact is 10; a copy as seed 1 and unfinished.
  _damage(workdir / "checkpoints" / "15", "data")
  seed1 = tmp_path / "seed1"
  subprocess.run(["cp", "-r", str(workdir), str(seed1)], check=True)
  c = json.loads((seed1 / "config.json").read_text())
  c["seed"], c["training"]["total_steps"] = 1, 40
  (seed1 / "config.json").write_text(json.dumps(c))
  out_path = tmp_path / "eval" / "res"
  flags = [f"--output={out_path}", "--resolutions=8", "--checkpoint=latest"]

  # One bad workdir in the list: nothing is evaluated nor written.
  _, err = run("eval.py", [f"--workdirs={workdir},{tmp_path / 'missing'}"] + flags, env,
               tmp_path, code=1)
  assert "missing" in err and "nothing was evaluated" in err
  assert not pathlib.Path(f"{out_path}.json").exists()

  out, err = run("eval.py", [f"--workdirs={workdir},{seed1}"] + flags, env, tmp_path)
  assert "The checkpoint of step 15 is damaged" in err and "skipped" in err
  result = json.loads(pathlib.Path(f"{out_path}.json").read_text())
  runs = result["runs"]
  assert [(r["label"], r["seed"], r["step"], r["finished"]) for r in runs] == [
      ("none", 0, 10, False), ("none", 1, 10, False)]
  (group,) = result["groups"]
  assert group["n"] == 2 and group["seeds"] == [0, 1] and len(group["unfinished"]) == 2
  assert group["accuracy_std"]["8"] == pytest.approx(0.0)  # Same checkpoint twice.
  assert "none (n=2)" in out and "none seed1*" in out and f"{seed1} at step 10 of 40" in out


@pytest.mark.parametrize("args, expected", [
    (["--config.optim.lr=nan"], "optim.lr=nan must be a positive finite number"),
    (["--config.model.rope=x"], "--config.model.rope: the config has no key 'model.rope'; "
                                "closest existing key: config.model."),
    (["--config=configs/no_such.py:smoke"], "no config file 'configs/no_such.py'"),
    (["--workdir=FILE"], "is a file, not a directory"),
])
def test_bad_options_end_in_one_line(tmp_path, env, args, expected):
  (tmp_path / "file").write_text("")
  args = [a.replace("FILE", str(tmp_path / "file")) for a in args]
  workdir = [] if any(a.startswith("--workdir") for a in args) else [f"--workdir={tmp_path / 'w'}"]
  _, err = run("train.py", SMOKE + workdir + args, env, tmp_path, code=1)
  lines = message_lines(err)
  assert "Traceback" not in err and len(lines) == 1 and expected in lines[0], err
  assert not (tmp_path / "w").exists() and "compile" not in err  # Before any compilation.


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_workdir_is_one_line(tmp_path, env):
  locked = tmp_path / "ro"
  locked.mkdir(mode=0o500)
  _, err = run("train.py", SMOKE + [f"--workdir={locked / 'w'}"], env, tmp_path, code=1)
  assert message_lines(err) == [f"train.py: --workdir={locked / 'w'}: cannot be created "
                                f"({locked} is not writable)."]


def test_sweep_launcher_forwards_sigterm(tmp_path, env):
  sweep = tmp_path / "sweep.py"
  overrides = {a.split("=", 1)[0][len("--config."):]: a.split("=", 1)[1]
               for a in SMOKE[1:] + LONG}
  sweep.write_text(f"def get_sweep(arg):\n  return [{{'name': 'r', 'config': "
                   f"'configs/vit_none.py:smoke', 'overrides': {overrides!r}}}] * 2\n")
  root = tmp_path / "root"
  launcher = start("scripts/launch_sweep.py", [f"--sweep={sweep}", f"--workdir_root={root}",
                                               "--logs_in_workdir"],  # As on a TPU pod.
                   env, tmp_path / "launcher")
  try:
    wait_until(training(root / "r"), launcher, "the sweep's run trains")
    child = json.loads((root / "r" / "train.lock").read_text())["pid"]
    launcher.send_signal(signal.SIGTERM)
    out, err = finish(launcher, 143)
  finally:
    if launcher.poll() is None:
      launcher.kill()
  assert "SIGTERM forwarded; the run exited with code 143" in err
  assert out.count("[1/2]") == 1 and "[2/2]" not in out  # No further run started.
  with pytest.raises(ProcessLookupError):
    os.kill(child, 0)  # Not left running as an orphan.
  assert len(steps(root / "r")) == 1  # The run saved on SIGTERM.
  log = root / "r" / "logs" / f"train.{socket.gethostname()}.log"  # --logs_in_workdir.
  assert "train.py: stopped by SIGTERM" in log.read_text()


# In-process units of trainer/workdir.py (no jax).


def _workdir_lib():
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("workdir_lib", REPO / "trainer" / "workdir.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_run_label_reads_encoding_posenc_or_scheme():
  w = _workdir_lib()
  assert w.run_label({"model": {"encoding": "axial", "posenc": "rope_axial"}}) == "axial"
  assert w.run_label({"model": {"posenc": "rope_mixed", "ape": True}}) == "rope_mixed+ape"
  assert w.run_label({"model": {"encoding": "mixed_ape", "ape": True}}) == "mixed_ape"
  assert w.run_label({"model": {"scheme": "mrope"}}) == "mrope"
  assert w.run_seed({"seed": 2}) == 2


def test_config_changes_ignore_run_length_and_logging_keys():
  w = _workdir_lib()
  old = {"seed": 0, "optim": {"lr": 0.01}, "training": {"total_steps": 10, "log_every_steps": 5},
         "eval": {"image_sizes": [4, 12]}}
  new = {"seed": 0, "optim": {"lr": 0.01}, "training": {"total_steps": 20, "log_every_steps": 1},
         "eval": {"image_sizes": [4, 12]}, "model": {"depth": 1}}
  assert w.config_changes(old, new) == {"model.depth": ("<absent>", 1)}
  assert w.length_changes(old, new) == {"training.total_steps": (10, 20)}


def test_lock_is_exclusive_and_released(tmp_path):
  w = _workdir_lib()
  with w.Lock(str(tmp_path), command="a") as first:
    assert first.stale_message is None
    with pytest.raises(w.WorkdirInUseError, match=rf"pid {os.getpid()} on host .*command: a"):
      w.Lock(str(tmp_path)).acquire()  # flock is per open file: refused in one process too.
  assert (tmp_path / w.LOCK_FILE).read_text() == ""
  with w.Lock(str(tmp_path)) as again:
    assert again.stale_message is None  # Released cleanly: nothing to take over.


def test_check_path_names_files_and_unwritable_dirs(tmp_path, monkeypatch):
  w = _workdir_lib()
  (tmp_path / "file").write_text("")
  with pytest.raises(ValueError, match=r"^--workdir=.*file: is a file, not a directory\.$"):
    w.check_path(str(tmp_path / "file"))
  with pytest.raises(ValueError, match=r"/file is a file, not a directory\.$"):
    w.check_path(str(tmp_path / "file" / "sub"))
  w.check_path(str(tmp_path / "new" / "sub"))  # Creatable: fine.
  monkeypatch.setattr(w.os, "access", lambda path, mode: False)  # As if not root.
  with pytest.raises(ValueError, match=rf"^--workdir={tmp_path}: is not writable\.$"):
    w.check_path(str(tmp_path))
  with pytest.raises(ValueError, match=rf"cannot be created \({tmp_path} is not writable\)"):
    w.check_path(str(tmp_path / "new"))


def test_sigint_during_start_up_is_one_line(tmp_path, env):
  proc = start("train.py", SMOKE + [f"--workdir={tmp_path / 'w'}"], env, tmp_path / "early")
  time.sleep(1.5)  # Importing jax / flax: long before the training loop.
  proc.send_signal(signal.SIGINT)
  _, err = finish(proc, 130)
  assert "Traceback" not in err and message_lines(err) == [
      "train.py: interrupted (SIGINT) outside the training loop; no checkpoint to save."], err
