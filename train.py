r"""Trains any task of this repository: `python train.py --config=CONFIG[:ARG] --workdir=DIR`.

Examples:
  python train.py --config=configs/vit_spherical.py:smoke --workdir=/tmp/runs/spherical_smoke
  python train.py --config=configs/vit_mixed.py:fmnist --workdir=/tmp/runs/mixed_fmnist \
      --config.seed=1 --config.training.batch_size=128
  # Multi-host (TPU pod: run on every host; the arguments are auto-detected):
  python train.py --config=configs/vit_spherical.py:imagenet --workdir=/mnt/bucket/run --multihost
  # Multi-process on one machine (CPU), process i of n:
  python train.py ... --coordinator_address=127.0.0.1:12345 --num_processes=2 --process_id=i

Re-running the same command resumes from the newest intact checkpoint in DIR/checkpoints
(a damaged newer one is moved to DIR/damaged_checkpoints). One run at a time per workdir
(DIR/train.lock). A re-run whose config differs from DIR/config.json in anything but the run
length and the logging / eval / checkpoint periods is refused (the keys are listed) unless
--allow_config_change is given (the old config is then kept as DIR/config.<step>.json).

Exit codes: 0 finished; 1 bad config, bad workdir, workdir in use, changed config, diverged
(NaN), or no TPU / GPU although `--multihost` or `config.platform` asks for one (naming the
package to install), with one line on stderr naming the option, path or process; 130 / 143
stopped by SIGINT (Ctrl-C) / SIGTERM after saving a checkpoint.
"""
import os
import signal
import sys


def _interrupted(signum, frame):
  """Ctrl-C outside the training loop (imports, set-up): one line, exit 130, no traceback."""
  del signum, frame
  print("train.py: interrupted (SIGINT) outside the training loop; no checkpoint to save.",
        file=sys.stderr, flush=True)
  os._exit(128 + signal.SIGINT)  # pylint: disable=protected-access


# Installed before the heavy imports; the training loop replaces it with its own handler
# (checkpoint, then exit 130) while it runs. Left alone when SIGINT is ignored (nohup, &).
if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
  signal.signal(signal.SIGINT, _interrupted)

# pylint: disable=g-import-not-at-top,wrong-import-position
import difflib
import importlib.util
import logging as pylogging

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Experiment config file[:arg].",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and config.json.")
flags.DEFINE_bool("allow_config_change", False, "Continue a workdir although the config "
                  "differs from its config.json (kept as config.<step>.json).")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() with the cluster "
                  "auto-detected (a TPU pod, a SLURM GPU job); needs a TPU or GPU. Several CPU "
                  "processes: --coordinator_address etc. instead.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-process).")
flags.mark_flags_as_required(["config", "workdir"])

EXIT_PREEMPTED = 143  # 128 + SIGTERM, what a shell reports for a SIGTERM-killed process.
EXIT_CODES = {"SIGTERM": 128 + signal.SIGTERM, "SIGINT": 128 + signal.SIGINT}  # 143, 130.


def _initialize_distributed() -> str | None:
  """Joins the multi-process JAX runtime if asked to (before any other jax call).

  Returns one line saying why it could not (no cluster auto-detected), else None.
  """
  if not (FLAGS.multihost or FLAGS.coordinator_address):
    return None
  import jax  # pylint: disable=g-import-not-at-top
  # CPU collectives across processes need gloo; the option is ignored on TPU / GPU.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  except ValueError as e:  # jax: "coordinator_address should be defined." (nothing detected)
    if FLAGS.coordinator_address:
      raise
    return (f"--multihost: jax.distributed.initialize() detected no TPU pod, SLURM, MPI or "
            f"Kubernetes job to join ({e}); outside one pass --coordinator_address, "
            "--num_processes and --process_id.")
  return None


def check_accelerator(multihost: bool) -> str | None:
  """One line if the run asks for a TPU / GPU (config.platform, --multihost) and has none.

  Before jax.distributed.initialize(): is the package installed? After it, see
  `check_devices`.
  """
  from trainer import accelerator  # pylint: disable=g-import-not-at-top
  try:
    return accelerator.check_installed(FLAGS.config.get("platform", "any"), multihost,
                                       accelerator.installed_platforms())
  except ValueError as e:
    return str(e)


def check_devices(multihost: bool) -> str | None:
  """One line if JAX found none of the devices the run asks for (after initialisation)."""
  from trainer import accelerator  # pylint: disable=g-import-not-at-top
  platform = FLAGS.config.get("platform", "any")
  if not accelerator.wanted(platform, multihost):
    return None  # Any device will do: leave the backends to the loop.
  import jax  # pylint: disable=g-import-not-at-top
  return accelerator.check_devices(platform, multihost, {d.platform for d in jax.devices()},
                                   os.environ)


FLAGS = flags.FLAGS


def _flag_values(argv: list[str], name: str) -> list[tuple[str, str]]:
  """(flag, value) of every `--name...=v` / `--name... v` in argv (name and name.sub.keys)."""
  found = []
  for i, arg in enumerate(argv):
    if arg == "--":
      break
    if not arg.startswith(f"--{name}"):
      continue
    flag, eq, value = arg[2:].partition("=")
    if flag != name and not flag.startswith(name + "."):
      continue
    if not eq:
      value = argv[i + 1] if i + 1 < len(argv) else ""
    found.append((flag, value))
  return found


