r"""Runs a sweep (a configs/sweep_*.py) here one run after another, or on every host of a TPU pod.

  # Here (CPU / one GPU machine):
  python scripts/launch_sweep.py --sweep=configs/sweep_vit.py:smoke --workdir_root=/tmp/sweep
  # A TPU pod slice: copy this clone to every worker, create the environment with jax[tpu]
  # there (scripts/tpu_pod.sh, once), and start the sweep detached on all workers; logs go
  # to WORKDIR_ROOT/<run>/logs/ (--dry_run prints the gcloud commands instead):
  python scripts/launch_sweep.py --sweep=configs/sweep_vit.py:imagenet --mode=tpu \
      --tpu_name=my-v4-64 --zone=us-central2-b --workdir_root=gs://bucket/in1k \
      --data_dir=gs://bucket/tfds --override=training.batch_size=2048 \
      --env=LIBTPU_INIT_ARGS=--xla_tpu_enable_latency_hiding_scheduler=true

A sweep module defines `get_sweep(arg) -> [{"name", "config", "overrides"}]`. Each run trains in
WORKDIR_ROOT/<name>; train.py resumes from there, so re-launching a sweep continues where it
stopped and finished runs return immediately. --mode=local stops at the first failing run
unless --keep_going; exit code 1 if any run failed.

On a pod every worker runs the same sweep (--mode=local --multihost, started by
scripts/tpu_pod.sh): each run uses the whole slice, runs follow each other, and train.py's
`jax.distributed` keeps the workers in step. --data_dir becomes TFDS_DATA_DIR (tfds reads it
when the config's data_dir is None, so it does not enter config.json, and moving the data does
not change a run's config); --override=KEY=VALUE adds --config.KEY=VALUE to every run;
--env=NAME=VALUE sets an environment variable for every run.

--stage=eval runs the sweep's evaluations instead (here, --mode=local), if it defines
`get_evals(arg) -> [{"name", "runs", "labels", "flags"}]` (configs/sweep_vit.py:fmnist,resolution):
one eval.py command per entry over the workdirs WORKDIR_ROOT/<run>, writing
WORKDIR_ROOT/eval/<name>.json / .png (an existing JSON is kept: re-launching continues).

--shard=I/N splits a local sweep between launchers (every N-th run, from the I-th): on a 2-core
CPU two launchers pinned to one core each (`taskset -c 0` / `taskset -c 1`) train the small
:fmnist runs ~1.5x faster in all than one launcher on both cores (measured 400 + 400 images/s
against 534 images/s, Zen 3, 2026-12-04).

SIGTERM / SIGINT sent to the launcher are forwarded to the run it started (which saves a
checkpoint and stops); the launcher then starts no further run and exits with that run's exit
status (143 / 130), so a job scheduler's stop reaches the training and nothing is orphaned
(on a pod: `kill -TERM $(cat ~/rope_logs/sweep.pid)` on every worker, see README).
"""
import importlib.util
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_string("sweep", None, "Sweep file[:arg], e.g. configs/sweep_vit.py:smoke.")
flags.DEFINE_string("workdir_root", None, "Each run trains in WORKDIR_ROOT/<run name>.")
flags.DEFINE_enum("mode", "local", ["local", "tpu", "print"], "local: run here one after "
                  "another; tpu: start the sweep on every worker of --tpu_name; print: "
                  "--mode=tpu --dry_run.")
flags.DEFINE_enum("stage", "train", ["train", "eval"], "train: the sweep's runs (train.py); "
                  "eval: its evaluations (eval.py, the sweep's get_evals; --mode=local).")
flags.DEFINE_string("only", "", "Run only runs whose name contains this substring.")
flags.DEFINE_string("shard", "", "local: I/N runs only every N-th run (after --only) starting "
                    "at the I-th (0-based), e.g. two launchers pinned to one core each "
                    "(taskset -c 0 ... --shard=0/2; taskset -c 1 ... --shard=1/2).")
