r"""Runs a sweep (a configs/sweep_*.py) locally one run after another, or prints pod commands.

  python scripts/launch_sweep.py --sweep=configs/sweep_vit.py:smoke --workdir_root=/tmp/sweep
  python scripts/launch_sweep.py --sweep=configs/sweep_vit.py:imagenet --mode=print \
      --workdir_root=/mnt/bucket/in1k --tpu_name=my-v4-64 --zone=us-central2-b

A sweep module defines `get_sweep(arg) -> [{"name", "config", "overrides"}]`. Each run trains in
WORKDIR_ROOT/<name>; train.py resumes from there, so re-launching a sweep continues where it
stopped and finished runs return immediately. --mode=local stops at the first failing run
unless --keep_going; exit code 1 if any run failed.

--stage=eval runs the sweep's evaluations instead, if it defines `get_evals(arg) -> [{"name",
"runs", "labels", "flags"}]` (configs/sweep_vit.py:fmnist,resolution): one eval.py command per
entry over the workdirs WORKDIR_ROOT/<run>, writing WORKDIR_ROOT/eval/<name>.json / .png
(an existing JSON is kept: re-launching continues).

SIGTERM / SIGINT sent to the launcher are forwarded to the run it started (which saves a
checkpoint and stops); the launcher then starts no further run and exits with that run's exit
status (143 / 130), so a job scheduler's stop reaches the training and nothing is orphaned.
"""
import importlib.util
import os
import shlex
import signal
import subprocess
import sys

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_string("sweep", None, "Sweep file[:arg], e.g. configs/sweep_vit.py:smoke.")
flags.DEFINE_string("workdir_root", None, "Each run trains in WORKDIR_ROOT/<run name>.")
flags.DEFINE_enum("mode", "local", ["local", "print"], "local: run here one after another; "
                  "print: print one command per run for a TPU pod.")
flags.DEFINE_enum("stage", "train", ["train", "eval"], "train: the sweep's runs (train.py); "
                  "eval: its evaluations (eval.py, the sweep's get_evals).")
flags.DEFINE_string("only", "", "Run only runs whose name contains this substring.")
flags.DEFINE_bool("keep_going", False, "local: continue after a failed run.")
flags.DEFINE_bool("dry_run", False, "local: print the commands instead of running them.")
flags.DEFINE_string("tpu_name", "$TPU_NAME", "print: TPU VM name for gcloud.")
flags.DEFINE_string("zone", "$ZONE", "print: TPU zone for gcloud.")
flags.DEFINE_string("repo_dir", "~/rope", "print: the repository's path on the TPU hosts.")
flags.mark_flags_as_required(["sweep", "workdir_root"])
FLAGS = flags.FLAGS


