r"""Evaluates trained runs: top-1 at several test resolutions (ViT) or the VLM conditions.

  python eval.py --workdirs=/tmp/runs/spherical_smoke
  python eval.py --workdirs=/tmp/runs/axial,/tmp/runs/spherical --resolutions=16,24,32,48,64 \
      --output=/tmp/runs/extrapolation

For each workdir: read its config.json, restore its best checkpoint (--checkpoint=best; or
"latest", or a step number), and evaluate the test split resized + center-cropped to every
resolution (the papers' protocol: the model is NOT fine-tuned; rotary positions extrapolate,
APEs are interpolated). Writes OUTPUT.json (every number) and OUTPUT.png (accuracy against
resolution, one line per run, a dotted line at each training resolution) and prints a table.
OUTPUT defaults to WORKDIR/resolution for a single workdir; give --output for several.

Workdirs of the vision-language task (config.task == "vlm") are handed to tasks/vlm_eval.py:
exact match per question type under four conditions, PTD, a JSON report and PNG plots.
"""
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging

flags.DEFINE_list("workdirs", None, "Training workdirs to evaluate (comma-separated).")
flags.DEFINE_list("resolutions", None, "Test image sizes in pixels (default: 0.5x..2x the "
                  "training size in steps of 0.25x, rounded to multiples of the patch).")
flags.DEFINE_list("labels", None, "Legend labels, one per workdir (default: directory names).")
flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step number.")
flags.DEFINE_string("output", None, "Output path without extension (writes .json and .png).")
flags.DEFINE_integer("batch_size", None, "Global eval batch size (default: the run's).")
flags.DEFINE_integer("num_examples", None, "VLM runs only: questions per condition (default: "
                     "the run's data.num_eval_examples).")
flags.mark_flags_as_required(["workdirs"])
FLAGS = flags.FLAGS

DEFAULT_FACTORS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)


def default_resolutions(train_size: int, patch: int) -> list[int]:
  """Sizes f * train_size for f in DEFAULT_FACTORS, rounded to positive multiples of patch."""
  sizes = {max(patch, int(round(f * train_size / patch)) * patch) for f in DEFAULT_FACTORS}
  return sorted(sizes)


def _patch_size(config) -> int:
  from models import vit  # pylint: disable=g-import-not-at-top
  return vit.parse_variant(config.model.variant)[1]