flags.DEFINE_bool("keep_going", False, "local: continue after a failed run.")
flags.DEFINE_bool("dry_run", False, "Print the commands instead of running them.")
flags.DEFINE_string("data_dir", None, "tfds data directory (TFDS_DATA_DIR) for every run.")
flags.DEFINE_multi_string("override", [], "KEY=VALUE: --config.KEY=VALUE for every run.")
flags.DEFINE_multi_string("env", [], "NAME=VALUE: an environment variable for every run.")
flags.DEFINE_bool("multihost", False, "local: pass --multihost to train.py (on a pod).")
flags.DEFINE_bool("logs_in_workdir", False, "local: also write each run's output to "
                  "<workdir>/logs/train.<host>.log (uploaded every minute on gs://).")
flags.DEFINE_bool("worker_dry_run", False, "tpu: copy, install and start as usual, but the "
                  "workers' sweep prints train.py's commands (in ~/rope_logs/sweep.log) "
                  "instead of training: a check of the launch.")
flags.DEFINE_string("tpu_name", None, "tpu: the TPU VM (slice) name for gcloud.")
flags.DEFINE_string("zone", None, "tpu: its zone.")
flags.DEFINE_string("project", None, "tpu: its project (default: gcloud's).")
flags.DEFINE_string("repo_dir", "rope", "tpu: where the code goes on the workers (relative "
                    "to the home directory).")
flags.DEFINE_string("git_url", None, "tpu: clone this repository URL on the workers instead "
                    "of copying this clone's files (with --git_ref).")
flags.DEFINE_string("git_ref", "main", "tpu: the branch / tag / commit of --git_url.")
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


def parse_assignments(items: list[str], flag: str) -> list[tuple[str, str]]:
  """[("a.b", "v")] of ["a.b=v"]; UsageError naming `flag` for an item without '='."""
  pairs = []
  for item in items:
    key, eq, value = item.partition("=")
    if not eq or not key:
      raise app.UsageError(f"--{flag}={item!r}: expected NAME=VALUE.")
    pairs.append((key, value))
  return pairs


def parse_shard(value: str) -> tuple[int, int]:
  """(I, N) of --shard=I/N ((0, 1) for ""); UsageError unless 0 <= I < N."""
  if not value:
    return 0, 1
  index, slash, count = value.partition("/")
  if not (slash and index.isdigit() and count.isdigit() and int(index) < int(count)):
    raise app.UsageError(f"--shard={value!r}: expected I/N with 0 <= I < N, e.g. 0/2.")
  return int(index), int(count)


def workdir_of(run: dict, workdir_root: str) -> str:
  return f"{workdir_root.rstrip('/')}/{run['name']}"


def train_args(run: dict, workdir_root: str, overrides: list[tuple[str, str]] = (),
               multihost: bool = False) -> list[str]:
  """train.py's arguments for one run: its config, workdir and overrides, then the extra ones."""
  args = [f"--config={run['config']}", f"--workdir={workdir_of(run, workdir_root)}"]
  args += [f"--config.{k}={v}" for k, v in sorted(run.get("overrides", {}).items())]
  args += [f"--config.{k}={v}" for k, v in overrides]
  return args + (["--multihost"] if multihost else [])


def eval_args(entry: dict, workdir_root: str) -> list[str]:
  """eval.py's arguments for one entry of get_evals."""
  output = f"{workdir_root.rstrip('/')}/eval/{entry['name']}"
  args = [f"--workdirs={','.join(workdir_of({'name': r}, workdir_root) for r in entry['runs'])}",
          f"--labels={','.join(entry['labels'])}", f"--output={output}"]
  return args + [f"--{k}={v}" for k, v in sorted(entry.get("flags", {}).items())]


def run_env(data_dir: str | None, env: list[tuple[str, str]]) -> dict[str, str]:
  """Environment variables every run gets on top of the launcher's."""
  out = {"TFDS_DATA_DIR": data_dir} if data_dir else {}
  out.update(env)
  return out


# --- TPU pods ---------------------------------------------------------------------------------


def _gcloud(tpu_name: str, zone: str,
            project: str | None) -> tuple[list[str], list[str]]:
  """(the gcloud command group, the target arguments: name, zone, project, all workers)."""
  return (["gcloud", "compute", "tpus", "tpu-vm"], [tpu_name, f"--zone={zone}"]
          + ([f"--project={project}"] if project else []) + ["--worker=all"])


