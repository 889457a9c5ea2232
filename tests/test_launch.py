"""The launchers' generated commands: TPU pods (gcloud + scripts/tpu_pod.sh) and SLURM GPUs.

The TPU path runs for real through every shell it crosses: a fake `gcloud` on PATH does
`scp` as a copy into a fake home directory and `ssh --command=...` as `bash -c` there, so the
quoting of the generated commands, the code copy, tpu_pod.sh's environment step and the
detached launcher are all exercised; only the sweep is a --dry_run (it prints train.py's
commands instead of training). The SLURM template runs with a fake `srun` that records its
arguments.
"""
import os
import pathlib
import shlex
import stat
import subprocess
import sys
import time

import conftest
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
launch_sweep = conftest.load_script("launch_sweep")

# Values that need quoting at every level: spaces, both quote characters, $ and a glob.
OVERRIDES = [("model.name", "a b'c"), ("training.batch_size", "64")]
ENV = [("XLA_FLAGS", "--xla_a=1 --xla_b=\"$HOME\" *")]
DATA_DIR = "/data dir/tfds"
SWEEP = '''
def get_sweep(arg=None):
  return [{"name": f"r{i}", "config": "configs/vit_axial.py:smoke", "overrides": {"seed": i}}
          for i in range(2)]
'''


def _executable(path: pathlib.Path, text: str) -> None:
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_train_args_and_env_of_a_run():
  run = {"name": "axial/seed1", "config": "configs/vit_axial.py", "overrides": {"seed": 1}}
  assert launch_sweep.train_args(run, "gs://b/sweep/", OVERRIDES, multihost=True) == [
      "--config=configs/vit_axial.py", "--workdir=gs://b/sweep/axial/seed1", "--config.seed=1",
      "--config.model.name=a b'c", "--config.training.batch_size=64", "--multihost"]
  assert launch_sweep.run_env(DATA_DIR, ENV) == {"TFDS_DATA_DIR": DATA_DIR,
                                                 "XLA_FLAGS": ENV[0][1]}
  assert launch_sweep.parse_assignments(["a.b=c=d"], "override") == [("a.b", "c=d")]
  with pytest.raises(launch_sweep.app.UsageError, match="--env='FOO': expected NAME=VALUE"):
    launch_sweep.parse_assignments(["FOO"], "env")


def test_pod_commands_with_git_clone():
  args = launch_sweep.local_sweep_args("configs/sweep_vit.py:imagenet", "gs://b/in1k", "", True,
                                       DATA_DIR, OVERRIDES, ENV)
  (ssh,) = launch_sweep.pod_commands(tpu_name="v4-64", zone="us-central2-b", project="p",
                                     repo_dir="rope", sweep_args=args,
                                     git_url="https://x/rope.git", git_ref="v1 rc")
  assert ssh[:8] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "v4-64",
                     "--zone=us-central2-b", "--project=p"]
  assert ssh[8] == "--worker=all" and ssh[9].startswith("--command=")
  remote = shlex.split(ssh[9].removeprefix("--command="))
  remote = remote[remote.index("fi;") + 1:]  # After the running-sweep guard.
  assert remote[:7] == ["rm", "-rf", "~/rope", "&&", "git", "clone", "-q"]
  assert remote[remote.index("checkout"):][:3] == ["checkout", "-q", "v1 rc"]
  i = remote.index("scripts/tpu_pod.sh")
  assert remote[i + 1:] == args  # Every argument survives the remote shell unchanged.
  assert "--multihost" in args and "--logs_in_workdir" in args and "--keep_going" in args