def evaluate_run(workdir: str, resolutions: list[int] | None, checkpoint: str,
                 batch_size: int | None) -> dict:
  """Restores one run and evaluates it at every resolution; returns a JSON-able dict."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from tasks import classification  # pylint: disable=g-import-not-at-top
  from trainer import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  from trainer import loop  # pylint: disable=g-import-not-at-top

  config = loop.read_config(workdir)
  if config.task != "classification":
    raise ValueError(f"{workdir}: task {config.task!r}; eval.py evaluates classification runs.")
  train_size = int(config.data.image_size)
  sizes = resolutions or default_resolutions(train_size, _patch_size(config))
  config = ml_collections.ConfigDict(config.to_dict())
  config.eval.image_sizes = tuple(sizes)
  if batch_size:
    config.eval.batch_size = batch_size
  config.lock()
  setup = loop.build(config)  # Validates every size against the model (patch multiple, ...).
  checkpoints = loop.open_checkpoints(config, workdir, read_only=True)
  step = checkpoint_lib.select_step(checkpoints, checkpoint, workdir)
  state = checkpoints.restore(step, loop.abstract_state(setup, config.seed))
  checkpoints.close()
  metrics = loop.evaluate(setup.task, state["params"], loop.make_eval_step(setup.task, setup.mesh),
                          setup.mesh)
  names = {s: classification.eval_set_name(s, train_size) for s in sizes}
  return {
      "workdir": os.path.abspath(workdir), "step": int(step), "posenc": config.model.posenc,
      "seed": int(config.seed), "dataset": config.data.name, "train_image_size": train_size,
      "resolutions": list(sizes),
      "accuracy": {str(s): metrics[f"{names[s]}/accuracy"] for s in sizes},
      "loss": {str(s): metrics[f"{names[s]}/loss"] for s in sizes},
  }


def table(runs: list[dict]) -> str:
  """A fixed-width text table: one row per run, one column per resolution (top-1 %)."""
  sizes = sorted({int(s) for r in runs for s in r["accuracy"]})
  width = max(len(r["label"]) for r in runs)
  lines = [f"{'run':<{width}} " + " ".join(f"{s:>7d}" for s in sizes)]
  for r in runs:
    cells = [f"{100 * r['accuracy'][str(s)]:7.2f}" if str(s) in r["accuracy"] else " " * 7
             for s in sizes]
    lines.append(f"{r['label']:<{width}} " + " ".join(cells))
  return "\n".join(lines)


def plot(runs: list[dict], path: str) -> None:
  """Accuracy (%) against test resolution, one line per run."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(8.0, 4.2))
  colors = plt.get_cmap("tab20").colors  # 20 distinct colours: one per encoding of a sweep.
  for i, r in enumerate(runs):
    sizes = sorted(int(s) for s in r["accuracy"])
    line, = ax.plot(sizes, [100 * r["accuracy"][str(s)] for s in sizes], marker="o",
                    label=r["label"], color=colors[i % len(colors)],
                    linestyle="-" if i < len(colors) else "--")
    ax.axvline(r["train_image_size"], color=line.get_color(), linestyle=":", alpha=0.6)
  ax.set_xlabel("test resolution (pixels); dotted: training resolution")
  ax.set_ylabel("top-1 accuracy (%)")
  ax.set_title("Resolution extrapolation")
  ax.grid(alpha=0.3)
  ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))  # off the lines
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _task_of(workdir: str) -> str:
  from trainer import loop  # pylint: disable=g-import-not-at-top
  return loop.read_config(workdir).task


def main(argv) -> int:
  workdirs = FLAGS.workdirs
  # Vision-language runs have their own protocol (four conditions, exact match, PTD): hand the
  # whole command line (same flag names) to it.
  try:
    task = _task_of(workdirs[0])
  except ValueError as e:  # Not a training workdir.
    print(f"eval.py: {e}", file=sys.stderr)
    return 1
  if task == "vlm":
    from tasks import vlm_eval  # pylint: disable=g-import-not-at-top
    return vlm_eval.main(sys.argv)
  del argv
  if FLAGS.labels and len(FLAGS.labels) != len(workdirs):
    raise app.UsageError(f"--labels has {len(FLAGS.labels)} entries for {len(workdirs)} workdirs.")
  if FLAGS.output is None and len(workdirs) > 1:
    raise app.UsageError("--output is required with several workdirs.")
  if FLAGS.checkpoint not in ("best", "latest") and not FLAGS.checkpoint.isdigit():
    raise app.UsageError(f"--checkpoint={FLAGS.checkpoint!r}: use best, latest or a step.")
  try:
    resolutions = [int(s) for s in FLAGS.resolutions] if FLAGS.resolutions else None
  except ValueError:
    raise app.UsageError(f"--resolutions={FLAGS.resolutions}: integers expected.") from None
  output = FLAGS.output or os.path.join(workdirs[0], "resolution")
  runs = []
  for i, workdir in enumerate(workdirs):
    try:
      run = evaluate_run(workdir, resolutions, FLAGS.checkpoint, FLAGS.batch_size)
    except ValueError as e:
      print(f"eval.py: {e}", file=sys.stderr)
      return 1
    run["label"] = FLAGS.labels[i] if FLAGS.labels else os.path.basename(
        os.path.normpath(workdir))
    runs.append(run)
    logging.info("%s (step %d): %s", run["label"], run["step"], run["accuracy"])
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  with open(output + ".json", "w") as f:
    json.dump({"runs": runs}, f, indent=2)
  plot(runs, output + ".png")
  print(table(runs))
  print(f"eval.py: wrote {output}.json and {output}.png")
  return 0


if __name__ == "__main__":
  app.run(main)