def local_sweep_args(sweep: str, workdir_root: str, only: str, keep_going: bool,
                     data_dir: str | None, overrides: list[tuple[str, str]],
                     env: list[tuple[str, str]], dry_run: bool = False) -> list[str]:
  """launch_sweep.py's arguments for the detached sweep on every worker (--mode=local)."""
  args = [f"--sweep={sweep}", f"--workdir_root={workdir_root}", "--mode=local",
          "--multihost", "--logs_in_workdir"]
  args += [f"--only={only}"] if only else []
  args += ["--keep_going"] if keep_going else []
  args += [f"--data_dir={data_dir}"] if data_dir else []
  args += [f"--override={k}={v}" for k, v in overrides]
  args += [f"--env={k}={v}" for k, v in env]
  return args + (["--dry_run"] if dry_run else [])


def pod_commands(*, tpu_name: str, zone: str, project: str | None, repo_dir: str,
                 sweep_args: list[str], git_url: str | None = None,
                 git_ref: str = "main", archive: str = "/tmp/rope_code.tgz") -> list[list[str]]:
  """The commands (argv lists) that start a sweep on every worker of a TPU pod slice.

  1. The code: this clone's files (`git ls-files`, uncommitted and new files included) packed
     into `archive` and copied with `gcloud ... scp` to every worker, or `git clone --git_url`
     there.
  2. `gcloud ... ssh --worker=all`: unpack, then scripts/tpu_pod.sh creates ~/rope_venv with
     `pip install -e ".[tpu]" -c constraints.txt` (first time only) and starts
     `launch_sweep.py --mode=local --multihost ...` detached (setsid nohup), logging to
     ~/rope_logs/sweep.log and each run's <workdir>/logs/; gcloud returns at once.
  """
  tpu_vm, target = _gcloud(tpu_name, zone, project)
  q = shlex.quote
  commands = []
  if git_url:
    fetch = (f"rm -rf ~/{q(repo_dir)} && git clone -q {q(git_url)} ~/{q(repo_dir)} && "
             f"git -C ~/{q(repo_dir)} checkout -q {q(git_ref)}")
  else:
    # Tracked and new (not ignored) files, as they are on disk: what this clone would run.
    pack = (f"cd {q(REPO)} && git ls-files -z --cached --others --exclude-standard | "
            f"tar --null -T - -czf {q(archive)}")
    commands.append(["bash", "-c", pack])
    commands.append(tpu_vm + ["scp", archive, f"{tpu_name}:{os.path.basename(archive)}"]
                    + target[1:])
    fetch = (f"mkdir -p ~/{q(repo_dir)} && tar -xzf ~/{q(os.path.basename(archive))} "
             f"-C ~/{q(repo_dir)}")
  # Before the code is replaced: a sweep still running there keeps its code (and the chips).
  pid = '"${ROPE_LOGS:-$HOME/rope_logs}/sweep.pid"'
  guard = (f'if [ -f {pid} ] && kill -0 "$(cat {pid})" 2>/dev/null; then echo "a sweep is '
           f'running on $(hostname) (pid $(cat {pid})); stop it first." >&2; exit 1; fi')
  start = f"cd ~/{q(repo_dir)} && bash scripts/tpu_pod.sh {shlex.join(sweep_args)}"
  commands.append(tpu_vm + ["ssh"] + target + [f"--command={guard}; {fetch} && {start}"])
  return commands


# --- Running here ------------------------------------------------------------------------------


