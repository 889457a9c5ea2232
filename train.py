r"""Trains any task of this repository: `python train.py --config=CONFIG[:ARG] --workdir=DIR`.

Examples:
  python train.py --config=configs/vit_spherical.py:smoke --workdir=/tmp/runs/spherical_smoke
  python train.py --config=configs/vit_mixed.py:fmnist --workdir=/tmp/runs/mixed_fmnist \
      --config.seed=1 --config.training.batch_size=128
  # Multi-host (TPU pod: run on every host; the arguments are auto-detected):
  python train.py --config=configs/vit_spherical.py:imagenet --workdir=/mnt/bucket/run --multihost
  # Multi-process on one machine (CPU), process i of n:
  python train.py ... --coordinator_address=127.0.0.1:12345 --num_processes=2 --process_id=i

Re-running the same command resumes from the newest checkpoint in DIR/checkpoints. Exit
codes: 0 finished, 1 bad config or diverged (NaN), 143 stopped by SIGTERM after saving.
"""
import logging as pylogging
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Experiment config file[:arg].",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and config.json.")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() (auto-detected "
                  "cluster, e.g. a TPU pod); implied by --coordinator_address.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-process).")
flags.mark_flags_as_required(["config", "workdir"])

EXIT_PREEMPTED = 143  # 128 + SIGTERM, what a shell reports for a SIGTERM-killed process.


def _initialize_distributed() -> None:
  """Joins the multi-process JAX runtime if asked to (before any other jax call)."""
  if not (FLAGS.multihost or FLAGS.coordinator_address):
    return
  import jax  # pylint: disable=g-import-not-at-top
  # CPU collectives across processes need gloo; the option is ignored on TPU / GPU.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                             num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)


FLAGS = flags.FLAGS


class _QuietOrbax(pylogging.Filter):
  """Drops orbax's INFO records (a dozen lines per checkpoint); keeps its warnings/errors."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    return record.levelno >= pylogging.WARNING or "/orbax/" not in record.pathname


def main(argv) -> int:
  del argv
  logging.get_absl_handler().addFilter(_QuietOrbax())
  _initialize_distributed()
  import jax  # pylint: disable=g-import-not-at-top
  import trainer  # pylint: disable=g-import-not-at-top
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)  # One process reports; all of them work.
  try:
    result = trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except ValueError as e:
    logging.error("Invalid configuration: %s", e)
    print(f"train.py: invalid configuration: {e}", file=sys.stderr)
    return 1
  except trainer.NonFiniteLossError as e:
    logging.error("%s", e)
    print(f"train.py: {e}", file=sys.stderr)
    return 1
  if result.status == "preempted":
    print(f"train.py: stopped by SIGTERM after step {result.step}; checkpoint saved. "
          "Run the same command to resume.", file=sys.stderr)
    return EXIT_PREEMPTED
  summary = ", ".join(f"{k}={v:.4f}" for k, v in result.eval_metrics.items())
  logging.info("Finished at step %d. %s", result.step, summary)
  if jax.process_index() == 0:
    print(f"train.py: finished at step {result.step}. {summary}")
  return 0


if __name__ == "__main__":
  app.run(main)