def test_pod_launch_end_to_end_with_fake_gcloud(tmp_path):
  home, bin_dir = tmp_path / "home", tmp_path / "bin"
  home.mkdir()
  bin_dir.mkdir()
  # gcloud compute tpus tpu-vm scp SRC NAME:DEST ... / ssh NAME ... --command=CMD
  _executable(bin_dir / "gcloud", f'''#!{sys.executable}
import os, shutil, subprocess, sys
args = sys.argv[5:]
with open(os.path.join(os.environ["HOME"], "gcloud.log"), "a") as f:
  f.write(repr(sys.argv[1:]) + "\\n")
if sys.argv[4] == "scp":
  shutil.copy(args[0], os.path.join(os.environ["HOME"], args[1].split(":", 1)[1]))
else:
  (command,) = [a[len("--command="):] for a in args if a.startswith("--command=")]
  sys.exit(subprocess.run(["bash", "-c", command], cwd=os.environ["HOME"]).returncode)
''')
  venv = home / "rope_venv"  # An existing environment: tpu_pod.sh reuses it (no pip).
  (venv / "bin").mkdir(parents=True)
  (venv / "bin" / "python").symlink_to(sys.executable)
  (venv / "bin" / "activate").write_text(f'export PATH="{venv}/bin:$PATH"\n')
  sweep = tmp_path / "my sweep.py"
  sweep.write_text(SWEEP)
  env = dict(os.environ, HOME=str(home), PATH=f"{bin_dir}:{os.environ['PATH']}")
  root = "gs://bucket/my sweep"
  proc = subprocess.run(
      [sys.executable, "scripts/launch_sweep.py", f"--sweep={sweep}", f"--workdir_root={root}",
       "--mode=tpu", "--tpu_name=v4-32", "--zone=z", f"--data_dir={DATA_DIR}",
       "--worker_dry_run"]
      + [f"--override={k}={v}" for k, v in OVERRIDES] + [f"--env={k}={v}" for k, v in ENV],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "started the sweep" in proc.stdout
  assert (home / "rope" / "train.py").is_file()  # The code was copied and unpacked.
  logs = home / "rope_logs"
  pid = int((logs / "sweep.pid").read_text())
  for _ in range(600):  # The detached sweep (printing only: --worker_dry_run) ends by itself.
    if not _alive(pid):
      break
    time.sleep(0.05)
  text = (logs / "sweep.log").read_text()
  lines = [l for l in text.splitlines() if l.startswith("[")]
  assert len(lines) == 2, text[-3000:]
  argv = shlex.split(lines[1].split(": ", 1)[1])
  # A second launch while a sweep runs there is refused before the code is replaced.
  sleeper = subprocess.Popen(["sleep", "30"])
  try:
    (logs / "sweep.pid").write_text(str(sleeper.pid))
    (home / "rope" / "train.py").write_text("# the running sweep's code")
    again = subprocess.run(proc.args, cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=120)
  finally:
    sleeper.kill()
    sleeper.wait()
  assert again.returncode == 1 and "a sweep is running" in again.stderr
  assert (home / "rope" / "train.py").read_text() == "# the running sweep's code"
  assert argv[0] == str(venv / "bin" / "python") or argv[0].endswith("python")
  assert argv[1:] == [str(home / "rope" / "train.py"), "--config=configs/vit_axial.py:smoke",
                      f"--workdir={root}/r1", "--config.seed=1", "--config.model.name=a b'c",
                      "--config.training.batch_size=64", "--multihost"]


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  return True


def test_slurm_template_runs_train_py_once_per_task(tmp_path):
  bin_dir, venv = tmp_path / "bin", tmp_path / "venv"
  bin_dir.mkdir()
  (venv / "bin").mkdir(parents=True)
  (venv / "bin" / "activate").write_text("ROPE_ACTIVATED=1\n")
  record = tmp_path / "srun.args"
  _executable(bin_dir / "srun", f'''#!{sys.executable}
import json, sys
json.dump(sys.argv[1:], open({str(record)!r}, "w"))
''')
  workdir = tmp_path / "shared runs" / "x"
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", ROPE_VENV=str(venv),
             SLURM_SUBMIT_DIR=str(REPO), SLURM_JOB_ID="42")
  # sbatch runs a copy of the script from its spool directory: cwd and $0 are not the clone.
  proc = subprocess.run(["bash", str(REPO / "scripts/slurm_gpu.sbatch"), str(workdir),
                         "--config=configs/vit_spherical.py:imagenet",
                         "--config.model.name=a b'c"],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr
  import json  # pylint: disable=g-import-not-at-top
  assert json.loads(record.read_text()) == [
      "--kill-on-bad-exit=1", f"--output={workdir}/logs/train.%j.%t.log",
      "python", "train.py", f"--workdir={workdir}", "--multihost", "--config.platform=gpu",
      "--config=configs/vit_spherical.py:imagenet", "--config.model.name=a b'c"]
  assert (workdir / "logs").is_dir()
  usage = subprocess.run(["bash", "scripts/slurm_gpu.sbatch", "--config=x"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
  assert usage.returncode == 2 and "usage: sbatch" in usage.stderr
  header = (REPO / "scripts/slurm_gpu.sbatch").read_text()
  assert "#SBATCH --ntasks-per-node=8" in header and "#SBATCH --gpus-per-node=8" in header
  assert "#SBATCH --gpus-per-task" not in header  # Each task must see all GPUs of its node.