class _WorkdirLog:
  """Copies a run's output lines into <workdir>/logs/train.<host>.log (local or gs://).

  Local files are appended line by line. An object store cannot append, so there the log is
  kept in memory and the whole object rewritten every `period` seconds and at the end (as
  trainer/files.py does; epath directly, so that the launcher does not import jax).
  """

  def __init__(self, workdir: str, period: float = 60.0):
    from etils import epath  # pylint: disable=g-import-not-at-top  # Only when asked for.
    self.path = epath.Path(f"{workdir.rstrip('/')}/logs/train.{socket.gethostname()}.log")
    self._remote = "://" in workdir
    self._lines: list[str] = []
    self._period, self._last = period, time.monotonic()
    self.path.parent.mkdir(parents=True, exist_ok=True)

  def write(self, line: str) -> None:
    if not self._remote:
      with self.path.open("a") as f:
        f.write(line)
      return
    self._lines.append(line)
    if time.monotonic() - self._last > self._period:
      self.flush()

  def flush(self) -> None:
    if self._remote:
      self.path.write_text("".join(self._lines))
      self._last = time.monotonic()


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

  def run(self, cmd: list[str], env: dict[str, str] | None = None,
          log: _WorkdirLog | None = None) -> int:
    """Runs `cmd` to its end; its output also goes to `log` if given."""
    self.child = subprocess.Popen(
        cmd, cwd=REPO, env=env, text=True, bufsize=1,
        **({"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT} if log else {}))
    reader = None
    if log is not None:
      reader = threading.Thread(target=_tee, args=(self.child.stdout, log), daemon=True)
      reader.start()
    try:
      while True:
        try:
          code = self.child.wait()
          break
        except KeyboardInterrupt:  # Only if SIGINT's handler was not ours; keep waiting.
          continue
      if reader is not None:
        reader.join()
        log.flush()
      return code
    finally:
      self.child = None


def _tee(stream, log: _WorkdirLog) -> None:
  for line in stream:
    sys.stdout.write(line)
    sys.stdout.flush()
    log.write(line)


def _command(run: dict, overrides: list[tuple[str, str]]) -> list[str] | None:
  """The local command of one run (stage train) or evaluation (stage eval; None when its
  JSON exists already)."""
  if FLAGS.stage == "eval":
    args = eval_args(run, FLAGS.workdir_root)
    if os.path.exists(args[2].partition("=")[2] + ".json"):
      return None
    return [sys.executable, os.path.join(REPO, "eval.py")] + args
  return [sys.executable, os.path.join(REPO, "train.py")] + train_args(
      run, FLAGS.workdir_root, overrides, FLAGS.multihost)


def main(argv) -> int:
  del argv
  overrides = parse_assignments(FLAGS.override, "override")
  env_pairs = parse_assignments(FLAGS.env, "env")
  if FLAGS.mode in ("tpu", "print"):
    if FLAGS.stage == "eval":
      raise app.UsageError("--stage=eval runs locally (eval.py on the workdirs); use "
                           "--mode=local.")
    if not (FLAGS.tpu_name and FLAGS.zone):
      raise app.UsageError("--mode=tpu needs --tpu_name and --zone.")
    load_sweep(FLAGS.sweep)  # A bad sweep fails here, not on the workers.
    sweep_args = local_sweep_args(FLAGS.sweep, FLAGS.workdir_root, FLAGS.only,
                                  FLAGS.keep_going, FLAGS.data_dir, overrides, env_pairs,
                                  dry_run=FLAGS.worker_dry_run)
    commands = pod_commands(tpu_name=FLAGS.tpu_name, zone=FLAGS.zone, project=FLAGS.project,
                            repo_dir=FLAGS.repo_dir, sweep_args=sweep_args,
                            git_url=FLAGS.git_url, git_ref=FLAGS.git_ref)
    for cmd in commands:
      print(shlex.join(cmd), flush=True)
      if FLAGS.mode == "tpu" and not FLAGS.dry_run:
        code = subprocess.run(cmd, check=False).returncode
        if code:
          print(f"launch_sweep.py: exit code {code}; stopped.", file=sys.stderr)
          return 1
    return 0
  shard, num_shards = parse_shard(FLAGS.shard)
  runs = [r for r in load_sweep(FLAGS.sweep, FLAGS.stage) if FLAGS.only in r["name"]]
  runs = runs[shard::num_shards]
  env = dict(os.environ, **run_env(FLAGS.data_dir, env_pairs))
  failed = []
  with _Forwarder() as forwarder:
    for i, run in enumerate(runs, start=1):
      cmd = _command(run, overrides)
      if cmd is None:
        print(f"[{i}/{len(runs)}] {run['name']}: evaluated already.", flush=True)
        continue
      print(f"[{i}/{len(runs)}] {run['name']}: {shlex.join(cmd)}", flush=True)
      if FLAGS.dry_run:
        continue
      if forwarder.received is not None:
        break
      log = _WorkdirLog(workdir_of(run, FLAGS.workdir_root)) if FLAGS.logs_in_workdir else None
      code = forwarder.run(cmd, env, log)
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