def _config_keys(config, prefix: str = "") -> list[str]:
  import ml_collections  # pylint: disable=g-import-not-at-top
  keys = []
  for k, v in config.items():
    keys.append(prefix + k)
    if isinstance(v, ml_collections.ConfigDict):
      keys += _config_keys(v, f"{prefix}{k}.")
  return keys


def check_command_line(argv: list[str]) -> str | None:
  """One line naming the problem with --config / --config.* / --workdir, or None.

  Run before absl parses the flags, whose errors for these are tracebacks: a missing config
  file, an error of the config's get_config, an unknown key (with the closest existing key),
  a workdir that is a file or cannot be written.
  """
  import ml_collections  # pylint: disable=g-import-not-at-top
  configs = [v for f, v in _flag_values(argv, "config") if f == "config"]
  if configs:
    spec = configs[-1]
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
      return f"--config={spec}: no config file {path!r} (from {os.getcwd()})."
    try:
      module_spec = importlib.util.spec_from_file_location("_checked_config", path)
      module = importlib.util.module_from_spec(module_spec)
      module_spec.loader.exec_module(module)
      config = module.get_config(arg) if arg else module.get_config()
    except Exception as e:  # pylint: disable=broad-except
      first = (str(e).strip().splitlines() or [""])[0]
      return f"--config={spec}: {type(e).__name__}: {first}"
    keys = _config_keys(config)
    for flag, _ in _flag_values(argv, "config"):
      if flag == "config":
        continue
      node, parts = config, flag.split(".")[1:]
      for depth, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict):
          break  # Indexing into a leaf (a tuple): left to ml_collections.
        if part not in node:
          key = ".".join(parts[:depth + 1])
          close = difflib.get_close_matches(".".join(parts), keys, n=1, cutoff=0.5) or \
              difflib.get_close_matches(key, keys, n=1, cutoff=0.0)
          hint = f"; closest existing key: config.{close[0]}" if close else ""
          return f"--{flag}: the config has no key {key!r}{hint}."
        node = node[part]
  from trainer import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  for _, value in _flag_values(argv, "workdir"):
    try:
      workdir_lib.check_path(value)
    except ValueError as e:
      return str(e)
  return None


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every error as one line on stderr (exit 1, no traceback)."""
  try:
    error = check_command_line(argv[1:])
  except Exception as e:  # pylint: disable=broad-except  # Let absl report it below.
    error = None
    del e
  if error is None:
    try:
      return FLAGS(argv)
    except flags.Error as e:
      error = str(e)
    except Exception as e:  # pylint: disable=broad-except  # ml_collections parse errors.
      text = str(e).strip().splitlines()
      error = f"{type(e).__name__}: {text[-1] if text else ''}"
  print(f"train.py: {error}", file=sys.stderr)
  sys.exit(1)


class _QuietOrbax(pylogging.Filter):
  """Drops orbax's INFO records (a dozen lines per checkpoint); keeps its warnings/errors."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    return record.levelno >= pylogging.WARNING or "/orbax/" not in record.pathname


def main(argv) -> int:
  try:
    return _main(argv)
  except KeyboardInterrupt:  # SIGINT's default handler was restored by someone.
    _interrupted(signal.SIGINT, None)
    return EXIT_CODES["SIGINT"]


def _main(argv) -> int:
  del argv
  logging.get_absl_handler().addFilter(_QuietOrbax())
  # A TPU / GPU run without its JAX package would silently train on CPU: stop at start-up.
  error = (check_accelerator(FLAGS.multihost) or _initialize_distributed()
           or check_devices(FLAGS.multihost))
  if error:
    logging.error("%s", error)
    print(f"train.py: {error}", file=sys.stderr)
    return 1
  import jax  # pylint: disable=g-import-not-at-top
  import tasks  # pylint: disable=g-import-not-at-top
  import trainer  # pylint: disable=g-import-not-at-top
  from trainer import loop  # pylint: disable=g-import-not-at-top
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)  # One process reports; all of them work.
  config = FLAGS.config
  try:
    # train.py picks the task; the trainer imports none.
    result = trainer.train_and_evaluate(
        config, FLAGS.workdir, task=tasks.get_task(config),
        allow_config_change=FLAGS.allow_config_change, command=" ".join(sys.argv))
  except (loop.ConfigChangedError, loop.StructureMismatchError, loop.WorkdirInUseError) as e:
    logging.error("%s", e)
    print(f"train.py: {e}", file=sys.stderr)
    return 1
  except ValueError as e:
    logging.error("Invalid configuration: %s", e)
    print(f"train.py: invalid configuration: {e}", file=sys.stderr)
    return 1
  except (trainer.NonFiniteLossError, FileNotFoundError) as e:  # e.g. an unprepared dataset
    logging.error("%s", e)
    print(f"train.py: {e}", file=sys.stderr)
    return 1
  if result.status == "preempted":
    if jax.process_index() == 0:
      print(f"train.py: stopped by {result.signal} after step {result.step}; checkpoint saved. "
            "Run the same command to resume.", file=sys.stderr)
    return EXIT_CODES.get(result.signal, EXIT_PREEMPTED)
  summary = ", ".join(f"{k}={v:.4f}" for k, v in result.eval_metrics.items())
  logging.info("Finished at step %d. %s", result.step, summary)
  if jax.process_index() == 0:
    print(f"train.py: finished at step {result.step}. {summary}")
  return 0


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