def load_sweep(spec: str, stage: str = "train") -> list[dict]:
  """Imports the sweep file of "path[:arg]" and returns get_sweep(arg) (stage "train") or
  get_evals(arg) (stage "eval")."""
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    raise app.UsageError(f"--sweep: no file {path!r}.")
  if REPO not in sys.path:
    sys.path.insert(0, REPO)  # Sweep files import configs.*.
  module_spec = importlib.util.spec_from_file_location("sweep_module", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if stage == "eval":
    if not hasattr(module, "get_evals"):
      raise app.UsageError(f"--stage=eval: {path} defines no get_evals.")
    return module.get_evals(arg or None)
  return module.get_sweep(arg or None)


def eval_args(entry: dict, workdir_root: str) -> list[str]:
  """eval.py's arguments for one entry of get_evals."""
  output = os.path.join(workdir_root, "eval", entry["name"])
  args = [f"--workdirs={','.join(os.path.join(workdir_root, r) for r in entry['runs'])}",
          f"--labels={','.join(entry['labels'])}", f"--output={output}"]
  return args + [f"--{k}={v}" for k, v in sorted(entry.get("flags", {}).items())]


def train_args(run: dict, workdir_root: str) -> list[str]:
  """train.py's arguments for one run."""
  args = [f"--config={run['config']}", f"--workdir={os.path.join(workdir_root, run['name'])}"]
  args += [f"--config.{k}={v}" for k, v in sorted(run.get("overrides", {}).items())]
  return args


def pod_command(args: list[str]) -> str:
  """One gcloud command running train.py on every host of a TPU pod slice."""
  remote = f"cd {FLAGS.repo_dir} && python train.py {shlex.join(args)} --multihost"
  return (f"gcloud compute tpus tpu-vm ssh {FLAGS.tpu_name} --zone={FLAGS.zone} "
          f"--worker=all --command={shlex.quote(remote)}")


class _Forwarder:
  """Forwards SIGTERM / SIGINT to the running child; remembers that a stop was asked."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.child: subprocess.Popen | None = None
    self.received: int | None = None

  def _handle(self, signum, frame):
    del frame
    self.received = signum
    if self.child is not None and self.child.poll() is None:
      self.child.send_signal(signum)

  def __enter__(self) -> "_Forwarder":
    self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
    return self

  def __exit__(self, *exc) -> bool:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    return False

  def run(self, cmd: list[str]) -> int:
    self.child = subprocess.Popen(cmd, cwd=REPO)
    try:
      while True:
        try:
          return self.child.wait()
        except KeyboardInterrupt:  # Only if SIGINT's handler was not ours; keep waiting.
          continue
    finally:
      self.child = None


def _command(run: dict) -> list[str] | None:
  """The local command of one run (stage train) or evaluation (stage eval; None when its
  JSON exists already)."""
  if FLAGS.stage == "eval":
    args = eval_args(run, FLAGS.workdir_root)
    if os.path.exists(args[2].partition("=")[2] + ".json"):
      return None
    return [sys.executable, os.path.join(REPO, "eval.py")] + args
  return [sys.executable, os.path.join(REPO, "train.py")] + train_args(run, FLAGS.workdir_root)


def main(argv) -> int:
  del argv
  runs = [r for r in load_sweep(FLAGS.sweep, FLAGS.stage) if FLAGS.only in r["name"]]
  if FLAGS.mode == "print":
    if FLAGS.stage == "eval":
      raise app.UsageError("--stage=eval runs locally (eval.py on the workdirs); use "
                           "--mode=local.")
    for run in runs:
      print(pod_command(train_args(run, FLAGS.workdir_root)))
    return 0
  failed = []
  with _Forwarder() as forwarder:
    for i, run in enumerate(runs, start=1):
      cmd = _command(run)
      if cmd is None:
        print(f"[{i}/{len(runs)}] {run['name']}: evaluated already.", flush=True)
        continue
      print(f"[{i}/{len(runs)}] {run['name']}: {shlex.join(cmd)}", flush=True)
      if FLAGS.dry_run:
        continue
      if forwarder.received is not None:
        break
      code = forwarder.run(cmd)
      if forwarder.received is not None:
        name = signal.Signals(forwarder.received).name
        print(f"[{i}/{len(runs)}] {run['name']}: {name} forwarded; the run exited with code "
              f"{code}. Not starting further runs; re-launch to continue.", file=sys.stderr,
              flush=True)
        return code if code else 128 + forwarder.received
      if _record_failure(i, len(runs), run, code, failed):
        break
  if failed:
    print(f"Failed runs: {', '.join(failed)}", file=sys.stderr)
  return 1 if failed else 0


def _record_failure(i: int, n: int, run: dict, code: int, failed: list[str]) -> bool:
  """Notes a failed run; returns whether to stop the sweep."""
  if code:
    print(f"[{i}/{n}] {run['name']} failed with exit code {code}.", flush=True)
    failed.append(run["name"])
    return not FLAGS.keep_going
  return False


if __name__ == "__main__":
  app.run(main)
